"""Throughput of the r1kit sandbox vs an unsandboxed human-eval-style runner, in the same run.

Workload: HumanEval's 164 canonical solutions, each with its full `check(entry_point)` test.
- unsandboxed: openai/human-eval's approach, one forked `multiprocessing.Process` per program that
  `exec`s program + test, joined with a timeout, `--workers` programs at a time;
- r1kit: `LocalSandbox.run_tests_batch` with `--workers` pre-started bwrap workers (start-up excluded
  by one warm-up batch, as in RL where the pool lives for the whole run).

    python benchmarks/sandbox.py --workers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rewards.sandbox import LocalSandbox, SandboxConfig

DATA = Path(os.environ.get("R1KIT_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _exec_program(source: str, conn) -> None:
    exec(compile(source, "program.py", "exec"), {"__name__": "__main__"})  # noqa: S102 - the unsandboxed baseline
    conn.send(True)


def unsandboxed_check(program: str, test: str, timeout: float) -> bool:
    """human-eval's check_correctness without its reliability_guard: fork, exec, join with a timeout.

    Like human-eval, the verdict is a message from the child (a pipe here, a Manager list there), not
    the exit code: a fork from a pool thread can exit non-zero at interpreter shutdown."""
    recv, send = multiprocessing.Pipe(duplex=False)
    proc = multiprocessing.get_context("fork").Process(target=_exec_program, args=(program + "\n" + test, send))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
    send.close()
    passed = recv.poll() and recv.recv()
    recv.close()
    return bool(passed)


def run_unsandboxed(programs, tests, workers, timeout) -> tuple[float, int]:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ok = list(pool.map(lambda p, t: unsandboxed_check(p, t, timeout), programs, tests))
    return len(programs) / (time.perf_counter() - start), sum(ok)


def run_sandboxed(sandbox, programs, tests, timeout) -> tuple[float, int]:
    start = time.perf_counter()
    results = sandbox.run_tests_batch(programs, [[t] for t in tests], "assert", timeout=timeout)
    return len(programs) / (time.perf_counter() - start), sum(r[0].passed for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    rows = [json.loads(line) for line in (DATA / "humaneval" / "test.jsonl").read_text().splitlines()]
    programs = [r["prompt"] + r["canonical_solution"] for r in rows]
    tests = [f"{r['test']}\ncheck({r['entry_point']})\n" for r in rows]
    base, boxed = [], []
    with LocalSandbox(SandboxConfig(workers=args.workers)) as sandbox:
        run_sandboxed(sandbox, programs[: args.workers * 2], tests[: args.workers * 2], args.timeout)  # warm-up
        for _ in range(args.rounds):  # interleaved, so machine load hits both alike
            rate, ok_u = run_unsandboxed(programs, tests, args.workers, args.timeout)
            base.append(rate)
            rate, ok_s = run_sandboxed(sandbox, programs, tests, args.timeout)
            boxed.append(rate)
        limits = sandbox.limits_in_force()
    u, s = statistics.median(base), statistics.median(boxed)
    print(f"HumanEval canonical, {len(programs)} programs, {args.workers} workers, median of {args.rounds} rounds")
    print(f"  unsandboxed (fork per program): {u:7.1f} programs/s   passed {ok_u}/{len(programs)}")
    print(f"  r1kit sandbox {limits}: {s:7.1f} programs/s   passed {ok_s}/{len(programs)}")
    print(f"  ratio sandbox/unsandboxed: {s / u:.2f}x")


if __name__ == "__main__":
    main()
