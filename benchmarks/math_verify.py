"""Agreement and throughput of r1kit's math verifier vs math-verify's defaults, in one run.

Pairs: the labeled table of tests/test_math_verify.py, plus GSM8K and MATH-500 gold answers against
perturbed predictions (equivalent rewrites labeled True, altered values labeled False; labels of the
altered values are assumed, so a small share of them may be wrong either way). Data comes from
$R1KIT_DATA_DIR (default: ../shared/data beside the repo). Also prints r1kit's worst-case latency on
adversarial inputs against its deadline.

Throughput is printed twice: pairs per wall-clock second, and pairs per CPU-second summed over this
process and every process below it (r1kit's workers and forkserver; psutil comes with accelerate).
On a machine whose cores other jobs share, wall time moves with their load and the CPU figure does not;
report the load average printed with both.

    python benchmarks/math_verify.py            # all pairs
    python benchmarks/math_verify.py --limit 300 --workers 2
    python benchmarks/math_verify.py --pairs grader_pairs.jsonl   # an external labeled set instead

A ``--pairs`` file is JSON Lines with ``{"gold": ..., "pred": ..., "expected": true|false}`` per line and an
optional ``"source"`` (agreement is then also printed per source).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import resource
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
# This file is named like the library it measures: keep its folder off sys.path so that
# `import math_verify` (here and in forkserver workers) finds the library, not this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _data_dir() -> Path:
    return Path(os.environ.get("R1KIT_DATA_DIR", REPO.parent / "shared" / "data"))


def _jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def table_pairs() -> list[tuple[str, str, bool]]:
    spec = importlib.util.spec_from_file_location("_table", REPO / "tests" / "test_math_verify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [(pred, gold, expected) for gold, pred, expected in module.ALL_CASES]


def file_pairs(path: Path) -> dict[str, list[tuple[str, str, bool]]]:
    """Labeled pairs from a JSONL file, grouped by their optional ``source`` field."""
    sets: dict[str, list[tuple[str, str, bool]]] = {}
    for number, row in enumerate(_jsonl(path), 1):
        if not {"gold", "pred", "expected"} <= row.keys() or not isinstance(row["expected"], bool):
            raise SystemExit(f"{path}:{number}: each line needs \"gold\", \"pred\" and a boolean \"expected\"")
        sets.setdefault(str(row.get("source", path.stem)), []).append((str(row["pred"]), str(row["gold"]), row["expected"]))
    return sets


def _bump_digit(s: str, rng: random.Random) -> str | None:
    digits = [m.start() for m in re.finditer(r"\d", s)]
    if not digits:
        return None
    i = rng.choice(digits)
    return s[:i] + str((int(s[i]) + rng.randint(1, 8)) % 10) + s[i + 1 :]


def gsm8k_pairs(rng: random.Random, n: int) -> list[tuple[str, str, bool]]:
    rows = _jsonl(_data_dir() / "gsm8k" / "test.jsonl")[:n]
    pairs = []
    for row in rows:
        gold, raw = row["final_answer"], row["final_answer_raw"]
        value = int(gold)
        pairs += [
            (f"Step by step... so she has {raw} left.\n#### {raw}", gold, True),
            (f"<think>compute</think><answer>\\${value:,}</answer>", gold, True),
            (f"The final answer is $\\boxed{{{value}.0}}$", gold, True),
            (f"#### {value + rng.choice([-1, 1, 10])}", gold, False),
            (f"<think>compute</think><answer>{value * 10}</answer>", gold, False),
        ]
    return pairs


def math500_pairs(rng: random.Random, n: int) -> list[tuple[str, str, bool]]:
    rows = _jsonl(_data_dir() / "math500" / "test.jsonl")[:n]
    pairs = []
    for row in rows:
        gold = row["answer"]
        pairs.append((f"Thus the answer is $\\boxed{{{gold}}}$.", gold, True))
        rewrite = gold.replace("\\frac", "\\dfrac").replace("\\sqrt", "\\sqrt ").replace(" ", "")
        pairs.append((f"<answer>{rewrite}</answer>", gold, True))
        wrong = _bump_digit(gold, rng)
        if wrong is not None and wrong != gold:
            pairs.append((f"Thus the answer is $\\boxed{{{wrong}}}$.", gold, False))
    return pairs


def cpu_seconds() -> float:
    """CPU time (user + system) used so far by this process and every process below it (the verifier
    workers and their forkserver), including children they already reaped. Unlike wall time, this
    does not move when other jobs share the cores."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    total = own.ru_utime + own.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.NoSuchProcess:
            continue  # exited between listing and reading; its time shows up in its parent's children_*
        total += t.user + t.system + t.children_user + t.children_system
    return total


def _by_format(pairs) -> dict[str, list[int]]:
    """Indices of the pairs whose prediction is a bare answer and of those that are completions (read
    with the lenient ``any`` format, as math-verify's ``parse`` reads any text); r1kit asks the caller
    to say which, so the split is made here, outside the timed region."""
    from rewards.math import extract_answer

    groups: dict[str, list[int]] = {"bare": [], "any": []}
    for i, (pred, _, _) in enumerate(pairs):
        groups["any" if extract_answer(pred) is not None else "bare"].append(i)
    return groups


def _r1kit_pass(pairs, groups, workers: int, deadline_s: float) -> list[bool | None]:
    from rewards.math import verify_batch

    got: list[bool | None] = [None] * len(pairs)
    for fmt, indices in groups.items():
        verdicts = verify_batch([pairs[i][:2] for i in indices], answer_format=fmt, workers=workers,
                                deadline_s=deadline_s)
        for i, verdict in zip(indices, verdicts):
            got[i] = verdict
    return got


