"""The local sandbox: a pool of pre-started, namespaced Python workers, one program at a time each.

Start-up is what makes a naive sandbox slow (bwrap + a fresh interpreter per program costs more than
running most test programs), so each slot keeps a worker alive (`worker.py`) and sends it programs
over a pipe. Isolation between programs that share a worker:

- every test runs in a fresh forked child of the worker, with fresh rlimits and its own session;
- after every test the worker, PID 1 of the sandbox's PID namespace, kills every other process in
  the namespace (daemons included) and reaps them;
- before every test the worker empties scratch, /tmp and /dev/shm (private, size-capped tmpfs) and
  puts the job's `files` back, and empties them again after the program's last test;
- expected outputs of stdio tests stay on the host, which compares stdout itself;
- the host moves the worker into a fresh memory+pids cgroup per program and out again afterwards,
  then checks that cgroup is empty; a worker that fails any step is thrown away, and every worker is
  replaced after `max_jobs_per_worker` programs. A worker that dies mid-program (e.g. OOM-killed
  because the program filled its tmpfs) turns the program's remaining tests into `oom`/`killed`.

Modes, chosen by `SandboxConfig.mode`:
- `bwrap` (default): user, PID, network, mount, IPC, UTS and cgroup namespaces; read-only /usr and
  /dev; size-capped tmpfs /tmp, /dev/shm and scratch; cleared environment; seccomp loaded by bwrap; run as host uid `nobody` when the
  caller is root, so even an escape lands in an unprivileged account.
- `unshare`: util-linux `unshare` with the same namespaces but no private filesystem view (the host
  filesystem is visible read-only-by-permission to uid `nobody`); seccomp is loaded by the worker.
- `none`: no namespaces. Refused as root; otherwise only with `allow_unsafe=True`, and it warns.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from r1kit.errors import UserError
from rewards.sandbox import cgroups, seccomp
from rewards.sandbox.asserts import Plan, judge_records, plan_test, shadowed_builtins
from rewards.sandbox.results import ExecutionResult, TestResult

NOBODY = 65534
SCRATCH = "/sandbox"
WORKER_SOURCE = Path(__file__).with_name("worker.py")
MODES = ("auto", "bwrap", "unshare", "none")


@dataclass(frozen=True)
class SandboxConfig:
    """Sandbox-wide settings; per-run timeout and memory are arguments of each call."""

    mode: str = "auto"
    workers: int = 0  # parallel slots; 0 = one per CPU core
    max_pids: int = 64
    max_output_bytes: int = 1 << 20  # stdout + stderr together, per test
    file_size_mb: int = 64  # RLIMIT_FSIZE: the largest file a program may write
    tmpfs_mb: int = 256  # size of each private tmpfs: /tmp, scratch (bwrap mode)
    shm_mb: int = 64  # size of the private /dev/shm (bwrap mode; multiprocessing needs a little)
    nofile: int = 256
    max_jobs_per_worker: int = 500
    python: str | None = None  # interpreter inside the sandbox; default: this one if reachable
    allow_unsafe: bool = False  # permit mode "none" (no namespaces) for non-root users
    startup_timeout: float = 20.0


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): a worker died or broke the protocol."""


def resolve_mode(config: SandboxConfig) -> str:
    """The mode to use: the configured one, checked, or the strongest available for "auto"."""
    if config.mode not in MODES:
        raise UserError(f"sandbox mode {config.mode!r} is unknown; use one of {', '.join(MODES)}")
    if config.mode in ("bwrap", "auto") and shutil.which("bwrap"):
        return "bwrap"
    if config.mode == "bwrap":
        raise UserError("sandbox mode 'bwrap' needs bubblewrap: install it (apt-get install bubblewrap)")
    if config.mode in ("unshare", "auto") and shutil.which("unshare"):
        return "unshare"
    if config.mode == "unshare":
        raise UserError("sandbox mode 'unshare' needs util-linux's unshare on PATH")
    if os.geteuid() == 0:
        raise UserError(
            "no namespace sandbox is available and running untrusted code without one as root is refused: "
            "install bubblewrap (apt-get install bubblewrap)"
        )
    if not config.allow_unsafe:
        raise UserError(
            "no namespace sandbox is available (install bubblewrap); pass allow_unsafe=True to run "
            "programs WITHOUT isolation"
        )
    warnings.warn(
        "r1kit sandbox mode 'none': programs run WITHOUT namespaces or filesystem isolation",
        RuntimeWarning,
        stacklevel=3,
    )
    return "none"


