"""A persistent pool of verifier worker processes with a per-item deadline.

Why processes: sympy can run for minutes (``10^{10^{10}}``) or overflow the C stack on deep nesting,
and Python cannot interrupt a thread. ``signal.alarm`` (math-verify's timeout) only works on the main
thread, so it breaks inside trainers and evaluators that verify from worker threads. Here each item gets
a deadline; a worker that misses it is killed (SIGKILL) and replaced, and the item's result is None.

Workers are started from a ``forkserver`` that has already imported sympy and warmed the LaTeX parser
(`rewards.math._warm_parser`), so a replacement costs a fork, not a 1.5 s import plus a cold parser, and no worker inherits the caller's threads (torch, vLLM) the way a plain
``fork`` would. As with any spawn/forkserver multiprocessing, a *script* that verifies at top level
must keep that code under ``if __name__ == "__main__":`` (workers re-import the main module).
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import resource
import threading
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any

from r1kit.errors import UserError

_HEAVY_MODULE = "rewards.math.equivalence"
# Imported by the forkserver after the heavy module: forked workers inherit a warm LaTeX parser.
_WARM_MODULE = "rewards.math._warm_parser"
_STARTUP_TIMEOUT_S = 120.0
# A pathological answer may try to build a gigantic integer; the cap turns that into a MemoryError
# (a plain False) long before it can take the machine's memory from the trainer.
_WORKER_MEMORY_BYTES = 3 * 1024**3
_READY = "ready"


def _worker_main(conn: Connection) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_WORKER_MEMORY_BYTES, _WORKER_MEMORY_BYTES))
    from rewards.math.equivalence import equivalent

    conn.send(_READY)
    while True:
        task = conn.recv()
        if task is None:
            return
        prediction, gold, rel_tol = task
        conn.send(equivalent(prediction, gold, rel_tol))


class _Worker:
    def __init__(self, ctx: Any):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="r1kit-verifier")
        self.process.start()
        child.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


def _await_ready(workers: list[_Worker]) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    for w in workers:
        try:
            ready = w.conn.poll(max(0.0, deadline - time.monotonic())) and w.conn.recv() == _READY
        except EOFError:
            # The usual cause: the caller is a script whose top-level code runs again in the worker.
            raise UserError(
                "a math-verifier worker process exited while starting. Workers re-import the main module, "
                "so a script that trains, evaluates or verifies must keep that code under "
                "`if __name__ == \"__main__\":`; its error, if any, is printed above."
            ) from None
        if not ready:
            raise RuntimeError(f"verifier worker did not start within {_STARTUP_TIMEOUT_S:.0f} s")


class VerifierPool:
    """``size`` worker processes; `run` is thread-safe (calls are serialized)."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a verifier pool needs at least one worker, got {size}")
        self.size = size
        self._ctx = mp.get_context("forkserver")
        # Only takes effect if this process's forkserver is not running yet; otherwise each worker
        # imports sympy itself once, which `_await_ready` keeps out of every item's deadline.
        self._ctx.set_forkserver_preload([_HEAVY_MODULE, _WARM_MODULE])
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    def _spawn(self, n: int) -> list[_Worker]:
        workers = [_Worker(self._ctx) for _ in range(n)]
        _await_ready(workers)
        return workers

    def run(self, tasks: list[tuple[str, str, float]], deadline_s: float) -> list[bool | None]:
        """Results in task order: True/False, or None for an item that missed ``deadline_s`` (counted
        from when a worker picked it up) or whose worker died."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the verifier pool was closed")
            return self._run_locked(tasks, deadline_s)

    def _run_locked(self, tasks: list[tuple[str, str, float]], deadline_s: float) -> list[bool | None]:
        results: list[bool | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        busy: dict[Connection, tuple[_Worker, int, float]] = {}
        while pending or busy:
            missing = min(len(pending), self.size - len(busy)) - len(self._idle)
            if missing > 0:
                self._idle.extend(self._spawn(missing))
            while pending and self._idle:
                worker, index = self._idle.pop(), pending.popleft()
                try:
                    worker.conn.send(tasks[index])
                except (BrokenPipeError, ConnectionResetError):
                    # An idle worker died (killed from outside): replace it and retry the item.
                    worker.kill()
                    pending.appendleft(index)
                    continue
                busy[worker.conn] = (worker, index, time.monotonic() + deadline_s)
            if not busy:
                continue
            next_deadline = min(d for _, _, d in busy.values())
            for conn in wait(list(busy), timeout=max(0.0, next_deadline - time.monotonic())):
                worker, index, _ = busy.pop(conn)  # type: ignore[index]
                try:
                    results[index] = conn.recv()  # type: ignore[union-attr]
                    self._idle.append(worker)
                except EOFError:
                    worker.kill()  # it crashed (e.g. C stack overflow): the item stays None
            now = time.monotonic()
            for conn, (worker, _index, deadline) in list(busy.items()):
                if deadline <= now:
                    del busy[conn]
                    worker.kill()
        return results

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for worker in self._idle:
                try:
                    worker.conn.send(None)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # already gone; kill() below only reaps it
                worker.process.join(timeout=1.0)
                if worker.process.is_alive():
                    worker.kill()
            self._idle.clear()


_POOL: VerifierPool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool(size: int) -> VerifierPool:
    """The process-wide pool, created on first use (never at import) and closed at exit."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.size != size:
            if _POOL is not None:
                _POOL.close()
            else:
                atexit.register(_close_shared_pool)
            _POOL = VerifierPool(size)
        return _POOL


def _close_shared_pool() -> None:
    if _POOL is not None:
        _POOL.close()
