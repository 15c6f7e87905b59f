"""Format rewards: ``<think>...</think>`` then the answer.

Unlike open-r1's ``^<think>\\n.*?\\n</think>\\n<answer>...`` regex (its most reported problem), these
checks ignore whitespace and newlines around tags and look at tag structure instead: each tag appears
once, in order, never nested or repeated.

``think_prefilled``: some chat templates (DeepSeek-R1 distills, Qwen3) end the prompt with ``<think>``,
so the completion starts inside the thought and must not open it again.
"""

from __future__ import annotations

from typing import Any

from rewards.common import completion_text
from rewards.math.answer import ANSWER_FORMATS, check_answer_format, is_well_formatted
from rewards.registry import register

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"


@register("format", choices={"answer_format": ANSWER_FORMATS})
def format_reward(
    completions: list,
    *,
    answer_format: str = "answer_tag",
    think_prefilled: bool = False,
    final_answer_pattern: str = "",
    **columns: Any,
) -> list[float | None]:
    r"""1.0 for a completion shaped ``<think>...</think>`` + answer (see `rewards.math.answer.is_well_formatted`), else 0.0.

    >>> format_reward(["<think>x</think> <answer>1</answer>", "<answer>1</answer>"])
    [1.0, 0.0]
    >>> format_reward([r"2+2 is 4</think> so \boxed{4}"], answer_format="boxed", think_prefilled=True)
    [1.0]
    """
    check_answer_format(answer_format)
    return [
        float(is_well_formatted(completion_text(c), answer_format, think_prefilled, final_answer_pattern))
        for c in completions
    ]


def _expected_tags(answer_format: str, think_prefilled: bool) -> list[str]:
    tags = [_THINK_OPEN, _THINK_CLOSE] + (
        [_ANSWER_OPEN, _ANSWER_CLOSE] if answer_format == "answer_tag" else []
    )
    return tags[1:] if think_prefilled else tags


def tag_count_score(text: str, answer_format: str = "answer_tag", think_prefilled: bool = False) -> float:
    """Share of expected tags that are well placed: present exactly once and after the previous one.

    >>> tag_count_score("<think>a</think> <answer>b")
    0.75
    """
    check_answer_format(answer_format)
    expected = _expected_tags(answer_format, think_prefilled)
    good, position = 0, 0
    for tag in expected:
        index = text.find(tag)
        if text.count(tag) == 1 and index >= position:
            good += 1
            position = index + len(tag)
    return good / len(expected)


@register("tag_count", choices={"answer_format": ANSWER_FORMATS})
def tag_count_reward(
    completions: list, *, answer_format: str = "answer_tag", think_prefilled: bool = False, **columns: Any
) -> list[float | None]:
    """Partial credit per well-placed tag (`tag_count_score`): a denser signal than `format_reward`
    early in training, when whole-format matches are rare.

    >>> tag_count_reward(["<think>a</think><answer>b</answer>", "<think>a</think></think>"])
    [1.0, 0.25]
    """
    return [tag_count_score(completion_text(c), answer_format, think_prefilled) for c in completions]


__all__ = ["ANSWER_FORMATS", "format_reward", "is_well_formatted", "tag_count_reward", "tag_count_score"]