def _world_executable(path: str) -> bool:
    """Whether uid nobody can execute `path` (every directory on the way must be world-searchable)."""
    p = Path(path)
    if not p.exists() or os.stat(p).st_mode & 0o005 != 0o005:
        return False
    return all(os.stat(d).st_mode & 0o001 for d in p.parents)


def _interpreter(config: SandboxConfig, drop_to_nobody: bool) -> tuple[str, str]:
    """(python path, its prefix to bind read-only) usable inside the sandbox."""
    here = os.path.realpath(sys.executable)
    candidates = [config.python] if config.python else [here, "/usr/bin/python3"]
    for path in candidates:
        real = os.path.realpath(path)
        if os.path.exists(real) and (not drop_to_nobody or _world_executable(real)):
            if real == here:
                return real, sys.base_prefix
            out = subprocess.run([real, "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True, check=True)
            return real, out.stdout.strip()
    raise UserError(
        f"no Python interpreter usable by the sandbox user among {candidates}: install python3 in /usr "
        "or pass SandboxConfig(python=...) pointing at a world-readable interpreter"
    )


class _Worker:
    """One pre-started sandboxed worker process and its control pipes."""

    def __init__(self, mode: str, config: SandboxConfig, scratch_root: Path):
        self.mode, self.config, self.jobs, self.broken = mode, config, 0, False
        drop = os.geteuid() == 0
        python, prefix = _interpreter(config, drop)
        self.host_scratch = None
        if mode == "bwrap":
            argv, pass_fds, seccomp_in_worker = self._bwrap_argv(python, prefix)
            scratch, tmp_dirs = SCRATCH, ["/tmp", "/dev/shm"]
        else:
            self.host_scratch = Path(tempfile.mkdtemp(dir=scratch_root))
            if drop:
                os.chown(self.host_scratch, NOBODY, NOBODY)
            os.chmod(self.host_scratch, 0o700)
            argv, pass_fds, seccomp_in_worker = [python, "-I", "-B", "-c", WORKER_SOURCE.read_text()], (), True
            if mode == "unshare":
                argv = [
                    "unshare", "--user", f"--map-user={NOBODY if drop else os.getuid()}", "--pid", "--fork",
                    "--kill-child", "--mount", "--mount-proc", "--net", "--ipc", "--uts", *argv,
                ]  # fmt: skip
            scratch, tmp_dirs = str(self.host_scratch), []
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            pass_fds=pass_fds,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            user=NOBODY if drop else None,
            group=NOBODY if drop else None,
            extra_groups=[] if drop else None,
        )
        for fd in pass_fds:
            os.close(fd)
        self._send(
            {
                "scratch": scratch,
                "tmp_dirs": tmp_dirs,
                "pid_namespace": mode != "none",
                "seccomp_hex": seccomp.build_filter().hex() if seccomp_in_worker else "",
                "env": {
                    "PATH": "/usr/bin:/bin",
                    "HOME": scratch,
                    "TMPDIR": tmp_dirs[0] if tmp_dirs else scratch,
                    "LANG": "C.UTF-8",
                    "PYTHONHASHSEED": "0",
                },
            }
        )
        hello = self._recv(time.monotonic() + config.startup_timeout)
        if mode != "none" and not hello.get("own_pidns"):
            self.close()
            raise SandboxError(f"sandbox worker is not PID 1 of its own PID namespace: {hello}")
        self.host_pid = self._find_host_pid(hello["pid"]) if mode != "none" else self.proc.pid

    def _bwrap_argv(self, python: str, prefix: str) -> tuple[list[str], tuple[int, ...], bool]:
        tmpfs = str(self.config.tmpfs_mb << 20)
        argv = [
            "bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--as-pid-1", "--die-with-parent", "--new-session",
            "--clearenv", "--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        for top in ("/bin", "/lib", "/lib64", "/lib32", "/sbin"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        if not prefix.startswith("/usr/"):
            argv += ["--ro-bind", prefix, prefix]
        # bwrap's /dev is a tmpfs without a size cap that the sandbox user owns: /dev/shm gets its
        # own capped tmpfs, and /dev itself goes read-only (its device nodes are separate mounts).
        argv += [
            "--proc", "/proc", "--dev", "/dev",
            "--size", str(self.config.shm_mb << 20), "--tmpfs", "/dev/shm",
            "--size", tmpfs, "--tmpfs", "/tmp",
            "--size", tmpfs, "--tmpfs", SCRATCH,
            "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", SCRATCH,
        ]  # fmt: skip
        # bwrap reads the filter from an fd; a memfd avoids a file on disk.
        fd = os.memfd_create("r1kit-seccomp", 0)
        os.write(fd, seccomp.build_filter())
        os.lseek(fd, 0, os.SEEK_SET)
        argv += ["--seccomp", str(fd), python, "-I", "-B", "-c", WORKER_SOURCE.read_text()]
        return argv, (fd,), False

    def _find_host_pid(self, ns_pid: int) -> int:
        """The host pid of the worker (a descendant of the launcher whose innermost pid is `ns_pid`)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            todo = [self.proc.pid]
            while todo:
                pid = todo.pop()
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                except FileNotFoundError:
                    continue
                nspids = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
                if len(nspids) > 1 and int(nspids[-1]) == ns_pid:
                    return pid
                todo += [int(c) for c in children]
            time.sleep(0.01)
        raise SandboxError("could not find the sandbox worker's host pid")

    def _send(self, obj: dict) -> None:
        body = json.dumps(obj).encode("utf-8")
        try:
            self.proc.stdin.write(struct.pack(">I", len(body)) + body)
            self.proc.stdin.flush()
        except BrokenPipeError as e:
            raise SandboxError("sandbox worker exited") from e

    def _recv(self, deadline: float) -> dict:
        fd = self.proc.stdout.fileno()
        header = self._read_exact(fd, 4, deadline)
        return json.loads(self._read_exact(fd, struct.unpack(">I", header)[0], deadline))

    def _read_exact(self, fd: int, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise SandboxError("sandbox worker did not answer before the deadline")
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise SandboxError(f"sandbox worker exited (code {self.proc.poll()})")
            buf += chunk
        return bytes(buf)

    def run(self, job: dict, tests: list[dict], memory_bytes: int, host_cgroups: cgroups.Cgroups | None,
            stop_on_failure: bool, judge: Callable[[int, dict], dict]) -> list[dict]:  # fmt: skip
        """Run one program's tests in a fresh cgroup, one test per round trip.

        A worker that dies or stops answering is marked broken (the pool replaces it) and the tests it
        did not finish get status "oom" (the run's cgroup OOM-killed something) or "killed".
        """
        self.jobs += 1
        run_cg = host_cgroups.new_run(memory_bytes, self.config.max_pids + 1) if host_cgroups else None
        results, failure = [], None
        try:
            if run_cg:
                try:
                    run_cg.add(self.host_pid)
                except ProcessLookupError:  # the idle worker was killed from outside
                    raise SandboxError("worker died before the program started") from None
            self._send(job)
            for test in tests:
                if stop_on_failure and results and not results[-1]["passed"]:
                    break
                self._send({"test": test})
                # The worker enforces the test's deadline; this one only catches a wedged worker.
                raw = self._recv(time.monotonic() + job["timeout"] + 10.0)["result"]
                results.append(judge(len(results), raw))
            self._send({"end": True})
        except SandboxError as e:
            failure, self.broken = e, True
            self.proc.kill()
        finally:
            oom_kills = self._leave(run_cg, host_cgroups) if run_cg else 0
        if failure is not None:
            lost = {"status": "oom" if oom_kills else "killed", "passed": False, "exit_code": None,
                    "stdout": "", "stderr": f"r1kit sandbox: {failure}", "wall_time": 0.0}  # fmt: skip
            results.append(lost)
        if oom_kills:
            for r in results:
                if r["status"] == "killed":
                    r["status"] = "oom"
        return results

    def _leave(self, run_cg: cgroups.RunCgroup, host_cgroups: cgroups.Cgroups) -> int:
        """Move the worker out of the run's cgroup and remove it; returns the run's OOM-kill count."""
        if self.proc.poll() is None:
            host_cgroups.park(self.host_pid)
        oom_kills = run_cg.oom_kills()
        leftovers = [p for p in run_cg.pids() if p != self.host_pid]
        for pid in leftovers:  # every pid here belongs to this run: the cgroup was created for it
            with contextlib.suppress(ProcessLookupError):  # it exited between listing and killing
                os.kill(pid, signal.SIGKILL)
        host_cgroups.release(run_cg)
        if leftovers and not self.broken:
            self.broken = True
            raise SandboxError(f"processes {leftovers} outlived their program; worker discarded")
        return oom_kills

    @staticmethod
    def _wait_gone(pid: int | None, timeout: float = 5.0) -> None:
        """Wait until the worker has left the process table, so its cgroups can be removed."""
        deadline = time.monotonic() + timeout
        while pid and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.005)

    @property
    def reusable(self) -> bool:
        return not self.broken and self.proc.poll() is None and self.jobs < self.config.max_jobs_per_worker

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # bwrap --die-with-parent / unshare --kill-child take the namespace down
        self.proc.wait()
        self._wait_gone(getattr(self, "host_pid", None))
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except BrokenPipeError:  # unflushed bytes for a worker that is gone
                pass
        if self.host_scratch is not None:
            shutil.rmtree(self.host_scratch, ignore_errors=True)


class LocalSandbox:
    """A bounded pool of sandboxed workers. Thread-safe; use as a context manager or call `close()`."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self.mode = resolve_mode(self.config)
        self.workers = self.config.workers or os.cpu_count() or 1
        self.cgroups = cgroups.detect() if os.geteuid() == 0 else None
        self._scratch_root = Path(tempfile.mkdtemp(prefix="r1kit-sandbox-"))
        os.chmod(self._scratch_root, 0o711)  # uid nobody must reach its own scratch dir inside
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(self.workers)
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        # Workers are started from this one long-lived thread: bwrap --die-with-parent and unshare
        # --kill-child tie a worker's life to the *thread* that started it, and batch threads exit.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="r1kit-sandbox-spawn")

    def limits_in_force(self) -> dict[str, str]:
        """How each limit is enforced on this machine (for logs and the CLI's --json output)."""
        controllers = self.cgroups.controllers if self.cgroups else set()
        return {
            "mode": self.mode,
            "memory": "cgroup" if "memory" in controllers else "RLIMIT_AS",
            "pids": "cgroup" if "pids" in controllers else "RLIMIT_NPROC",
        }

    def __enter__(self) -> LocalSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._all = list(self._all), set()
        for w in workers:
            w.close()
        self._spawner.shutdown()
        if self.cgroups:
            self.cgroups.close()
        shutil.rmtree(self._scratch_root, ignore_errors=True)

    def _take(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            worker = self._spawner.submit(_Worker, self.mode, self.config, self._scratch_root).result()
            with self._lock:
                self._all.add(worker)
            return worker

    def _give_back(self, worker: _Worker, healthy: bool) -> None:
        if healthy and worker.reusable and not self._closed:
            self._idle.put(worker)
            return
        with self._lock:
            self._all.discard(worker)
        worker.close()

    def _job(self, code: str, tests: list[dict], style: str, timeout: float, memory_mb: int,
             files: dict | None, stop_on_failure: bool, judge: Callable[[int, dict], dict] | None = None,
             ) -> list[dict]:  # fmt: skip
        """Run `tests` (worker format: no expected outputs) of one program; one result per test run.

        `judge(i, result)` turns the worker's result for test i into the verdict (stdio compares stdout).
        """
        if self._closed:
            raise SandboxError("sandbox is closed")
        if timeout <= 0 or memory_mb <= 0:
            raise UserError(f"timeout ({timeout}) and memory_mb ({memory_mb}) must be positive")
        check_files(files or {}, self.config.tmpfs_mb)
        no_memcg = not (self.cgroups and "memory" in self.cgroups.controllers)
        no_pidcg = not (self.cgroups and "pids" in self.cgroups.controllers)
        limits = {
            "cpu_seconds": timeout,
            "fsize_bytes": self.config.file_size_mb << 20,
            "nofile": self.config.nofile,
            "max_output_bytes": self.config.max_output_bytes,
            # Fallbacks when a cgroup controller is missing: coarser (RLIMIT_AS counts virtual memory).
            "address_space_bytes": (memory_mb << 20) + (256 << 20) if no_memcg else 0,
            "nproc": self.config.max_pids if no_pidcg else 0,
        }
        job = {"code": code, "style": style, "timeout": timeout, "limits": limits, "files": files or {}}
        with self._slots:
            worker = self._take()
            healthy = False
            try:
                results = worker.run(job, tests, memory_mb << 20, self.cgroups, stop_on_failure,
                                     judge or (lambda i, r: r))  # fmt: skip
                healthy = not worker.broken
            finally:
                self._give_back(worker, healthy)
        return results

    def execute(self, code: str, stdin: str = "", timeout: float = 10.0, memory_mb: int = 512,
                files: dict | None = None) -> ExecutionResult:  # fmt: skip
        """Run one program with `stdin`; `files` ({relative path: text}) are placed in its scratch dir."""
        r = self._job(code, [{"input": stdin}], "program", timeout, memory_mb, files, False)[0]
        return ExecutionResult(r["status"], r["exit_code"], r["stdout"], r["stderr"], r["wall_time"])

    def run_tests(self, program: str, tests, style: str = "assert", timeout: float = 5.0, memory_mb: int = 512,
                  stop_on_first_failure: bool = False, files: dict | None = None) -> list[TestResult]:  # fmt: skip
        """Run every test of one program in one sandbox, each in a fresh child with its own `timeout`.

        style "assert": each test is Python source run after the program (it fails by raising).
        style "stdio": each test is {"input": str, "output": str} (or an (input, output) pair); it passes
        when stdout equals the expected output up to whitespace.
        """
        job_tests = normalize_tests(tests, style)
        if not job_tests:
            return []
        # Expected outputs never enter the sandbox: a program there could read them from memory.
        # stdio tests send their input only; assert tests send their asserts split by `plan_test`
        # (the program's side of each assert), and the host evaluates the rest on the reported values.
        if style == "stdio":
            sent = [{"input": t["input"]} for t in job_tests]
            judge = lambda i, r: judge_stdio(r, job_tests[i]["output"])
        else:
            shadowed = shadowed_builtins(program)
            plans = [plan_test(t["code"], shadowed) for t in job_tests]
            sent = [{"code": p.source} for p in plans]
            judge = lambda i, r: judge_asserts(r, plans[i])
        raw = self._job(program, sent, style, timeout, memory_mb, files, stop_on_first_failure, judge)
        raw += [{"status": "skipped", "passed": False} for _ in job_tests[len(raw) :]]
        return [TestResult(**{k: v for k, v in r.items() if k != "records"}) for r in raw]

    def run_tests_batch(self, programs: list[str], tests: list, style: str = "assert", **kwargs) -> list[list[TestResult]]:
        """`run_tests` for many programs (tests[i] belongs to programs[i]), across all worker slots."""
        if len(programs) != len(tests):
            raise UserError(f"{len(programs)} programs but {len(tests)} test lists: give one test list per program")
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda p, t: self.run_tests(p, t, style, **kwargs), programs, tests))

    def execute_batch(self, codes: list[str], stdins: list[str] | None = None, **kwargs) -> list[ExecutionResult]:
        """`execute` for many programs in parallel, bounded by the number of worker slots."""
        stdins = stdins if stdins is not None else [""] * len(codes)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda c, s: self.execute(c, s, **kwargs), codes, stdins))


