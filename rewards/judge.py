r"""Judge benchmark completions with the very functions the RL rewards use: the scoring core shared by
`r1kit eval` (`evals/`) and any stage that evaluates held-out prompts (GRPO's `eval_steps`), so a
benchmark score and a training reward can never disagree about the same completion.

Math: a completion is scored by the `strict_accuracy` reward of `rewards.math`: one non-empty thought,
then the answer in the declared format (`\boxed{}` for the DeepSeek-R1 protocol, `<answer>` tags for the
tiny models, `any` for models not trained to a format), in final form when the gold is a number; a
completion without it is wrong, never "the whole text". A bare prediction (score-only files of final
answers) is compared as it is with `verify_batch(..., answer_format="bare")`. The answer each verdict was
about (`claimed_math`; None where a gate rejected it) is recorded as `extracted` and gets a vote key for
maj@k (`vote_key`: numbers by value, the rest by normalized spelling), verified against the gold itself.

Code: verdicts come from the `binary_code` reward (all tests of the item must pass; HumanEval's single
`check` test, MBPP's asserts), run in `rewards.sandbox`. A failing program is run once more with the same
public sandbox call to record why it failed (status and the tail of stderr) for the details file.

Every scorer returns one dict per item: `correct` (one bool per completion), `formatted`, and for math
`extracted`, `vote_keys`, `key_correct`; for code `status` and `stderr`. `evals.metrics.summarize` turns
them into pass@k, maj@k and rates; a training loop can simply average `correct`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from r1kit.errors import UserError
from rewards.code import binary_code_reward, build_program, extract_code, row_tests
from rewards.math import accuracy_reward, gold_answer, prediction_answer, strict_accuracy, verify_batch
from rewards.math.answer import is_well_formatted
from rewards.math.normalize import Num, canonical, clean, collection, parse_number
from rewards.sandbox import run_tests_batch

_CODE_COLUMNS = ("test", "entry_point", "prompt", "test_list", "test_setup_code", "test_imports", "inputs", "outputs")
_STDERR_TAIL = 600


def vote_key(answer: str | None) -> str | None:
    r"""The spelling of a claimed answer that maj@k votes on: numbers by value, unordered lists and sets
    of exact numbers sorted, the rest by their normalized LaTeX (`rewards.math.normalize`), so `0.5`,
    `\frac{1}{2}` and `\dfrac12` are one vote, and `3, 2` and `2, 3` another. A key is itself an answer
    the verifier reads: each key of an item gets one verdict.

    >>> vote_key(r"\dfrac12"), vote_key("0.50"), vote_key("3, -1/2"), vote_key(r"\{3, 2\}"), vote_key(None)
    ('1/2', '1/2', '-1/2,3', '\\{2,3\\}', None)
    >>> vote_key(r"\left( 3, \frac{\pi}{2} \right)"), vote_key("(3, 2)")
    ('(3,\\frac{\\pi}{2})', '(3,2)')
    """
    if answer is None:
        return None
    cleaned = clean(answer)
    number = parse_number(cleaned)
    if number is not None and not number.percent:
        return str(number.value)
    listed = collection(cleaned)
    if listed is not None and not listed.ordered and all(_exact(item) for item in listed.items):
        body = ",".join(str(v) for v in sorted(item.value for item in listed.items))
        return f"\\{{{body}\\}}" if listed.brackets == "{}" else body
    return canonical(cleaned)


def _exact(item: Num | str) -> bool:
    return isinstance(item, Num) and item.ulp is None and not item.percent


def claimed_math(text: str, gold: str, *, bare: bool, answer_format: str, think_prefilled: bool,
                 final_form: bool, final_answer_pattern: str = "") -> str | None:  # fmt: skip
    """The answer `verify_batch` compares with ``gold`` for this completion (a bare prediction with
    ``bare``), after the same gates (declared format, look-alike digits, solution sets, chained
    equalities, final form); None when those gates reject it, so the completion scores 0 on its own.

    >>> opts = dict(bare=False, answer_format="answer_tag", think_prefilled=False, final_form=True)
    >>> claimed_math("<think>so</think> <answer>x = 2 or x = 3</answer>", "2, 3", **opts), claimed_math(
    ...     "<think>so</think> <answer>66 - 20</answer>", "46", **opts), claimed_math("<answer>６</answer>", "6", **opts)
    ('2, 3', None, None)
    """
    fmt = "bare" if bare else answer_format
    # verify_batch's own answer selection and gates, not a second reading: a vote is about what was scored.
    return prediction_answer(text, gold_answer(gold), fmt, think_prefilled, final_form, final_answer_pattern)


def _math_verdicts(texts: list[str], golds: list[str], *, bare: bool, answer_format: str, think_prefilled: bool,
                   final_form: bool, final_answer_pattern: str, strict: bool) -> list[bool]:  # fmt: skip
    if bare:
        return [v is True for v in verify_batch(list(zip(texts, golds)), answer_format="bare", final_form=final_form)]
    reward = strict_accuracy if strict else accuracy_reward
    scores = reward(texts, golds, answer_format=answer_format, think_prefilled=think_prefilled, final_form=final_form,
                    final_answer_pattern=final_answer_pattern)
    return [s == 1.0 for s in scores]


def _key_verdicts(keys_by_item: list[list[str | None]], golds: list[str]) -> list[dict[str, bool]]:
    """Each distinct vote key of an item verified against the item's gold."""
    distinct = [list(dict.fromkeys(k for k in keys if k is not None)) for keys in keys_by_item]
    verdicts = iter(verify_batch([(key, gold) for keys, gold in zip(distinct, golds) for key in keys]))
    return [{key: next(verdicts) is True for key in keys} for keys in distinct]


