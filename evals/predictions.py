"""Score-only input: a JSONL file of generations made elsewhere, checked line by line against a benchmark.

One line per item::

    {"id": "HumanEval/0", "prediction": "    return ..."}            # one sample
    {"id": "test/algebra/1.json", "completions": ["...", "..."]}      # n samples
    {"id": "gsm8k-test-00000", "completions": ["..."], "truncated": [false]}   # optional flags

`id` is the benchmark's own id (see `evals.tasks`). Every benchmark item needs exactly one line and
every line must name a benchmark item: a wrong id, a repeated id, a missing or empty field, or a
missing item is a `UserError` naming the first bad line. Nothing is silently skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from r1kit.errors import UserError

_TEXT_FIELDS = ("prediction", "completions")


def _bad(path: Path, lineno: int, what: str) -> UserError:
    return UserError(f"{path}:{lineno}: {what}")


def _completions(row: dict, path: Path, lineno: int) -> list[str]:
    present = [f for f in _TEXT_FIELDS if f in row]
    if len(present) != 1:
        raise _bad(path, lineno, "needs exactly one of 'prediction' (a string) or 'completions' (a list of strings), "
                                 f"found {present or 'neither'} (fields present: {', '.join(row) or 'none'}).")
    value = row[present[0]]
    values = [value] if present[0] == "prediction" else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise _bad(path, lineno, f"'{present[0]}' must be {'a string' if present[0] == 'prediction' else 'a non-empty list of strings'}, "
                                 f"got {json.dumps(value)[:80]}.")
    return values


def _flags(row: dict, n: int, path: Path, lineno: int) -> list[bool] | None:
    flags = row.get("truncated")
    if flags is None:
        return None
    flags = [flags] if isinstance(flags, bool) else flags
    if not isinstance(flags, list) or len(flags) != n or not all(isinstance(f, bool) for f in flags):
        raise _bad(path, lineno, f"'truncated' must be a boolean or a list of {n} booleans, got {json.dumps(row['truncated'])[:80]}.")
    return flags


def read_predictions(path: str | Path, ids: list[str], benchmark: str) -> dict[str, dict]:
    """id -> {"completions": [...], "truncated": [...] | None} for every id of the benchmark.

    All items must have the same number of samples (pass@k and maj@k assume it).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--predictions {path}: {'a directory, not a file' if path.is_dir() else 'no such file'}.")
    known, out, first_n = set(ids), {}, None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _bad(path, lineno, "not UTF-8 text (a JSONL file has one JSON object per line).") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise _bad(path, lineno, f"not valid JSON ({e.msg}).") from None
            if not isinstance(row, dict):
                raise _bad(path, lineno, f"expected a JSON object, got {type(row).__name__}.")
            if "id" not in row:
                raise _bad(path, lineno, f"missing field 'id' (fields present: {', '.join(row) or 'none'}).")
            key = str(row["id"])
            if key not in known:
                sample = ", ".join(repr(i) for i in ids[:3])
                raise _bad(path, lineno, f"id {key!r} is not an item of benchmark '{benchmark}' (its ids look like {sample}).")
            if key in out:
                raise _bad(path, lineno, f"id {key!r} appears twice.")
            completions = _completions(row, path, lineno)
            if first_n is not None and len(completions) != first_n:
                raise _bad(path, lineno, f"{len(completions)} completions where earlier lines have {first_n}; "
                                         "every item needs the same number of samples.")
            first_n = len(completions)
            out[key] = {"completions": completions, "truncated": _flags(row, len(completions), path, lineno)}
    missing = [i for i in ids if i not in out]
    if missing:
        raise UserError(f"{path}: no line for {len(missing)} of {len(ids)} items of '{benchmark}' (first: {missing[0]!r}). "
                        "Give every item, or evaluate a subset with --max_samples N (the first N items).")
    return out