def normalize_tests(tests, style: str) -> list[dict]:
    """Tests in the worker's format: [{"code": src}] for assert, [{"input", "output"}] for stdio.

    >>> normalize_tests(["assert f(1) == 2"], "assert")
    [{'code': 'assert f(1) == 2'}]
    >>> normalize_tests([("1 2", "3")], "stdio")
    [{'input': '1 2', 'output': '3'}]
    """
    if style == "assert":
        return [{"code": t} if isinstance(t, str) else {"code": t["code"]} for t in tests]
    if style == "stdio":
        out = []
        for t in tests:
            inp, exp = (t["input"], t["output"]) if isinstance(t, dict) else t
            out.append({"input": str(inp), "output": str(exp)})
        return out
    raise UserError(f"test style {style!r} is unknown; use 'assert' or 'stdio'")


def judge_asserts(result: dict, plan: Plan) -> dict:
    """An assert test passes when the guard vouched for it (status ok) and the host, evaluating each
    assert on the values the sandbox reported, finds every one true and every required one run once.

    >>> plan = plan_test("assert f(2) == 4")
    >>> judge_asserts({"status": "ok", "passed": True, "stderr": "", "records": '[0,[[4]]]\\n'}, plan)["passed"]
    True
    >>> judge_asserts({"status": "ok", "passed": True, "stderr": "", "records": '[0,[{"bad":"x"}]]\\n'}, plan)["status"]
    'wrong_answer'
    >>> judge_asserts({"status": "ok", "passed": True, "stderr": "", "records": ""}, plan)["status"]
    'error'
    """
    if result["status"] != "ok":
        return result
    status, why = judge_records(plan, result.get("records", ""))
    if status == "ok":
        return result
    return {**result, "passed": False, "status": status, "stderr": result["stderr"] + f"\nr1kit sandbox: {why}\n"}


