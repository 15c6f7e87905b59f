"""N-gram repetition penalty (Yeo et al. 2025, "Demystifying Long Chain-of-Thought Reasoning in
LLMs"; open-r1's ``repetition_penalty_reward``): long-CoT RL drifts into loops, and a loop repeats
n-grams. Penalty = ``max_penalty`` x share of n-grams that are repeats. Units are lowercase
whitespace-separated words, so the reward does not depend on the tokenizer.
"""

from __future__ import annotations

from typing import Any

from r1kit.errors import UserError
from rewards.common import completion_text
from rewards.registry import register


def repeated_ngram_share(text: str, ngram_size: int) -> float:
    """1 - (distinct n-grams / all n-grams) over lowercase words; 0.0 for texts shorter than an n-gram.

    >>> repeated_ngram_share("a b c d", 2), repeated_ngram_share("a b a b a b", 2)
    (0.0, 0.6)
    """
    words = text.lower().split()
    total = len(words) - ngram_size + 1
    if total <= 0:
        return 0.0
    distinct = {tuple(words[i : i + ngram_size]) for i in range(total)}
    return 1.0 - len(distinct) / total


@register("repetition_penalty")
def repetition_penalty_reward(
    completions: list, *, ngram_size: int = 3, max_penalty: float = -1.0, **columns: Any
) -> list[float | None]:
    """``max_penalty`` (<= 0) scaled by the share of repeated ``ngram_size``-grams.

    >>> repetition_penalty_reward(["one two three four", "go on go on go on"], ngram_size=2)
    [0.0, -0.6]
    """
    if max_penalty > 0:
        raise UserError(f"repetition_penalty: max_penalty must be <= 0, got {max_penalty}")
    if ngram_size < 1:
        raise UserError(f"repetition_penalty: ngram_size must be >= 1, got {ngram_size}")
    shares = [repeated_ngram_share(completion_text(c), ngram_size) for c in completions]
    return [max_penalty * share if share else 0.0 for share in shares]
