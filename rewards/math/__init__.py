"""Math answer verification shared by RL rewards and evaluation, so the two can never drift apart.

Pipeline for one (prediction, gold) pair:

1. `extract_answer` pulls the final answer out of a completion (a bare answer passes through).
2. `quick_verdict` settles plain numbers, choice letters, word answers, flat collections of numbers
   (tuples, intervals, sets), inequalities against intervals, and answers that are the same LaTeX spelled
   differently, with string rules, in process.
3. Everything else goes to a worker process (`rewards.math.pool`) that parses both sides with
   latex2sympy2_extended, settles most symbolic pairs by evaluating them at random points, and leaves
   the rest to math-verify's structural comparator, under a deadline.

Verdicts are cached by (extracted answer, gold, tolerance): a GRPO group repeats the same answers.
Importing this package does not import sympy; only the workers do.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from rewards.common import completion_text
from rewards.math.extract import ANSWER_SOURCES, extract_answer
from rewards.math.normalize import QUICK_MAX_CHARS, quick_verdict
from rewards.math.pool import shared_pool
from rewards.registry import register

DEFAULT_DEADLINE_S = 5.0
DEFAULT_REL_TOL = 1e-4
# A bare answer is short; a long text with no recognizable answer is a wrong answer, not something
# to hand to the LaTeX parser for seconds.
_BARE_ANSWER_MAX_CHARS = 1000
_CACHE_MAX_ITEMS = 100_000
_CACHE_MAX_KEY_CHARS = 2000

_GOLD_SOURCES = ("boxed", "last_math")

_cache: OrderedDict[tuple[str, str, float], bool] = OrderedDict()
_cache_lock = threading.Lock()


def default_workers() -> int:
    """One verifier worker per core this process may use."""
    return len(os.sched_getaffinity(0))


def _as_text(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"{what} must be a str, int or float, got {type(value).__name__}: {value!r}")
    return value if isinstance(value, str) else repr(value)


def _prediction_answer(prediction: str, sources: tuple[str, ...]) -> str | None:
    found = extract_answer(prediction, sources)
    if found is not None:
        return found
    bare = prediction.strip()
    return bare if bare and len(bare) <= _BARE_ANSWER_MAX_CHARS else None


def _gold_answer(gold: str) -> str:
    # A whole GSM8K solution ("... #### 72") is accepted as gold: its final answer follows `####`.
    if "####" in gold:
        return gold.rsplit("####", 1)[-1].strip()
    # So is a whole MATH-style solution (its boxes) or an answer in a sentence ("$125$ miles").
    found = extract_answer(gold, _GOLD_SOURCES)
    return found if found is not None else gold.strip()


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


def verify_batch(
    pairs: Iterable[tuple[Any, Any]],
    *,
    deadline_s: float = DEFAULT_DEADLINE_S,
    workers: int | None = None,
    rel_tol: float = DEFAULT_REL_TOL,
    sources: Sequence[str] = ANSWER_SOURCES,
) -> list[bool | None]:
    """Verify many ``(prediction, gold)`` pairs; the batch API behind `verify`, `accuracy_reward` and
    the evaluator. Usable from any thread.

    Each result is True/False, or None when the check did not finish within ``deadline_s`` seconds of
    a worker starting it (or its worker crashed). ``workers`` defaults to the usable cores.

    >>> verify_batch([("#### 1,234", "1234"), (r"\\boxed{\\frac{2}{4}}", "0.5"), ("x", "y")])
    [True, True, False]
    """
    sources = tuple(sources)
    results: list[bool | None] = []
    todo: dict[tuple[str, str, float], list[int]] = {}
    for prediction, gold in pairs:
        answer = _prediction_answer(_as_text(prediction, "prediction"), sources)
        gold_text = _gold_answer(_as_text(gold, "gold"))
        results.append(False if answer is None or not gold_text else None)
        if answer is None or not gold_text:
            continue
        key = (answer, gold_text, rel_tol)
        verdict = _cache_get(key)
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
    r"""Whether ``prediction`` (a bare answer or a whole completion) equals the bare answer ``gold``.

    A check that misses its deadline counts as not equal. ``options`` are those of `verify_batch`.

    >>> verify(r"so the answer is $\boxed{(r+5)(r+5)}$", "(r+5)^2")
    True
    >>> verify(0.75, r"\frac34"), verify("3,5,7", r"7, 5, 3"), verify("(2,1)", "(1,2)")
    (True, True, False)
    """
    return verify_batch([(prediction, gold)], **options)[0] is True


@register("accuracy")
def accuracy_reward(
    completions: list,
    answer: list,
    *,
    deadline_s: float = DEFAULT_DEADLINE_S,
    rel_tol: float = DEFAULT_REL_TOL,
    sources: tuple = ANSWER_SOURCES,
    **columns: Any,
) -> list[float | None]:
    r"""1.0 if the completion's final answer equals the ``answer`` column, else 0.0.

    None (skip) only when the gold answer is missing. A check that misses the deadline scores 0.0, not
    None: otherwise a policy could dodge the penalty by writing answers too slow to check.

    >>> accuracy_reward([r"<think>2+2</think><answer>4</answer>", "<answer>5</answer>"], answer=["4", "4"])
    [1.0, 0.0]
    """
    golds = [None if a is None or (isinstance(a, str) and not a.strip()) else a for a in answer]
    pairs = [(completion_text(c), g) for c, g in zip(completions, golds, strict=True) if g is not None]
    verdicts = iter(verify_batch(pairs, deadline_s=deadline_s, rel_tol=rel_tol, sources=sources))
    return [None if g is None else float(next(verdicts) is True) for g in golds]


__all__ = ["ANSWER_SOURCES", "accuracy_reward", "extract_answer", "verify", "verify_batch"]