def judge_stdio(result: dict, expected: str) -> dict:
    """A stdio test passes when the program exited cleanly and its stdout matches up to whitespace.

    >>> judge_stdio({"status": "ok", "passed": True, "stdout": "3 \\n"}, "3")["passed"]
    True
    >>> judge_stdio({"status": "ok", "passed": True, "stdout": "4\\n"}, "3")["status"]
    'wrong_answer'
    """
    if result["status"] != "ok":
        return result
    passed = result["stdout"].split() == expected.split()
    return {**result, "passed": passed, "status": "ok" if passed else "wrong_answer"}


def check_files(files: dict, tmpfs_mb: int) -> None:
    """`files` must map relative paths inside scratch (no "..", no absolute paths) to text.

    >>> check_files({"data/in.txt": "1 2"}, 256)
    >>> check_files({"../x": ""}, 256)
    Traceback (most recent call last):
    ...
    r1kit.errors.UserError: files key '../x' must be a relative path inside the scratch dir (no '..', not absolute, no NUL)
    """
    total = 0
    for name, content in files.items():
        parts = name.split("/") if isinstance(name, str) else []
        if not parts or name.startswith("/") or "\0" in name or any(p in ("", ".", "..") for p in parts):
            raise UserError(
                f"files key {name!r} must be a relative path inside the scratch dir (no '..', not absolute, no NUL)"
            )
        if not isinstance(content, str):
            raise UserError(f"files[{name!r}] must be text (str), got {type(content).__name__}")
        total += len(content.encode("utf-8"))
    if total > tmpfs_mb << 20:
        raise UserError(f"files total {total} bytes, more than the {tmpfs_mb} MiB scratch: raise SandboxConfig.tmpfs_mb")
