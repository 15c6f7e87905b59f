"""Cold-start and distillation data: (prompt, reasoning, answer) rows rendered into the reasoning format.

The rendered completion is exactly what the format reward (`rewards.format.is_well_formatted`) and the
strict accuracy reward accept, so a model trained on it can earn those rewards in GRPO and evaluation:

    <think>\\n{reasoning}\\n</think>\\n<answer>{answer}</answer>       answer_format: answer_tag
    <think>\\n{reasoning}\\n</think>\\n\\boxed{{answer}}               answer_format: boxed

A conversation is `[system?, user: prompt, assistant: completion]`; the chat template opens the assistant
turn (and with `prefill_think` adds `<think>\\n` after it, as at generation time), so the assistant
message carries the whole completion and the `<think>\\n` the template would prefill is not repeated.
"""

from __future__ import annotations

import hashlib
from typing import Any

from r1kit.errors import UserError

ANSWER_FORMATS = ("answer_tag", "boxed")


def render_completion(reasoning: str, answer: str, answer_format: str = "answer_tag") -> str:
    r"""The R1-style target for one worked problem.

    >>> print(render_completion("2 + 2\n= 4", "4"))
    <think>
    2 + 2
    = 4
    </think>
    <answer>4</answer>
    >>> render_completion("2 + 2 = 4", "4", "boxed")
    '<think>\n2 + 2 = 4\n</think>\n\\boxed{4}'
    """
    if answer_format not in ANSWER_FORMATS:
        raise UserError(f"answer_format must be one of {list(ANSWER_FORMATS)}, got {answer_format!r}")
    tail = f"<answer>{answer}</answer>" if answer_format == "answer_tag" else f"\\boxed{{{answer}}}"
    return f"<think>\n{reasoning.strip()}\n</think>\n{tail}"


def completion_after_prefill(completion: str, prefill_think: bool) -> str:
    """What the model itself emits after a prompt that ends with the `<think>\\n` prefill.

    >>> completion_after_prefill("<think>\\nx\\n</think>\\n<answer>1</answer>", True)
    'x\\n</think>\\n<answer>1</answer>'
    """
    return completion.removeprefix("<think>\n") if prefill_think else completion


def conversation(prompt: Any, completion: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """Chat messages for one example (`prompt` is a string or already a list of messages)."""
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    if system_prompt:
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return [*messages, {"role": "assistant", "content": completion}]


def shorten_thoughts(rows: list[dict], reasoning_column: str, fraction: float, seed: int = 0) -> list[dict]:
    r"""Rows where about `fraction` of the thoughts (chosen by a seeded hash of the prompt) keep only
    their first line, so the answer follows the restated problem without the worked steps.

    Collected cold-start traces are of mixed quality; a set where some answers come unworked is one
    GRPO can improve on by finding that working the steps pays (the CPU demo's length curve shows it).

    >>> rows = [{"prompt": f"p{i}", "solution": "2 + 2\n= 4"} for i in range(100)]
    >>> short = shorten_thoughts(rows, "solution", 0.5)
    >>> sum(r["solution"] == "2 + 2" for r in short), rows[0]["solution"]
    (53, '2 + 2\n= 4')
    """
    if not 0.0 <= fraction <= 1.0:
        raise UserError(f"short_thought_fraction must be between 0 and 1, got {fraction}.")

    def chosen(r: dict) -> bool:
        digest = hashlib.sha256(f"{seed}|{r.get('prompt')}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < fraction

    return [{**r, reasoning_column: str(r[reasoning_column]).strip().split("\n")[0]} if chosen(r) else r
            for r in rows]


def check_columns(rows: list[dict], columns: tuple[str, ...], source: str, bad_rows: str = "error") -> list[dict]:
    """The rows that have every named column (non-empty). A column no row has is a UserError naming it;
    rows missing a column are skipped with a count (`bad_rows: skip`) or an error (`bad_rows: error`)."""
    absent = [c for c in columns if all(r.get(c) in (None, "") for r in rows)]
    if absent:
        raise UserError(
            f"{source}: no row has column(s) {absent} (columns there: {sorted(rows[0]) if rows else []}); "
            "name the right columns (prompt_column, reasoning_column, answer_column) or fix the data."
        )
    kept = [r for r in rows if all(r.get(c) not in (None, "") for c in columns)]
    if len(kept) < len(rows):
        first = next(i for i, r in enumerate(rows) if any(r.get(c) in (None, "") for c in columns))
        message = f"{source}: {len(rows) - len(kept)} of {len(rows)} rows miss one of {list(columns)} (first: row {first})"
        if bad_rows == "error":
            raise UserError(message + "; fix them or set bad_rows: skip.")
        print(f"WARNING: {message}; skipped.", flush=True)
    return kept


def chat_examples(rows: list[dict], reasoning_column: str, answer_format: str, system_prompt: str | None,
                  completion_column: str | None = None) -> list[dict[str, list]]:
    """`{"messages": [...]}` rows, the conversational format TRL's SFTTrainer takes. With `completion_column`
    the assistant turn is that column verbatim (finished traces, e.g. verified teacher samples)."""

    def completion(r: dict) -> str:
        if completion_column:
            return str(r[completion_column])
        return render_completion(str(r[reasoning_column]), str(r["answer"]), answer_format)

    return [{"messages": conversation(r["prompt"], completion(r), system_prompt)} for r in rows]


def check_chat_template(tokenizer, what: str) -> None:
    """A model trained or sampled in chat form needs a chat template; say so at start, not mid-run."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"{what} has no chat template (tokenizer.chat_template is empty), so prompts cannot be rendered "
            "as chat turns. Use a chat model or set tokenizer_name_or_path to a tokenizer that has one."
        )
