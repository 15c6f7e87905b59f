"""Per-run memory and pids limits through cgroups, detected at run time (v1 or v2, whichever is writable).

Machines differ: some have cgroup v2 with delegated controllers, some a mixed v1/v2 setup where only
the v1 `memory` and `pids` hierarchies are writable. Nothing here assumes a layout: `detect()` looks
at /proc/self/mountinfo and /proc/self/cgroup, tries to create a private directory under this
process's own cgroup for each controller, and returns only what worked.

Every program gets a *fresh* cgroup: a pids cgroup reused across runs keeps charges of exiting tasks
for a while and starts refusing forks after a few dozen runs. Directories whose tasks have not quite
exited yet are removed later (`Cgroups.collect`).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Hierarchy:
    """One writable controller hierarchy: where our private directory lives and its file names."""

    controller: str  # "memory" or "pids"
    version: int  # 1 or 2
    base: Path  # our private directory, e.g. /sys/fs/cgroup/memory/<own cgroup>/r1kit-<pid>

    @property
    def limit_file(self) -> str:
        if self.controller == "pids":
            return "pids.max"
        return "memory.limit_in_bytes" if self.version == 1 else "memory.max"


class RunCgroup:
    """The cgroup(s) of one program run. Add the worker before the run, read OOM kills after it."""

    def __init__(self, dirs: list[tuple[Hierarchy, Path]]):
        self.dirs = dirs

    def add(self, pid: int) -> None:
        for _, d in self.dirs:
            (d / "cgroup.procs").write_text(str(pid))

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this cgroup (0 without a memory controller)."""
        for h, d in self.dirs:
            if h.controller == "memory":
                name = "memory.oom_control" if h.version == 1 else "memory.events"
                for line in (d / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        return 0

    def pids(self) -> list[int]:
        found: set[int] = set()
        for _, d in self.dirs:
            found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return sorted(found)


class Cgroups:
    """The writable memory/pids hierarchies of this machine, with a parking cgroup for idle workers."""

    def __init__(self, hierarchies: list[Hierarchy]):
        self.hierarchies = hierarchies
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._pending: list[Path] = []  # run cgroups to remove once their tasks are gone
        for h in hierarchies:
            (h.base / "park").mkdir(exist_ok=True)

    @property
    def controllers(self) -> set[str]:
        return {h.controller for h in self.hierarchies}

    def new_run(self, memory_bytes: int, max_pids: int) -> RunCgroup:
        n = next(self._ids)
        dirs = []
        for h in self.hierarchies:
            d = h.base / f"run-{n}"
            d.mkdir()
            limit = memory_bytes if h.controller == "memory" else max_pids
            (d / h.limit_file).write_text(str(limit))
            if h.controller == "memory" and h.version == 1 and (d / "memory.memsw.limit_in_bytes").exists():
                # Without this, the program could push pages to swap and exceed the limit.
                (d / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
            if h.controller == "memory" and h.version == 2:
                (d / "memory.swap.max").write_text("0")
            dirs.append((h, d))
        return RunCgroup(dirs)

    def park(self, pid: int) -> None:
        """Move a live worker to the park cgroup; a worker that died meanwhile has nothing to move."""
        for h in self.hierarchies:
            try:
                (h.base / "park" / "cgroup.procs").write_text(str(pid))
            except ProcessLookupError:  # killed but not yet reaped: poll() said alive, the kernel says gone
                return

    def release(self, run: RunCgroup) -> None:
        """Schedule a finished run's cgroup for removal (its tasks may still be exiting)."""
        with self._lock:
            self._pending += [d for _, d in run.dirs]
        self.collect()

    def collect(self) -> None:
        with self._lock:
            still = []
            for d in self._pending:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:  # EBUSY: exiting tasks still charged; retried on the next call
                    still.append(d)
            self._pending = still

    def close(self) -> None:
        """Remove every directory this object created (parked workers must be gone by now)."""
        with self._lock:
            self._pending += [h.base / "park" for h in self.hierarchies] + [h.base for h in self.hierarchies]
        deadline = time.monotonic() + 5.0
        self.collect()
        while self._pending and time.monotonic() < deadline:
            time.sleep(0.05)  # tasks that were just killed leave their cgroup asynchronously
            self.collect()


def detect(prefix: str = "r1kit-sandbox") -> Cgroups:
    """Find writable memory and pids controllers and create our private directories under them.

    Returns a `Cgroups` with zero, one or two hierarchies; a controller that cannot be used here
    (not mounted, read-only, not delegated) is simply absent and the sandbox falls back to rlimits.
    """
    name = f"{prefix}-{os.getpid()}-{next(_instance)}"
    found = []
    for controller in ("memory", "pids"):
        for version, mount, own in _candidates(controller):
            base = _make_base(version, mount, own, controller, name)
            if base is not None:
                found.append(Hierarchy(controller, version, base))
                break
    return Cgroups(found)


_instance = itertools.count()


def _candidates(controller: str) -> list[tuple[int, Path, str]]:
    """(version, mount point, this process's cgroup path) for hierarchies that carry `controller`."""
    own_v1, own_v2 = {}, None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            own_v2 = path
        for c in controllers.split(","):
            own_v1[c] = path
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, options = right.split(" ")[:3]
        fields = left.split(" ")
        root, mount = fields[3], Path(fields[4])
        if fstype == "cgroup" and controller in options.split(",") and controller in own_v1:
            out.append((1, mount, _relative(own_v1[controller], root)))
        elif fstype == "cgroup2" and own_v2 is not None:
            out.append((2, mount, _relative(own_v2, root)))
    return out


def _relative(path: str, mount_root: str) -> str:
    if mount_root != "/" and path.startswith(mount_root):
        path = path[len(mount_root) :]
    return path.lstrip("/")


def _make_base(version: int, mount: Path, own: str, controller: str, name: str) -> Path | None:
    parent = mount / own
    if version == 2:
        available = (parent / "cgroup.controllers").read_text().split() if parent.exists() else []
        if controller not in available:
            return None
    base = parent / name
    try:
        base.mkdir(exist_ok=True)
        if version == 2:
            # v2 controllers must be switched on for the children of our directory.
            (base / "cgroup.subtree_control").write_text(f"+{controller}")
        elif not (base / Hierarchy(controller, 1, base).limit_file).exists():
            base.rmdir()
            return None
    except OSError:
        if base.exists():
            base.rmdir()
        return None
    return base
