"""Length-shaped rewards, measured in tokens.

Lengths come from the ``completion_token_ids`` column (list of token-id lists) that the r1kit trainer
passes to every reward. Only when it is absent (e.g. a dataset-only evaluation) is the length the
number of whitespace-separated words, which is a different unit: set the limits accordingly.
"""

from __future__ import annotations

import math
from typing import Any

from r1kit.errors import UserError
from rewards.common import completion_text
from rewards.math import DEFAULT_DEADLINE_S, DEFAULT_REL_TOL, verify_batch
from rewards.registry import register


def completion_lengths(completions: list, completion_token_ids: list | None) -> list[int]:
    """Token counts, or whitespace-word counts when token ids are not given.

    >>> completion_lengths(["a b c", "d"], None), completion_lengths(["ignored"], [[5, 6, 7, 8]])
    ([3, 1], [4])
    """
    if completion_token_ids is not None:
        if len(completion_token_ids) != len(completions):
            raise ValueError(
                f"completion_token_ids has {len(completion_token_ids)} rows for {len(completions)} completions"
            )
        return [len(ids) for ids in completion_token_ids]
    return [len(completion_text(c).split()) for c in completions]


def cosine_scale(length: int, max_len: int, short_value: float, long_value: float) -> float:
    """Cosine interpolation from ``short_value`` (length 0) to ``long_value`` (length >= ``max_len``),
    Eq. 1 of Yeo et al. 2025, "Demystifying Long Chain-of-Thought Reasoning in LLMs".

    >>> cosine_scale(0, 100, 1.0, 0.5), cosine_scale(100, 100, 1.0, 0.5), cosine_scale(50, 100, 1.0, 0.5)
    (1.0, 0.5, 0.75)
    """
    progress = min(length, max_len) / max_len
    return long_value + 0.5 * (short_value - long_value) * (1.0 + math.cos(math.pi * progress))


@register("cosine_length")
def cosine_length_reward(
    completions: list,
    answer: list,
    *,
    max_completion_len: int = 4096,
    correct_short: float = 1.0,
    correct_long: float = 0.5,
    wrong_short: float = -1.0,
    wrong_long: float = -0.5,
    deadline_s: float = DEFAULT_DEADLINE_S,
    rel_tol: float = DEFAULT_REL_TOL,
    completion_token_ids: list | None = None,
    **columns: Any,
) -> list[float | None]:
    """Correctness reward scaled by length in tokens: among correct answers shorter is better, among
    wrong ones longer is better (keep thinking rather than guess). Correctness uses the same verifier
    as `accuracy_reward`; None when the gold answer is missing.

    >>> cosine_length_reward(["<answer>4</answer>"] * 2 + ["<answer>5</answer>"] * 2, ["4"] * 4,
    ...     max_completion_len=100, completion_token_ids=[[0] * 10, [0] * 90, [0] * 10, [0] * 90])
    [0.987764, 0.512236, -0.987764, -0.512236]
    """
    if max_completion_len <= 0:
        raise UserError(f"cosine_length: max_completion_len must be positive, got {max_completion_len}")
    lengths = completion_lengths(completions, completion_token_ids)
    keep = [i for i, gold in enumerate(answer) if gold is not None and str(gold).strip()]
    verdicts = verify_batch(
        [(completion_text(completions[i]), answer[i]) for i in keep],
        deadline_s=deadline_s,
        rel_tol=rel_tol,
        answer_format="any",
        final_form=True,
    )
    rewards: list[float | None] = [None] * len(completions)
    for i, verdict in zip(keep, verdicts):
        short, long = (correct_short, correct_long) if verdict is True else (wrong_short, wrong_long)
        rewards[i] = round(cosine_scale(lengths[i], max_completion_len, short, long), 6)
    return rewards


def overlong_penalty(length: int, max_completion_len: int, cache_len: int) -> float:
    """DAPO soft overlong punishment (Yu et al. 2025, Eq. 13): 0 up to ``max - cache``, then a linear
    ramp to -1 at ``max``, and -1 beyond.

    >>> [overlong_penalty(n, 100, 20) for n in (80, 90, 100, 101)]
    [0.0, -0.5, -1.0, -1.0]
    """
    free = max_completion_len - cache_len
    if length <= free:
        return 0.0
    if length <= max_completion_len:
        return (free - length) / cache_len
    return -1.0


@register("overlong_penalty")
def overlong_penalty_reward(
    completions: list,
    *,
    max_completion_len: int = 4096,
    cache_len: int = 512,
    completion_token_ids: list | None = None,
    **columns: Any,
) -> list[float | None]:
    """DAPO soft overlong punishment per completion, lengths in tokens (see module docstring).

    >>> overlong_penalty_reward(["x"] * 2, max_completion_len=10, cache_len=4,
    ...     completion_token_ids=[[1] * 6, [1] * 8])
    [0.0, -0.5]
    """
    if not 0 < cache_len < max_completion_len:
        raise UserError(
            f"overlong_penalty: need 0 < cache_len < max_completion_len, got {cache_len} and {max_completion_len}"
        )
    lengths = completion_lengths(completions, completion_token_ids)
    return [overlong_penalty(n, max_completion_len, cache_len) for n in lengths]
