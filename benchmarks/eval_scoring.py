"""Score-only throughput of `r1kit eval` per benchmark, against peers measured in the same run.

Workloads (files written to a temp dir, then scored by `evals.evaluate.score_only`: read and check the
predictions file, load the benchmark, score, write results.json and the details; the report is not drawn):
- HumanEval: the 164 canonical solutions as predictions. Peers: the r1kit sandbox alone on the same
  programs (`run_tests_batch`, no file, no details) and a fresh interpreter per program, as
  openai/human-eval runs them (a forked process per program, unsandboxed: `benchmarks/sandbox.py`).
- MBPP: the 257 reference programs (no peer).
- MATH-500, GSM8K, AIME 24/25: four completions per item in the R1 format (`<think>` + `\\boxed{}`): the
  gold, the gold respelled (`\\dfrac`, spaces), another item's answer, and no answer. Peer (MATH-500 and
  GSM8K): math-verify's `verify(parse(gold), parse(completion))` on the same completions, one process.

The sandbox and the verifier pool are started before timing (they live for a whole evaluation), and
r1kit's verdict cache is cleared before every round: math-verify keeps none. Rounds are interleaved, so
load from other jobs on the machine hits both sides alike; medians are printed.

    OMP_NUM_THREADS=1 python benchmarks/eval_scoring.py --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/math_verify.py would shadow the math_verify package: import the sibling runner by path instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
_spec = importlib.util.spec_from_file_location("_sandbox_benchmark", _HERE / "sandbox.py")
_sandbox_benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sandbox_benchmark)
run_unsandboxed = _sandbox_benchmark.run_unsandboxed  # the human-eval-style runner: a fork per program

import rewards.math
from evals.evaluate import EvalConfig, score_only
from evals.tasks import get_task, load_task_rows
from rewards.sandbox import default_sandbox

MATH_BENCHES = ("math500", "gsm8k", "aime24", "aime25")


def math_completions(rows: list[dict]) -> list[list[str]]:
    golds = [r["answer"] for r in rows]
    out = []
    for i, gold in enumerate(golds):
        respelled = gold.replace("\\frac", "\\dfrac").replace(" ", "")
        other = golds[(i + 1) % len(golds)]
        out.append([f"<think>Work it out.</think>\nThe answer is $\\boxed{{{gold}}}$.",
                    f"<think>Again.</think>\nSo $\\boxed{{{respelled}}}$",
                    f"<think>Hmm.</think>\nThe answer is $\\boxed{{{other}}}$.",
                    "<think>I could not finish."])  # fmt: skip
    return out


def write_predictions(path: Path, rows: list[dict], completions: list[list[str]]) -> Path:
    path.write_text("".join(json.dumps({"id": r["id"], "completions": c}) + "\n" for r, c in zip(rows, completions)))
    return path


def time_score_only(bench: str, preds: Path, out: Path) -> tuple[float, dict]:
    rewards.math._cache.clear()
    cfg = EvalConfig(predictions=str(preds), benchmarks=[bench], output_dir=str(out))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        score_only(cfg)
    seconds = time.perf_counter() - start
    return seconds, json.loads((out / "results.json").read_text())[bench]


def time_math_verify(rows: list[dict], completions: list[list[str]]) -> tuple[float, float]:
    from math_verify import parse, verify

    start = time.perf_counter()
    verdicts = [verify(parse(f"${r['answer']}$"), parse(c)) for r, cs in zip(rows, completions) for c in cs]
    seconds = time.perf_counter() - start
    per_item = [statistics.fmean(verdicts[i * 4 : i * 4 + 4]) for i in range(len(rows))]
    return seconds, statistics.fmean(per_item)


def bench_humaneval(tmp: Path, rounds: int, workers: int) -> None:
    rows = load_task_rows(get_task("humaneval"))
    preds = tmp / "humaneval.jsonl"
    preds.write_text("".join(json.dumps({"id": r["id"], "prediction": r["canonical_solution"]}) + "\n" for r in rows))
    programs = [r["prompt"] + r["canonical_solution"] for r in rows]
    tests = [f"{r['test']}\ncheck({r['entry_point']})\n" for r in rows]
    sandbox = default_sandbox()
    sandbox.run_tests_batch(programs[:4], [[t] for t in tests[:4]], "assert", timeout=10.0)  # start the workers
    ours, alone, fresh = [], [], []
    for _ in range(rounds):
        seconds, m = time_score_only("humaneval", preds, tmp / "out_he")
        ours.append(len(rows) / seconds)
        start = time.perf_counter()
        sandbox.run_tests_batch(programs, [[t] for t in tests], "assert", timeout=10.0)
        alone.append(len(rows) / (time.perf_counter() - start))
        rate, ok = run_unsandboxed(programs, tests, workers, 10.0)
        fresh.append(rate)
    o, a, f = statistics.median(ours), statistics.median(alone), statistics.median(fresh)
    print(f"humaneval  {len(rows):4d} items  r1kit eval score-only {o:7.1f} items/s (pass@1 {m['pass@1']:.4f})  "
          f"sandbox alone {a:7.1f}/s ({o / a:.2f}x)  fresh interpreter per program {f:7.1f}/s ({o / f:.2f}x, {ok} passed)")  # fmt: skip


def bench_mbpp(tmp: Path, rounds: int) -> None:
    rows = load_task_rows(get_task("mbpp"))
    preds = tmp / "mbpp.jsonl"
    preds.write_text("".join(json.dumps({"id": r["id"], "prediction": r["code"]}) + "\n" for r in rows))
    rates = []
    for _ in range(rounds):
        seconds, m = time_score_only("mbpp", preds, tmp / "out_mbpp")
        rates.append(len(rows) / seconds)
    print(f"mbpp       {len(rows):4d} items  r1kit eval score-only {statistics.median(rates):7.1f} items/s "
          f"(pass@1 {m['pass@1']:.4f}, {sum(len(r['test_list']) for r in rows)} asserts)")  # fmt: skip


def bench_math(bench: str, tmp: Path, rounds: int) -> None:
    rows = load_task_rows(get_task(bench))
    completions = math_completions(rows)
    preds = write_predictions(tmp / f"{bench}.jsonl", rows, completions)
    time_score_only(bench, preds, tmp / f"out_{bench}")  # starts the verifier pool
    ours, peer = [], []
    for _ in range(rounds):
        seconds, m = time_score_only(bench, preds, tmp / f"out_{bench}")
        ours.append(len(rows) / seconds)
        if bench in ("math500", "gsm8k"):
            seconds, peer_pass1 = time_math_verify(rows, completions)
            peer.append(len(rows) / seconds)
    o = statistics.median(ours)
    line = f"{bench:10s} {len(rows):4d} items x 4  r1kit eval score-only {o:7.1f} items/s (pass@1 {m['pass@1']:.4f})"
    if peer:
        p = statistics.median(peer)
        line += f"  math-verify {p:7.1f} items/s (pass@1 {peer_pass1:.4f})  ratio {o / p:.2f}x"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="for the fork-per-program peer")
    parser.add_argument("--only", nargs="+", choices=["humaneval", "mbpp", *MATH_BENCHES])
    args = parser.parse_args()
    only = set(args.only or ["humaneval", "mbpp", *MATH_BENCHES])
    print(f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}, median of {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "humaneval" in only:
            bench_humaneval(tmp, args.rounds, args.workers)
        if "mbpp" in only:
            bench_mbpp(tmp, args.rounds)
        for bench in MATH_BENCHES:
            if bench in only:
                bench_math(bench, tmp, args.rounds)


if __name__ == "__main__":
    main()