def _item_vote_keys(claims: list[list[str | None]], correct: list[list[bool]], golds: list[str]) -> tuple[list, list]:
    """(vote keys, key -> verdict) per item. A claim whose value key verifies otherwise than the claim
    itself votes under its own spelling: `0.33` is right for 1/3 (rounded), `33/100` is not, so a
    decimal and the fraction of its digits are two votes there, and one vote where the gold is 1/2."""
    keys = [[vote_key(a) for a in item] for item in claims]
    verdicts = _key_verdicts(keys, golds)
    keys = [[canonical(clean(a)) if k is not None and ok != kc[k] else k for a, k, ok in zip(cl, ks, co)]
            for cl, ks, co, kc in zip(claims, keys, correct, verdicts)]  # fmt: skip
    return keys, _key_verdicts(keys, golds)


def score_math(rows: Sequence[dict], completions: Sequence[list[str]], *, bare: bool = False,
               answer_format: str = "boxed", think_prefilled: bool = False, final_form: bool = True,
               final_answer_pattern: str = "", strict: bool = True) -> list[dict]:  # fmt: skip
    """Per-item results for math rows (each with `answer`) and their completions (n per row).

    `strict`: score with `strict_accuracy` (the whole completion well formatted), else with `accuracy`
    (the answer read from its format, whatever surrounds it). maj@k votes on the answer the scorer
    compared (`claimed_math`); a completion that scores 0 on format or final-form grounds (badly
    formatted under `strict`, no answer, look-alike digits, `2+3` for 5) votes None, the invalid
    bucket, which can win a vote but is never correct.
    """
    flat = [(i, text) for i, texts in enumerate(completions) for text in texts]
    golds = [str(row["answer"]) for row in rows]
    opts = {"bare": bare, "answer_format": answer_format, "think_prefilled": think_prefilled, "final_form": final_form,
            "final_answer_pattern": final_answer_pattern}
    verdicts = _math_verdicts([t for _, t in flat], [golds[i] for i, _ in flat], strict=strict, **opts)
    starts = list(itertools.accumulate((len(t) for t in completions), initial=0))
    correct = [verdicts[a:b] for a, b in itertools.pairwise(starts)]
    claimed = [[claimed_math(t, gold, **opts) for t in texts] for texts, gold in zip(completions, golds, strict=True)]
    formatted = [None if bare else [is_well_formatted(t, answer_format, think_prefilled, final_answer_pattern) for t in texts]
                 for texts in completions]
    voting = [[a if (bare or not strict or ok) else None for a, ok in zip(cl, fm or cl)] for cl, fm in zip(claimed, formatted)]
    keys, key_correct = _item_vote_keys(voting, correct, golds)
    return [{"id": row.get("id"), "gold": gold, "completions": list(texts), "extracted": cl, "correct": co,
             "vote_keys": ks, "key_correct": kc, "formatted": fm}
            for row, gold, texts, cl, co, ks, kc, fm in zip(rows, golds, completions, claimed, correct, keys, key_correct, formatted)]  # fmt: skip


