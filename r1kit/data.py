"""Datasets: benchmarks by name, local JSONL files/dirs, hub ids and synthetic tasks.

Every loader returns a list of plain dict rows with at least `prompt` and `answer` (or the
task's test columns for code), so stages never care where the data came from:

    rows = load_rows(cfg)                   # cfg has DataConfig fields
    rows = load_benchmark("gsm8k", "test")  # the registry, offline or online

The benchmark registry maps a short name to its hub id and fields (online) and to a file under a
local directory (offline). Offline wins when `R1KIT_DATA_DIR` is set: tests and CI point it at
`../shared/data`, and air-gapped clusters at their own mirror with the same layout.

Bad rows (invalid JSON, a missing or empty required field) are reported with file:line and
either skipped with a summary (`bad_rows: skip`) or rejected with an error (`bad_rows: error`).
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from r1kit.errors import UserError

DATA_DIR_ENV = "R1KIT_DATA_DIR"
DEFAULT_SYNTHETIC_ROWS = 1000


def _gsm8k_answer(row: dict) -> str:
    # GSM8K's answer column is the whole worked solution ending in "#### 72".
    text = str(row["answer"])
    return text.rsplit("####", 1)[1].strip().replace(",", "") if "####" in text else ""


def _mbpp_test_split(row: dict) -> bool:
    # The official MBPP split: task ids 11-510 are the test set (1-10 few-shot, 511-600 validation).
    return 11 <= int(row["task_id"]) <= 510


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark lives and how its fields map onto r1kit's columns."""

    name: str
    kind: str  # "math" | "code": which reward/evaluator applies
    local: dict[str, str]  # split -> path under R1KIT_DATA_DIR
    hub_id: str | None
    hub_config: str | None = None
    hub_split: dict[str, str] = field(default_factory=dict)  # r1kit split -> hub split
    prompt_field: str = "problem"
    answer_field: str | None = "answer"
    answer_fn: Callable[[dict], str] | None = None
    local_filter: dict[str, Callable[[dict], bool]] = field(default_factory=dict)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            "gsm8k", "math", {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
            "openai/gsm8k", "main", {"train": "train", "test": "test"},
            prompt_field="question", answer_fn=_gsm8k_answer,
        ),
        Benchmark("math500", "math", {"test": "math500/test.jsonl"}, "HuggingFaceH4/MATH-500", None, {"test": "test"}),
        Benchmark(
            "math_train", "math", {"train": "math_train/train_answers_only.jsonl"},
            "agentica-org/DeepScaleR-Preview-Dataset", None, {"train": "train"},
        ),
        Benchmark("aime24", "math", {"test": "aime2024/test.jsonl"}, "HuggingFaceH4/aime_2024", None, {"test": "train"}),
        Benchmark("aime25", "math", {"test": "aime2025/test.jsonl"}, "math-ai/aime25", None, {"test": "test"}),
        Benchmark(
            "humaneval", "code", {"test": "humaneval/test.jsonl"}, "openai/openai_humaneval", None,
            {"test": "test"}, prompt_field="prompt", answer_field=None,
        ),
        Benchmark(
            "mbpp", "code", {"test": "mbpp/mbpp_sanitized.jsonl"}, "google-research-datasets/mbpp", "sanitized",
            {"test": "test"}, prompt_field="prompt", answer_field=None,
            local_filter={"test": _mbpp_test_split},
        ),
    ]
}
ALIASES = {"aime2024": "aime24", "aime2025": "aime25", "math-500": "math500", "math_500": "math500"}


# ------------------------------------------------------------------------------------ reading