def run_r1kit(pairs, workers: int, deadline_s: float, warmup):
    import rewards.math
    from rewards.math import verify_batch

    # Start the pool outside the timed region: these pairs need sympy, so they reach every worker.
    verify_batch([(f"x^{i}", f"x*x^{i - 1}") for i in range(2, 2 + 2 * workers)], workers=workers)
    _r1kit_pass(warmup, _by_format(warmup), workers, deadline_s)
    # math-verify keeps no verdicts between calls: drop ours so that no warm-up pair is answered from cache.
    rewards.math._cache.clear()
    groups = _by_format(pairs)
    cpu, start = cpu_seconds(), time.perf_counter()
    got = _r1kit_pass(pairs, groups, workers, deadline_s)
    return got, time.perf_counter() - start, cpu_seconds() - cpu


def _math_verify_pass(pairs, wrap_gold: bool) -> list[bool]:
    from math_verify import parse, verify

    return [verify(parse(f"${gold}$" if wrap_gold else gold), parse(pred)) for pred, gold, _ in pairs]


def run_math_verify(pairs, wrap_gold: bool, warmup):
    _math_verify_pass(warmup, wrap_gold)
    cpu, start = cpu_seconds(), time.perf_counter()
    got = _math_verify_pass(pairs, wrap_gold)
    return got, time.perf_counter() - start, cpu_seconds() - cpu


def worst_latency(deadline_s: float, workers: int) -> float:
    from rewards.math import verify_batch

    spec = importlib.util.spec_from_file_location("_table", REPO / "tests" / "test_math_verify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    worst = 0.0
    for text in module.ADVERSARIAL.values():
        start = time.perf_counter()
        verify_batch([(text, "2")], answer_format="any", deadline_s=deadline_s, workers=workers)
        worst = max(worst, time.perf_counter() - start)
    return worst


def report(name: str, pairs, got, seconds: float, cpu: float) -> None:
    agree = sum((g is True) == want for g, (*_, want) in zip(got, pairs))
    timeouts = sum(g is None for g in got)
    print(
        f"{name:44s} agreement {agree / len(pairs):7.2%} ({agree}/{len(pairs)})  "
        f"{len(pairs) / seconds:8.1f} pairs/s  {len(pairs) / cpu:8.1f} pairs/CPU-s  timeouts {timeouts}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=500, help="rows taken from each of GSM8K and MATH-500")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--deadline", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show-disagreements", action="store_true")
    parser.add_argument("--cold", action="store_true", help="time both verifiers without a warm-up pass")
    parser.add_argument("--pairs", type=Path, help="labeled JSONL file to measure instead of the built-in pairs")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    if args.pairs is not None:
        sets = file_pairs(args.pairs)
    else:
        sets = {"table": table_pairs()}
        if (_data_dir() / "gsm8k").is_dir():
            sets["gsm8k"] = gsm8k_pairs(rng, args.limit)
            sets["math500"] = math500_pairs(rng, args.limit)
    allpairs = [p for pairs in sets.values() for p in pairs]
    print(
        f"{len(allpairs)} pairs ({', '.join(f'{k} {len(v)}' for k, v in sets.items())}); "
        f"r1kit workers={args.workers}, deadline={args.deadline}s; math-verify in-process, signal timeouts; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )

    # Both verifiers first check the same untimed warm-up pairs (the test table; none when it is the set
    # being measured): a trainer's verifier is long-lived, so steady-state throughput is what matters,
    # not the one-off cost of the LaTeX parser building its caches.
    warmup = [] if args.cold or "table" in sets else table_pairs()
    mine, mine_s, mine_cpu = run_r1kit(allpairs, args.workers, args.deadline, warmup)
    mv, mv_s, mv_cpu = run_math_verify(allpairs, wrap_gold=False, warmup=warmup)
    mv_wrapped, mvw_s, mvw_cpu = run_math_verify(allpairs, wrap_gold=True, warmup=warmup)
    for name, got, secs, cpu in [
        ("r1kit verify_batch", mine, mine_s, mine_cpu),
        ("math-verify defaults (gold as given)", mv, mv_s, mv_cpu),
        ("math-verify, gold wrapped in $...$", mv_wrapped, mvw_s, mvw_cpu),
    ]:
        report(name, allpairs, got, secs, cpu)
        offset = 0
        for set_name, pairs in sets.items():
            sub = got[offset : offset + len(pairs)]
            offset += len(pairs)
            agree = sum((g is True) == want for g, (*_, want) in zip(sub, pairs))
            print(f"    {set_name:32s} {agree / len(pairs):7.2%} ({agree}/{len(pairs)})")
    if args.show_disagreements:
        for (pred, gold, want), got, other in zip(allpairs, mine, mv):
            if (got is True) != want:
                print(f"  r1kit={got} math-verify={other} want={want}: gold={gold[:100]!r} pred={pred[-160:]!r}")
    print(
        f"r1kit throughput vs math-verify: wall {mv_s / mine_s:.1f}x (gold as given), {mvw_s / mine_s:.1f}x (wrapped); "
        f"per CPU-second {mv_cpu / mine_cpu:.1f}x (gold as given), {mvw_cpu / mine_cpu:.1f}x (wrapped); "
        f"load average now {os.getloadavg()[0]:.2f}"
    )
    print(
        f"r1kit worst-case latency on adversarial inputs: {worst_latency(1.0, args.workers):.3f} s "
        f"with deadline 1.0 s"
    )


if __name__ == "__main__":
    main()
