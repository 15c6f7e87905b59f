r"""A persistent pool of verifier worker processes with a per-item deadline.

Why processes: sympy can run for minutes (``10^{10^{10}}``) or overflow the C stack on deep nesting,
and Python cannot interrupt a thread. ``signal.alarm`` (math-verify's timeout) only works on the main
thread, so it breaks inside trainers and evaluators that verify from worker threads. Here each item gets
a deadline; a worker that misses it is killed (SIGKILL) and replaced, and the item's result is None.

Layout: the caller starts one *verifier server* (`rewards.math._server`) as a fresh interpreter with
``subprocess`` (``python -c``) and sends it batches over a socket. The server runs the pool: its workers
come from a multiprocessing ``forkserver`` that has already imported sympy and warmed the LaTeX parser
(`rewards.math._warm_parser`), so a worker, replacements for killed ones included, costs a fork of a
warm process, not a 1.5 s import plus a cold parser, and inherits no threads and no file descriptors
of anyone else's.

Why the server: spawn and forkserver re-import the *caller's* main module in every worker, so a script
that verified at top level without ``if __name__ == "__main__":`` ran its own code again in each worker
and failed. The server's main module is ``-c``, which multiprocessing never re-imports, so nothing here
depends on how the caller was started: a script without a main guard, a notebook, a thread. When the
caller exits or dies the server reads EOF and exits; its forkserver and workers follow (their pipes
close). A server killed from outside is restarted on the next call.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing as mp
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any

_HEAVY_MODULE = "rewards.math.equivalence"
# Imported by the forkserver after the heavy module: forked workers inherit a warm LaTeX parser.
_WARM_MODULE = "rewards.math._warm_parser"
_STARTUP_TIMEOUT_S = 120.0
# A pathological answer may try to build a gigantic integer; the cap turns that into a MemoryError
# (a plain False) long before it can take the machine's memory from the trainer.
_WORKER_MEMORY_BYTES = 3 * 1024**3
_READY = "ready"
# The server gets the caller's import path, so that it imports the same `rewards` the caller does.
_PATH_ENV = "R1KIT_VERIFIER_SYS_PATH"
_BOOT = (
    f"import json, os, sys; sys.path[:0] = json.loads(os.environ.pop({_PATH_ENV!r})); "
    "from rewards.math._server import main; main(int(sys.argv[1]))"
)


def _worker_main(conn: Connection) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_WORKER_MEMORY_BYTES, _WORKER_MEMORY_BYTES))
    from rewards.math.equivalence import equivalent

    conn.send(_READY)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return  # the server is gone
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
            raise RuntimeError("a math-verifier worker exited while starting; its error is printed above") from None
        if not ready:
            raise RuntimeError(f"verifier worker did not start within {_STARTUP_TIMEOUT_S:.0f} s")


class VerifierPool:
    """``size`` worker processes started from a forkserver that has imported sympy and warmed the
    parser; runs inside the verifier server. `run` is thread-safe (calls are serialized)."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a verifier pool needs at least one worker, got {size}")
        self.size = size
        self._ctx = mp.get_context("forkserver")
        # Only takes effect if the forkserver is not running yet; otherwise each worker imports sympy
        # itself once, which `_await_ready` keeps out of every item's deadline.
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


class VerifierServer:
    """The caller's handle on a verifier server process running a `VerifierPool` of ``size`` workers.
    `run` is thread-safe; a server that died (killed from outside) is restarted on the next call."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a verifier pool needs at least one worker, got {size}")
        self.size = size
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, _PATH_ENV: json.dumps(sys.path)}
        self._process = subprocess.Popen([sys.executable, "-c", _BOOT, str(theirs.fileno())],
                                         pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(ours.detach())
        try:
            ready = self._conn.poll(_STARTUP_TIMEOUT_S) and self._conn.recv() == _READY
        except EOFError:
            ready = False
        if not ready:
            code = self._process.poll()
            self._stop()
            raise RuntimeError(f"the math-verifier server did not start (exit code {code}); its error is printed above")

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()  # the server reads EOF, closes its workers and exits
        if self._process is not None:
            try:
                self._process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = self._conn = None

    def run(self, tasks: list[tuple[str, str, float]], deadline_s: float) -> list[bool | None]:
        """Results in task order, as `VerifierPool.run` gives them."""
        with self._lock:
            for attempt in range(2):
                if self._conn is None:
                    self._start()
                try:
                    self._conn.send((self.size, tasks, deadline_s))  # type: ignore[union-attr]
                    # Every item has its deadline in the server; this bound only turns a server bug
                    # into an error instead of a trainer that waits forever.
                    rounds = -(-len(tasks) // self.size)
                    if not self._conn.poll(_STARTUP_TIMEOUT_S + rounds * (deadline_s + 1.0)):  # type: ignore[union-attr]
                        self._stop()
                        raise RuntimeError("the math-verifier server stopped answering; it was stopped and starts afresh on the next call")
                    return self._conn.recv()  # type: ignore[union-attr]
                except (EOFError, BrokenPipeError, ConnectionResetError):
                    self._stop()  # the server died; one fresh start, then the error propagates
                    if attempt == 1:
                        raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._stop()


_POOL: VerifierServer | None = None
_POOL_LOCK = threading.Lock()


def shared_pool(size: int) -> VerifierServer:
    """The process-wide verifier server, started on first use (never at import) and closed at exit."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.size != size:
            if _POOL is not None:
                _POOL.close()
            else:
                atexit.register(_close_shared_pool)
            _POOL = VerifierServer(size)
        return _POOL


def _close_shared_pool() -> None:
    if _POOL is not None:
        _POOL.close()
