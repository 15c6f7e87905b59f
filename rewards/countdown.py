"""Countdown reward (TinyZero's task): the `<answer>` must be an arithmetic expression that uses
each given number exactly once and equals the target.

Unlike TinyZero, a well-formed but wrong expression earns 0 rather than a 0.1 format score: the
`format` reward already pays for structure, and mixing the two lets a policy farm partial credit.
The expression is evaluated by walking its syntax tree with exact fractions (no `eval`), so `7 / 2 * 2`
is exactly 7 and a division by zero is simply wrong.
"""

from __future__ import annotations

import ast
from collections import Counter
from fractions import Fraction
from typing import Any

from rewards.common import completion_text
from rewards.math.answer import read_answer
from rewards.registry import register

_MAX_EXPRESSION_CHARS = 200  # a Countdown answer is short; longer text is not an attempt
_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class _NotAllowed(Exception):
    """The expression holds something other than integers, + - * / and parentheses."""


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    """Exact value of an expression tree; appends every integer literal to `used`."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Div) and right == 0:
            raise _NotAllowed
        return _OPS[type(node.op)](left, right)
    raise _NotAllowed


def solves(expression: str, numbers: list[int], target: int) -> bool:
    """Whether `expression` uses exactly `numbers` (as a multiset) and equals `target`.

    A trailing `= target` is allowed, as models often restate it.

    >>> solves("19 - (16 - 8)", [16, 8, 19], 11), solves("19 + 16 - 8", [16, 8, 19], 11)
    (True, False)
    >>> solves("16 + 8 - 13", [16, 8, 19], 11)  # 13 is not one of the numbers
    False
    """
    expression = expression.split("=", 1)[0].strip()
    if not expression or len(expression) > _MAX_EXPRESSION_CHARS:
        return False
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return False
    used: list[int] = []
    try:
        result = _evaluate(tree.body, used)
    except _NotAllowed:
        return False
    return Counter(used) == Counter(numbers) and result == target


@register("countdown")
def countdown_reward(completions: list, numbers: list, target: list, **columns: Any) -> list[float | None]:
    """1.0 when the `<answer>...</answer>` after the thought (read strictly, as `accuracy` reads it: see
    `rewards.math.answer`) reaches the row's `target` with its `numbers`, else 0.0.

    >>> countdown_reward(
    ...     ["<think>8 * 3 = 24</think><answer>(16 / 2) * 3</answer>", "<answer>(16 / 2) * 3</answer>", "24"],
    ...     numbers=[[16, 2, 3]] * 3, target=[24] * 3)
    [1.0, 0.0, 0.0]
    """
    rewards: list[float | None] = []
    for completion, nums, goal in zip(completions, numbers, target, strict=True):
        answer = read_answer(completion_text(completion), "answer_tag")
        rewards.append(1.0 if answer is not None and solves(answer, list(nums), int(goal)) else 0.0)
    return rewards
