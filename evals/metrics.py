"""Benchmark metrics from per-sample verdicts: pass@k, maj@k, standard errors, length statistics.

All functions are pure and take plain Python lists, so they are checked against brute-force
enumeration in the tests and reused by the report.

- pass@1 is the mean over items of each item's share of correct samples (the DeepSeek-R1 protocol:
  n samples at temperature 0.6, pass@1 averaged over them); its standard error is the sample standard
  deviation of those per-item shares over the square root of the number of items.
- pass@k uses the unbiased estimator of Chen et al. 2021 (Codex paper, eq. 1): for an item with n
  samples of which c are correct, ``1 - C(n-c, k) / C(n, k)``, averaged over items.
- maj@k (cons@k): the majority answer of k samples, over the vote keys of the answers the scorer
  compared (`rewards.judge`), is checked against the gold. Samples without a valid answer (badly
  formatted, not in final form) vote together for "no answer", which is never correct; ties go to the
  answer seen first (lighteval's convention). With n >= k samples the n samples are cut into
  floor(n/k) disjoint groups of k, in order, and maj@k is the mean over the groups, so all samples
  count and nothing is random.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one item with ``n`` samples, ``c`` of them correct (Chen et al. 2021).

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, which equals ``1 - C(n-c,k)/C(n,k)`` without
    huge binomials.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 2), pass_at_k(4, 0, 3), pass_at_k(4, 2, 3)
    (0.25, 0.5, 0.0, 1.0)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample sd / sqrt(N)); the error is 0.0 for fewer than 2 values.

    >>> mean_and_stderr([1.0, 0.0, 1.0, 0.0])
    (0.5, 0.288675...)
    """
    if not values:
        return 0.0, 0.0
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, statistics.stdev(values) / math.sqrt(len(values))


def default_ks(n: int) -> list[int]:
    """pass@k / maj@k cut-offs reported for n samples: 1, powers of two below n, and n.

    >>> default_ks(1), default_ks(8), default_ks(10)
    ([1], [1, 2, 4, 8], [1, 2, 4, 8, 10])
    """
    ks = [k for k in (2**i for i in range(20)) if k < n] + [n]
    return sorted(set(ks))


def majority(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer; ties go to the one seen first (lighteval's `max(answers, key=answers.count)`).
    None (no valid answer) is a bucket like any other: it can win, and it is never correct.

    >>> majority(["4", "5", "5", None, "4"]), majority([None, "4", None]), majority([None, "4", "4", None])
    ('4', None, None)
    """
    counts = Counter(answers)
    return max(answers, key=counts.__getitem__)


def maj_at_k(keys: Sequence[str | None], k: int, is_correct: Callable[[str], bool]) -> float:
    """maj@k of one item: the share of disjoint k-sample groups whose majority answer is correct.

    ``keys`` are the vote keys of the item's samples in order (None: no valid answer, see `majority`);
    ``is_correct(key)`` says whether a majority answer matches the gold.

    >>> maj_at_k(["1", "2", "2", "3"], 4, lambda a: a == "2"), maj_at_k(["2", "1", "1", "1"], 2, lambda a: a == "2")
    (1.0, 0.5)
    """
    groups = [keys[i : i + k] for i in range(0, len(keys) - k + 1, k)]
    if not groups:
        raise ValueError(f"maj@{k} needs at least {k} samples, got {len(keys)}")
    return statistics.fmean(float((m := majority(g)) is not None and is_correct(m)) for g in groups)


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """Mean, median, p90 and max of completion lengths.

    >>> length_stats([1, 2, 3, 10])
    {'mean': 4.0, 'median': 2.5, 'p90': 10.0, 'max': 10.0}
    """
    if not lengths:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    ordered = sorted(lengths)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return {"mean": statistics.fmean(ordered), "median": float(statistics.median(ordered)),
            "p90": float(p90), "max": float(ordered[-1])}  # fmt: skip


def summarize(items: list[dict], ks: Sequence[int] | None = None) -> dict[str, float]:
    """Benchmark metrics from scored items (see `rewards.judge`): each has ``correct`` (list[bool]),
    optional ``vote_keys`` + ``key_correct`` (math), ``formatted`` (list[bool] or None),
    ``lengths`` (list[int]), ``length_unit`` and ``truncated`` (list[bool] or None).

    >>> m = summarize([{"correct": [True, False]}, {"correct": [False, False]}], ks=[1, 2])
    >>> m["pass@1"], m["pass@2"], m["num_items"], m["num_samples"]
    (0.25, 0.5, 2, 2)
    """
    if not items:
        raise ValueError("no items to summarize")
    n = min(len(it["correct"]) for it in items)
    ks = [k for k in (ks or default_ks(n)) if 1 <= k <= n]
    per_item = [statistics.fmean(map(float, it["correct"])) for it in items]
    p1, se = mean_and_stderr(per_item)
    out: dict[str, float] = {"pass@1": p1, "pass@1_stderr": se, "num_items": len(items), "num_samples": n}
    for k in ks:
        if k > 1:
            out[f"pass@{k}"] = statistics.fmean(pass_at_k(len(it["correct"]), sum(it["correct"]), k) for it in items)
    if all("vote_keys" in it for it in items):
        for k in ks:
            out[f"maj@{k}"] = statistics.fmean(
                maj_at_k(it["vote_keys"], k, lambda key, it=it: it["key_correct"].get(key, False)) for it in items
            )
    out |= _rates(items)
    return out


def _rates(items: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    formatted = [f for it in items for f in (it.get("formatted") or [])]
    if formatted:
        out["format_rate"] = statistics.fmean(map(float, formatted))
    truncated = [t for it in items for t in (it.get("truncated") or [])]
    if truncated:
        out["truncation_rate"] = statistics.fmean(map(float, truncated))
    lengths = [n for it in items for n in (it.get("lengths") or [])]
    if lengths:
        unit = items[0].get("length_unit", "chars")
        out |= {f"length_{unit}_{name}": v for name, v in length_stats(lengths).items()}
    return out
