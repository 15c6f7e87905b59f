"""Math answer verification shared by RL rewards and evaluation, so the two can never drift apart.

Pipeline for one (prediction, gold) pair:

1. The answer is read from where the caller says it is (`rewards.math.answer`): ``bare`` (the
   prediction is the answer), or from a completion in ``answer_tag``/``boxed``/``final_answer``/``any``
   format, after the thought. A completion with no answer in that place is wrong; the whole text is
   never taken as the answer.
2. With ``final_form`` (on for the rewards) a numeric gold demands a number literal: ``66 - 20`` is not
   an answer to "What is 66 - 20?", however it evaluates.
3. `quick_verdict` settles plain numbers, choice letters, word answers, flat collections of numbers
   (tuples, intervals, sets), inequalities against intervals, and answers that are the same LaTeX spelled
   differently, with string rules, in process.
4. Everything else goes to a worker process (`rewards.math.pool`) that parses both sides with
   latex2sympy2_extended, settles most symbolic pairs by evaluating them at random points, and leaves
   the rest to math-verify's structural comparator, under a deadline.

Verdicts are cached by (answer, gold, tolerance): a GRPO group repeats the same answers. Importing this
package does not import sympy; only the workers do.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from r1kit.errors import UserError
from rewards.common import completion_text
from rewards.math.answer import (
    ANSWER_FORMATS,
    VERIFY_FORMATS,
    check_answer_format,
    is_well_formatted,
    read_answer,
)
from rewards.math.extract import _answer_side, extract_answer
from rewards.math.normalize import (
    QUICK_MAX_CHARS,
    Num,
    canonical,
    clean,
    collection,
    decimal_comma,
    has_huge_number,
    parse_number,
    quick_verdict,
)
from rewards.math.pool import shared_pool
from rewards.registry import register

DEFAULT_DEADLINE_S = 5.0
DEFAULT_REL_TOL = 1e-4
# A bare answer is short; a long text is a wrong answer, not something to hand to the LaTeX parser
# for seconds.
_BARE_ANSWER_MAX_CHARS = 1000
_CACHE_MAX_ITEMS = 100_000
_CACHE_MAX_KEY_CHARS = 2000

_GOLD_SOURCES = ("boxed", "last_math")
# `x = 5`, `x_1 = 5`: an assignment whose value is the answer.
_ASSIGNMENT_RE = re.compile(r"^\s*[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?P<value>[^=]+)$")

_cache: OrderedDict[tuple[str, str, float], bool] = OrderedDict()
_cache_lock = threading.Lock()


def default_workers() -> int:
    """One verifier worker per core this process may use."""
    return len(os.sched_getaffinity(0))


def _as_text(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"{what} must be a str, int or float, got {type(value).__name__}: {value!r}")
    return value if isinstance(value, str) else repr(value)


def _has_lookalike_digits(text: str) -> bool:
    # Fullwidth `４`, Arabic-Indic `٤` and mathematical bold `𝟒` are decimal digits to Python's `int()`
    # and to `\d`, but not the digits the gold answer is written in: an answer must spell its own digits.
    return any(ch.isdecimal() and not ch.isascii() for ch in text)


def gold_answer(gold: str) -> str:
    """The answer a gold string states: after `####` (a GSM8K solution), its box or last math (a MATH
    solution, a sentence), a solution set as a list.

    >>> gold_answer("so 8 + 64 = 72 #### 72"), gold_answer("It is $125$ miles."), gold_answer("x = 2 or x = 3")
    ('72', '125', '2, 3')
    """
    # A whole GSM8K solution ("... #### 72") is accepted as gold: its final answer follows `####`.
    if "####" in gold:
        return gold.rsplit("####", 1)[-1].strip()
    # So is a whole MATH-style solution (its boxes) or an answer in a sentence ("$125$ miles").
    found = extract_answer(gold, _GOLD_SOURCES)
    answer = found if found is not None else gold.strip()
    return solution_set(answer) or answer  # `x = 2 or x = 3` is the list `2, 3`


def final_value(answer: str) -> str:
    r"""What an answer claims as its value: the last term of a chained equality (``x = 2+3 = 5``,
    ``67 - 66 = 1``) and the value of an assignment (``x = 5``). Lists of assignments stay whole.

    >>> final_value("x = 2+3 = 5"), final_value("x = 5"), final_value("5"), final_value("x=1, y=2")
    ('5', '5', '5', 'x=1, y=2')
    """
    side = _answer_side(answer).strip()
    assignment = _ASSIGNMENT_RE.match(side)
    return assignment["value"].strip() if assignment else side


# Separators of a solution set written out: `x = 2 or x = 3`, `x=2, \text{ and } x=3`, `2; 3`.
_SET_SEPARATOR_RE = re.compile(r"\\text\{\s*(?:or|and)\s*\}|\\(?:lor|vee)\b|\b(?:or|and)\b|;|,")
_WORD_SEPARATOR_RE = re.compile(r"\b(?:or|and)\b|\\(?:lor|vee)\b|;")


def solution_set(answer: str) -> str | None:
    r"""A solution set written as alternatives, as a plain list: each part an assignment to the same
    variable or a bare value; None for anything else (a single answer, inequalities, other variables).

    >>> solution_set("x=2 or x=3"), solution_set(r"x = -1 \text{ and } x = 4"), solution_set("2; 3")
    ('2, 3', '-1, 4', '2, 3')
    >>> solution_set("x < 2 or x > 3"), solution_set("x = 1 and y = 2"), solution_set("5"), solution_set("1, 2")
    (None, None, None, None)
    """
    if not _WORD_SEPARATOR_RE.search(answer):
        return None  # a plain comma list is already a list
    parts = [part.strip() for part in _SET_SEPARATOR_RE.split(answer)]
    if not all(parts):
        return None
    variables, values = set(), []
    for part in parts:
        assignment = _ASSIGNMENT_RE.match(part)
        if assignment:
            variables.add(part.split("=", 1)[0].strip())
            part = assignment["value"].strip()
        if re.search(r"[<>=]|\\[lg]e|\\neq", part):
            return None
        values.append(part)
    return ", ".join(values) if len(variables) <= 1 else None


def claimed_answer(answer: str, gold: str) -> str:
    """The answer in the form to compare with ``gold``: a solution set as a list, a chained equality
    as its last term, an assignment as its value (a gold equation is compared whole).

    >>> claimed_answer("x = 2 or x = 3", "2, 3"), claimed_answer("x = 2+3 = 5", "5"), claimed_answer("y = 2x", "y = 2x")
    ('2, 3', '5', 'y = 2x')
    """
    if "=" in gold:
        return answer
    listed = solution_set(answer)
    if listed is not None and (solution_set(gold) is not None or collection(clean(gold)) is not None):
        return listed
    return final_value(answer)


def _final_number(answer: Num, gold: Num) -> bool:
    # A division left undone (`12/2`, `2/4`) is not final, unless the gold is written that way too;
    # nor is scientific notation for an integer (`1e4` for 10000).
    if answer.form == "unreduced":
        return gold.form == "unreduced"
    return not (answer.form == "scientific" and gold.form == "integer")


def _final_form(answer: str, gold: str) -> bool:
    # The gold decides: a number demands a number literal in final form; a list of numbers, a list of
    # such literals. A decimal is a final form of a fraction and the other way round (`0.5`, `1/2`).
    gold_number = parse_number(gold, any_unit=True)
    if gold_number is not None:
        number = parse_number(answer) or decimal_comma(answer)
        return number is not None and _final_number(number, gold_number)
    if collection(clean(gold)) is not None:
        items = collection(clean(answer))
        return items is not None and all(isinstance(i, str) or i.form != "unreduced" for i in items.items)
    return True


def prediction_answer(prediction: str, gold: str, fmt: str, think_prefilled: bool, final_form: bool,
                      pattern: str = "") -> str | None:
    """The answer `verify_batch` compares with ``gold`` (a `gold_answer`), or None when the prediction has no
    acceptable answer: read from format ``fmt`` (``bare``: the prediction is the answer), no look-alike digits,
    `claimed_answer`'s form, and with ``final_form`` a number literal in final form where the gold is one.

    >>> prediction_answer("<think>so</think> <answer>x = 12/2 = 6</answer>", "6", "answer_tag", False, True)
    '6'
    >>> prediction_answer("<think>so</think> <answer>12/2</answer>", "6", "answer_tag", False, True) is None
    True
    """
    if fmt == "bare":
        answer = prediction.strip()
        if len(answer) > _BARE_ANSWER_MAX_CHARS:
            return None
    else:
        answer = read_answer(prediction, fmt, think_prefilled, pattern)
    if not answer or _has_lookalike_digits(answer):
        return None
    answer = claimed_answer(answer, gold)
    if final_form and not _final_form(answer, gold):
        return None
    return answer or None


def _cache_get(key: tuple[str, str, float]) -> bool | None:
    with _cache_lock:
        verdict = _cache.get(key)
        if verdict is not None:
            _cache.move_to_end(key)
        return verdict


def _cache_put(key: tuple[str, str, float], verdict: bool) -> None:
    if len(key[0]) + len(key[1]) > _CACHE_MAX_KEY_CHARS:
        return
    with _cache_lock:
        _cache[key] = verdict
        if len(_cache) > _CACHE_MAX_ITEMS:
            _cache.popitem(last=False)


def _huge_verdict(answer: str, gold: str) -> bool | None:
    # A number too long to convert is equal only to the same digits; decided here, never in a worker.
    if has_huge_number(answer) or has_huge_number(gold):
        return canonical(clean(answer)) == canonical(clean(gold))
    return None


def _check_limits(deadline_s: float, rel_tol: float) -> None:
    if not (math.isfinite(deadline_s) and deadline_s > 0):
        raise UserError(f"deadline_s must be a finite number of seconds > 0, got {deadline_s!r}")
    if not (math.isfinite(rel_tol) and rel_tol >= 0):
        raise UserError(f"rel_tol must be a finite number >= 0, got {rel_tol!r}")


def verify_batch(
    pairs: Iterable[tuple[Any, Any]],
    *,
    answer_format: str = "bare",
    think_prefilled: bool = False,
    final_form: bool = False,
    final_answer_pattern: str = "",
    deadline_s: float = DEFAULT_DEADLINE_S,
    workers: int | None = None,
    rel_tol: float = DEFAULT_REL_TOL,
) -> list[bool | None]:
    r"""Verify many ``(prediction, gold)`` pairs; the batch API behind `verify`, the rewards and the
    evaluator. Usable from any thread.

    ``answer_format`` says where the answer is: ``bare`` (the prediction is the answer) or a completion
    format of `rewards.math.answer` (``answer_tag``, ``boxed``, ``final_answer``, ``any``), read after
    the thought (``think_prefilled``: the prompt opened it). ``final_form``: a numeric gold demands a
    number literal (``2+3`` is not 5). Each result is True/False, or None when the check did not finish
    within ``deadline_s`` seconds of a worker starting it (or its worker crashed). ``workers`` defaults
    to the usable cores.

    >>> verify_batch([("1,234", "1234"), (r"\frac{2}{4}", "0.5"), ("x", "y"), ("2+3", "5")])
    [True, True, False, True]
    >>> verify_batch([("<answer>2+3</answer>", "5"), ("so \\boxed{5}", "5")], answer_format="any", final_form=True)
    [False, True]
    """
    check_answer_format(answer_format, VERIFY_FORMATS)
    _check_limits(deadline_s, rel_tol)
    results: list[bool | None] = []
    todo: dict[tuple[str, str, float], list[int]] = {}
    for prediction, gold in pairs:
        gold_text = gold_answer(_as_text(gold, "gold"))
        answer = prediction_answer(_as_text(prediction, "prediction"), gold_text, answer_format,
                                   think_prefilled, final_form, final_answer_pattern)
        results.append(False if answer is None or not gold_text else None)
        if answer is None or not gold_text:
            continue
        key = (answer, gold_text, rel_tol)
        verdict = _cache_get(key)
        if verdict is None:
            verdict = _huge_verdict(answer, gold_text)
        if verdict is None and len(answer) + len(gold_text) <= QUICK_MAX_CHARS:
            verdict = quick_verdict(answer, gold_text, rel_tol)
        if verdict is not None:
            results[-1] = verdict
            _cache_put(key, verdict)
        else:
            todo.setdefault(key, []).append(len(results) - 1)
    if todo:
        # Longest first: a long answer is usually the slow one, and starting it early keeps one worker
        # from finishing the batch alone while the others sit idle.
        keys = sorted(todo, key=lambda k: len(k[0]) + len(k[1]), reverse=True)
        verdicts = shared_pool(workers or default_workers()).run(keys, deadline_s)
        for key, verdict in zip(keys, verdicts):
            if verdict is not None:
                _cache_put(key, verdict)
            for index in todo[key]:
                results[index] = verdict
    return results


def verify(prediction: str | float, gold: str | float, **options: Any) -> bool:
    r"""Whether ``prediction`` equals the answer ``gold`` (math-verify's ``verify``, one call).

    By default the prediction is a bare answer and values are compared as math (``2+3`` equals 5); to
    grade a completion name its format (``answer_format="any"``, ``"boxed"``, ...) and pass ``final_form=True`` to
    demand a number where the gold is one. A check that misses its deadline counts as not equal.
    ``options`` are those of `verify_batch`.

    >>> verify("1/2", "0.5"), verify(0.75, r"\frac34"), verify("3,5,7", r"7, 5, 3"), verify("(2,1)", "(1,2)")
    (True, True, True, False)
    >>> verify(r"so the answer is $\boxed{(r+5)(r+5)}$", "(r+5)^2", answer_format="any")
    True
    >>> verify("88 38", "126"), verify("67 - 66", "1", final_form=True)
    (False, False)
    """
    return verify_batch([(prediction, gold)], **options)[0] is True


def _scorable(answer: list) -> list:
    return [None if a is None or (isinstance(a, str) and not a.strip()) else a for a in answer]


@register("accuracy", choices={"answer_format": ANSWER_FORMATS})
def accuracy_reward(
    completions: list,
    answer: list,
    *,
    answer_format: str = "answer_tag",
    think_prefilled: bool = False,
    final_form: bool = True,
    final_answer_pattern: str = "",
    deadline_s: float = DEFAULT_DEADLINE_S,
    rel_tol: float = DEFAULT_REL_TOL,
    **columns: Any,
) -> list[float | None]:
    r"""1.0 if the answer read from ``answer_format`` (after the thought) equals the ``answer`` column,
    else 0.0. See `rewards.math.answer` for where each format reads the answer; with ``final_form`` a
    numeric gold demands a number literal (turn it off for symbolic tasks).

    None (skip) only when the gold answer is missing. A check that misses the deadline scores 0.0, not
    None: otherwise a policy could dodge the penalty by writing answers too slow to check.

    >>> accuracy_reward(["<think>2+2</think><answer>4</answer>", "<answer>5</answer>", "4"], answer=["4"] * 3)
    [1.0, 0.0, 0.0]
    >>> accuracy_reward(["<think>67 - 66</think><answer>67 - 66</answer>"], answer=["1"])
    [0.0]
    """
    check_answer_format(answer_format)
    golds = _scorable(answer)
    pairs = [(completion_text(c), g) for c, g in zip(completions, golds, strict=True) if g is not None]
    verdicts = iter(verify_batch(pairs, answer_format=answer_format, think_prefilled=think_prefilled,
                                 final_form=final_form, final_answer_pattern=final_answer_pattern,
                                 deadline_s=deadline_s, rel_tol=rel_tol))
    return [None if g is None else float(next(verdicts) is True) for g in golds]


@register("strict_accuracy", choices={"answer_format": ANSWER_FORMATS})
def strict_accuracy(
    completions: list,
    answer: list,
    *,
    answer_format: str = "answer_tag",
    think_prefilled: bool = False,
    final_form: bool = True,
    final_answer_pattern: str = "",
    deadline_s: float = DEFAULT_DEADLINE_S,
    rel_tol: float = DEFAULT_REL_TOL,
    **columns: Any,
) -> list[float | None]:
    r"""1.0 only for a well-formatted completion (`rewards.format.is_well_formatted`: one non-empty
    thought, then the answer in ``answer_format`` and nothing else) whose answer is in final form and
    equals the gold: the score for held-out evaluation, benchmarks and learning tests, where a shortcut
    must never count as solved.

    >>> strict_accuracy(["<think>2+2</think><answer>4</answer>", "<think></think><answer>4</answer>",
    ...                  "<think>2+2</think><answer>4</answer> or 5"], answer=["4"] * 3)
    [1.0, 0.0, 0.0]
    """
    scores = accuracy_reward(completions, answer, answer_format=answer_format, think_prefilled=think_prefilled,
                             final_form=final_form, final_answer_pattern=final_answer_pattern,
                             deadline_s=deadline_s, rel_tol=rel_tol)
    return [
        s if not s else float(is_well_formatted(completion_text(c), answer_format, think_prefilled,
                                                final_answer_pattern))
        for c, s in zip(completions, scores)
    ]


__all__ = [
    "ANSWER_FORMATS",
    "VERIFY_FORMATS",
    "accuracy_reward",
    "claimed_answer",
    "extract_answer",
    "final_value",
    "gold_answer",
    "prediction_answer",
    "read_answer",
    "solution_set",
    "strict_accuracy",
    "verify",
    "verify_batch",
]
