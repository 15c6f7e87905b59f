"""The verifier server: a fresh interpreter that owns the verifier workers (see `rewards.math.pool`).

Started by `rewards.math.pool.VerifierServer` as ``python -c`` with one end of a socket pair; it answers
``ready``, then serves batches ``(size, tasks, deadline)`` with a `VerifierPool` (whose forkserver imports
sympy and warms the parser). It exits, closing its workers, when the caller closes the socket or dies.
"""

from __future__ import annotations

from multiprocessing.connection import Connection

from rewards.math.pool import _READY, VerifierPool


def main(fd: int) -> None:
    conn = Connection(fd)
    conn.send(_READY)
    pool: VerifierPool | None = None
    try:
        while True:
            try:
                size, tasks, deadline_s = conn.recv()
            except EOFError:
                return
            if pool is None or pool.size != size:
                if pool is not None:
                    pool.close()
                pool = VerifierPool(size)
            conn.send(pool.run(tasks, deadline_s))
    finally:
        if pool is not None:
            pool.close()