def as_program_completion(text: str) -> str:
    """A score-only code prediction as the `code` reward reads completions: a text with a fenced block
    stays as it is; bare code (human-eval's convention: the body continuing the prompt) is fenced.

    >>> as_program_completion("    return 1\\n")
    '```python\\n    return 1\\n```'
    """
    if extract_code(text) is not None:
        return text
    body = text if text.endswith("\n") else text + "\n"
    return f"```python\n{body}```"


def _code_columns(rows: Sequence[dict]) -> dict[str, list]:
    present = [c for c in _CODE_COLUMNS if any(c in r for r in rows)]
    return {c: [r.get(c) for r in rows] for c in present}


def _failure_details(rows: list[dict], texts: list[str], timeout: float) -> list[dict]:
    """Why each failing completion failed: no code, no tests, or the first failing test's sandbox status."""
    details: list[dict | None] = [None] * len(texts)
    jobs = []
    for j, (row, text) in enumerate(zip(rows, texts)):
        code, spec = extract_code(text), row_tests(row)
        if spec is None:
            details[j] = {"status": "no_tests"}
        elif code is None:
            details[j] = {"status": "no_code"}
        else:
            style, tests, prefix = spec
            jobs.append((j, style, build_program(code, prefix, row.get("entry_point")), tests))
    for style in ("assert", "stdio"):
        batch = [job for job in jobs if job[1] == style]
        if not batch:
            continue
        results = run_tests_batch([p for _, _, p, _ in batch], [t for *_, t in batch], style,
                                  timeout=timeout, stop_on_first_failure=True)  # fmt: skip
        for (j, *_), res in zip(batch, results):
            first = next((r for r in res if not r.passed), res[-1] if res else None)
            details[j] = {"status": first.status if first else "error", "stderr": (first.stderr if first else "")[-_STDERR_TAIL:]}
    return details  # type: ignore[return-value]


def score_code(rows: Sequence[dict], completions: Sequence[list[str]], *, bare: bool = False,
               timeout: float = 5.0) -> list[dict]:  # fmt: skip
    """Per-item results for code rows (with their test columns) and their completions (n per row)."""
    flat_rows = [row for row, texts in zip(rows, completions, strict=True) for _ in texts]
    flat_texts = [as_program_completion(t) if bare else t for texts in completions for t in texts]
    scores = binary_code_reward(flat_texts, timeout=timeout, **_code_columns(flat_rows))
    failed = [j for j, s in enumerate(scores) if s != 1.0]
    why = dict(zip(failed, _failure_details([flat_rows[j] for j in failed], [flat_texts[j] for j in failed], timeout)))
    items, cursor = [], 0
    for row, texts in zip(rows, completions):
        span = range(cursor, cursor + len(texts))
        cursor += len(texts)
        items.append({
            "id": row.get("id"), "completions": list(texts), "correct": [scores[j] == 1.0 for j in span],
            "status": [why[j]["status"] if j in why else "passed" for j in span],
            "stderr": [why[j].get("stderr", "") if j in why else "" for j in span],
            "formatted": None if bare else [extract_code(t) is not None for t in texts],
        })  # fmt: skip
    return items


def score(kind: str, rows: Sequence[dict], completions: Sequence[list[str]], **options: Any) -> list[dict]:
    """`score_math` or `score_code` by task kind."""
    return (score_math if kind == "math" else score_code)(rows, completions, **options)


def task_kind(row: dict) -> str:
    """"code" for a row that carries tests the sandbox can run (`rewards.code.row_tests`), "math" for one with
    an `answer`: how a training stage that has no benchmark task picks the scorer for its held-out rows.

    >>> task_kind({"prompt": "1+1?", "answer": "2"}), task_kind({"prompt": "f", "test_list": ["assert f() == 1"]})
    ('math', 'code')
    """
    if row_tests(row) is not None:
        return "code"
    if row.get("answer") is not None:
        return "math"
    raise UserError(f"held-out row {sorted(row)} has neither an `answer` (math) nor tests (`test` + `entry_point`, "
                    "`test_list`, or `inputs`/`outputs`: code), so it cannot be scored; set answer_column.")
