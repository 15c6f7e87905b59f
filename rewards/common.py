"""Helpers shared by reward functions."""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> str:
    """The text of one completion: a plain string, or the content of the last message of a chat
    message list (``[{"role": "assistant", "content": "..."}]``).

    >>> completion_text("42")
    '42'
    >>> completion_text([{"role": "assistant", "content": "<answer>4</answer>"}])
    '<answer>4</answer>'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        if not completion:
            return ""
        return completion_text(completion[-1])
    if completion is None:
        return ""
    return str(completion)
