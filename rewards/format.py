"""Format rewards: ``<think>...</think>`` then the answer.

Unlike open-r1's ``^<think>\\n.*?\\n</think>\\n<answer>...`` regex (its most reported problem), these
checks ignore whitespace and newlines around tags and look at tag structure instead: each tag appears
once, in order, never nested or repeated.

``think_prefilled``: some chat templates (DeepSeek-R1 distills, Qwen3) end the prompt with ``<think>``,
so the completion starts inside the thought and must not open it again.
"""

from __future__ import annotations

from typing import Any

from r1kit.errors import UserError
from rewards.common import completion_text
from rewards.math.extract import last_boxed
from rewards.registry import register

ANSWER_FORMATS = ("answer_tag", "boxed")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_ALL_TAGS = (_THINK_OPEN, _THINK_CLOSE, _ANSWER_OPEN, _ANSWER_CLOSE)


def _check_answer_format(answer_format: str) -> None:
    if answer_format not in ANSWER_FORMATS:
        raise UserError(f"answer_format must be one of {list(ANSWER_FORMATS)}, got {answer_format!r}")


def _with_prefill(text: str, think_prefilled: bool) -> str:
    return _THINK_OPEN + text if think_prefilled else text


def _split_thought(text: str) -> tuple[str, str] | None:
    """(thought, rest) when the text is exactly one leading, non-empty ``<think>...</think>`` block."""
    body = text.lstrip()
    if not body.startswith(_THINK_OPEN) or body.count(_THINK_OPEN) != 1 or body.count(_THINK_CLOSE) != 1:
        return None
    thought, rest = body[len(_THINK_OPEN) :].split(_THINK_CLOSE, 1)
    if not thought.strip() or _ANSWER_OPEN in thought or _ANSWER_CLOSE in thought:
        return None
    return thought, rest


def _answer_part_ok(rest: str, answer_format: str) -> bool:
    if answer_format == "boxed":
        return (
            _ANSWER_OPEN not in rest and _ANSWER_CLOSE not in rest and bool((last_boxed(rest) or "").strip())
        )
    rest = rest.strip()
    if rest.count(_ANSWER_OPEN) != 1 or rest.count(_ANSWER_CLOSE) != 1:
        return False
    if not (rest.startswith(_ANSWER_OPEN) and rest.endswith(_ANSWER_CLOSE)):
        return False
    return bool(rest[len(_ANSWER_OPEN) : -len(_ANSWER_CLOSE)].strip())


def is_well_formatted(text: str, answer_format: str = "answer_tag", think_prefilled: bool = False) -> bool:
    r"""Whether ``text`` is one non-empty thought followed by the answer.

    ``answer_tag``: nothing but whitespace may surround ``<answer>...</answer>`` after the thought.
    ``boxed``: the text after the thought contains a non-empty ``\boxed{}`` and no answer tags.

    >>> is_well_formatted("<think>\n2+2=4\n</think>\n\n<answer> 4 </answer>\n")
    True
    >>> is_well_formatted("<think>a<think>b</think></think><answer>4</answer>")
    False
    """
    _check_answer_format(answer_format)
    parts = _split_thought(_with_prefill(text, think_prefilled))
    return parts is not None and _answer_part_ok(parts[1], answer_format)


@register("format")
def format_reward(
    completions: list, *, answer_format: str = "answer_tag", think_prefilled: bool = False, **columns: Any
) -> list[float | None]:
    r"""1.0 for a completion shaped ``<think>...</think>`` + answer (see `is_well_formatted`), else 0.0.

    >>> format_reward(["<think>x</think> <answer>1</answer>", "<answer>1</answer>"])
    [1.0, 0.0]
    >>> format_reward([r"2+2 is 4</think> so \boxed{4}"], answer_format="boxed", think_prefilled=True)
    [1.0]
    """
    return [float(is_well_formatted(completion_text(c), answer_format, think_prefilled)) for c in completions]


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
    _check_answer_format(answer_format)
    expected = _expected_tags(answer_format, think_prefilled)
    good, position = 0, 0
    for tag in expected:
        index = text.find(tag)
        if text.count(tag) == 1 and index >= position:
            good += 1
            position = index + len(tag)
    return good / len(expected)


@register("tag_count")
def tag_count_reward(
    completions: list, *, answer_format: str = "answer_tag", think_prefilled: bool = False, **columns: Any
) -> list[float | None]:
    """Partial credit per well-placed tag (`tag_count_score`): a denser signal than `format_reward`
    early in training, when whole-format matches are rare.

    >>> tag_count_reward(["<think>a</think><answer>b</answer>", "<think>a</think></think>"])
    [1.0, 0.25]
    """
    return [tag_count_score(completion_text(c), answer_format, think_prefilled) for c in completions]