def read_jsonl(path: str | os.PathLike, required: tuple[str, ...] = (), bad_rows: str = "skip") -> list[dict]:
    """Rows of a JSONL file. A line that is not a JSON object, or lacks a non-empty required
    field, is reported as `file:line: what` and skipped (or raises UserError with bad_rows='error')."""
    rows, problems = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{path}:{lineno}: not valid JSON ({e.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                continue
            missing = _missing_fields(row, required)
            if missing:
                problems.append(f"{path}:{lineno}: {missing}")
                continue
            rows.append(row)
    _report_bad_rows(problems, len(rows), bad_rows, str(path))
    return rows


def _missing_fields(row: dict, required: tuple[str, ...]) -> str | None:
    for key in required:
        if key not in row:
            return f"missing field '{key}' (fields present: {', '.join(row) or 'none'})"
        value = row[key]
        if value is None or (isinstance(value, (str, list, dict)) and len(value) == 0):
            return f"empty field '{key}'"
    return None


def _report_bad_rows(problems: list[str], kept: int, bad_rows: str, source: str) -> None:
    if not problems:
        return
    if bad_rows == "error":
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise UserError(
            f"{len(problems)} bad row(s) in {source}:\n  " + "\n  ".join(problems[:5]) + more
            + "\nFix the rows, or set `bad_rows: skip` to skip them."
        )
    shown = "\n  ".join(problems[:5])
    more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
    print(f"warning: skipped {len(problems)} bad row(s) of {source} (kept {kept}):\n  {shown}{more}", file=sys.stderr)


def data_dir() -> Path | None:
    """The offline benchmark directory ($R1KIT_DATA_DIR), or None when online loading is wanted."""
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UserError(f"{DATA_DIR_ENV}={value} is not a directory. Point it at a folder laid out like shared/data.")
    return path


# ------------------------------------------------------------------------------------ benchmarks


def load_benchmark(name: str, split: str = "test", bad_rows: str = "skip") -> list[dict]:
    """A registered benchmark's rows with `prompt` and (for math) `answer` columns; other fields kept."""
    bench = get_benchmark(name)
    if split not in bench.local and split not in bench.hub_split:
        splits = sorted(set(bench.local) | set(bench.hub_split))
        raise UserError(f"benchmark '{bench.name}' has no split '{split}'; available: {', '.join(splits)}.")
    root = data_dir()
    if root is not None:
        if split not in bench.local:
            raise UserError(f"benchmark '{bench.name}' split '{split}' has no local file; available offline: {', '.join(bench.local)}.")
        path = root / bench.local[split]
        if not path.is_file():
            raise UserError(f"{path} not found: {DATA_DIR_ENV}={root} lacks benchmark '{bench.name}'.")
        # Required fields are checked while reading, so a bad row is reported as file:line.
        required = (bench.prompt_field,) + ((bench.answer_field,) if bench.answer_field else ())
        raw = read_jsonl(path, required=required, bad_rows=bad_rows)
        keep = bench.local_filter.get(split)
        raw = [r for r in raw if keep is None or keep(r)]
        source = str(path)
    else:
        raw = _load_hub(bench.hub_id, bench.hub_config, bench.hub_split.get(split, split), bench.name)
        source = f"hub:{bench.hub_id}"
    return _normalise(raw, bench, source, bad_rows)


def get_benchmark(name: str) -> Benchmark:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BENCHMARKS:
        raise UserError(f"unknown benchmark '{name}'; available: {', '.join(BENCHMARKS)}.")
    return BENCHMARKS[key]


def _normalise(raw: list[dict], bench: Benchmark, source: str, bad_rows: str) -> list[dict]:
    rows, problems = [], []
    for i, r in enumerate(raw):
        row = dict(r)
        row["prompt"] = row[bench.prompt_field]
        if bench.answer_fn is not None:
            row["answer"] = bench.answer_fn(r)
        elif bench.answer_field is not None:
            row["answer"] = "" if r.get(bench.answer_field) is None else str(r[bench.answer_field])
        if bench.kind == "math" and not row["answer"].strip():
            problems.append(f"{source} row {i + 1}: empty answer")
            continue
        rows.append(row)
    _report_bad_rows(problems, len(rows), bad_rows, source)
    return rows


def _load_hub(hub_id: str | None, config: str | None, split: str, what: str) -> list[dict]:
    if hub_id is None:
        raise UserError(f"'{what}' has no hub source; set {DATA_DIR_ENV} to a local data directory.")
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # network, auth, missing dataset: all user-fixable, none worth a traceback
        raise UserError(
            f"could not load '{hub_id}' (split '{split}') from the hub: {type(e).__name__}: {str(e)[:300]}\n"
            f"Offline? Set {DATA_DIR_ENV} to a directory with the benchmark files (see docs/data.md)."
        ) from None
    return [dict(r) for r in ds]


# ------------------------------------------------------------------------------------ generic


def load_rows(cfg: Any, required: tuple[str, ...] | None = None) -> list[dict]:
    """Rows for a stage from its DataConfig fields.

    `dataset_name` is one of: `synthetic:<task>[:<difficulty>]`, a registered benchmark name,
    a local JSONL file / directory of JSONL files, or a hub dataset id. The configured
    `prompt_column`/`answer_column` are copied to `prompt`/`answer`; `max_samples` rows are kept
    after a seeded shuffle.
    """
    name = cfg.dataset_name
    prompt_col, answer_col = cfg.prompt_column, cfg.answer_column
    required = required if required is not None else (prompt_col, answer_col)
    seed = getattr(cfg, "seed", 0)
    if name.startswith("synthetic:"):
        rows = _synthetic(name, cfg.dataset_split, cfg.max_samples, seed)
    elif name.lower() in BENCHMARKS or name.lower() in ALIASES:
        rows = load_benchmark(name, cfg.dataset_split, cfg.bad_rows)
    elif Path(name).expanduser().exists():
        rows = _load_local(Path(name).expanduser(), cfg.dataset_split, required, cfg.bad_rows)
    elif name.startswith((".", "/", "~")) or name.endswith((".jsonl", ".json")) or name.count("/") > 1:
        raise UserError(f"dataset '{name}' does not exist. Give a JSONL file/dir, a benchmark name or a hub id.")
    else:
        rows = _load_hub(name, cfg.dataset_config, cfg.dataset_split, name)
        problems = [f"hub:{name} row {i + 1}: {m}" for i, r in enumerate(rows) if (m := _missing_fields(r, required))]
        _report_bad_rows(problems, len(rows) - len(problems), cfg.bad_rows, f"hub:{name}")
        rows = [r for r in rows if not _missing_fields(r, required)]
    rows = [_with_columns(r, prompt_col, answer_col) for r in rows]
    if not rows:
        raise UserError(f"dataset '{name}' (split '{cfg.dataset_split}') has no usable rows.")
    if cfg.max_samples is not None and len(rows) > cfg.max_samples:
        rows = random.Random(seed).sample(rows, cfg.max_samples)
    return rows


def _with_columns(row: dict, prompt_col: str, answer_col: str) -> dict:
    row = dict(row)
    if prompt_col in row:
        row["prompt"] = row[prompt_col]
    if answer_col in row and row[answer_col] is not None:
        row["answer"] = str(row[answer_col])
    return row


def _load_local(path: Path, split: str, required: tuple[str, ...], bad_rows: str) -> list[dict]:
    if path.is_dir():
        candidates = [path / f"{split}.jsonl", *sorted(path.glob(f"{split}*.jsonl"))]
        files = [p for p in candidates if p.is_file()][:1]
        named = sorted(p.name for p in path.glob("*.jsonl") if p.name.startswith(("train", "test")))
        if not files and named:  # split files exist, just not this one: never evaluate on another split's rows
            raise UserError(f"directory '{path}' has {', '.join(named)} but no {split}*.jsonl for split '{split}'; "
                            f"add {split}.jsonl or pick another split.")
        files = files or sorted(path.glob("*.jsonl"))  # a directory of unsplit shards: all of them
        if not files:
            raise UserError(f"directory '{path}' holds no .jsonl files (looked for {split}.jsonl first).")
        return [row for f in files for row in read_jsonl(f, required, bad_rows)]
    if path.suffix == ".jsonl":
        return read_jsonl(path, required, bad_rows)
    if path.suffix in (".parquet", ".csv", ".json"):
        import datasets

        kind = {".parquet": "parquet", ".csv": "csv", ".json": "json"}[path.suffix]
        rows = [dict(r) for r in datasets.load_dataset(kind, data_files=str(path), split="train")]
        problems = [f"{path} row {i + 1}: {m}" for i, r in enumerate(rows) if (m := _missing_fields(r, required))]
        _report_bad_rows(problems, len(rows) - len(problems), bad_rows, str(path))
        return [r for r in rows if not _missing_fields(r, required)]
    raise UserError(f"'{path}': unsupported file type '{path.suffix}'; use .jsonl, .json, .parquet or .csv.")


_SYNTH = re.compile(r"^synthetic:(?P<task>[a-z_]+)(?::(?P<difficulty>\d+))?$")


def _synthetic(name: str, split: str, max_samples: int | None, seed: int) -> list[dict]:
    from r1kit import synth

    m = _SYNTH.match(name)
    if not m or m["task"] not in synth.TASKS:
        raise UserError(f"dataset '{name}': use synthetic:<task>[:<difficulty>] with task in {', '.join(synth.TASKS)}.")
    if split not in ("train", "test"):
        raise UserError(f"synthetic datasets have splits 'train' and 'test', not '{split}'.")
    n = max_samples or DEFAULT_SYNTHETIC_ROWS
    return synth.generate(m["task"], n=n, seed=seed, difficulty=int(m["difficulty"] or 1), split=split)
