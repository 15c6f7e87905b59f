"""The in-sandbox worker: a pre-started Python that runs many programs, one at a time.

This file runs *inside* the sandbox (it is passed to `python -I -c`), so it uses the standard
library only and imports nothing from r1kit. It is PID 1 of its own PID namespace (bwrap
`--as-pid-1`), which gives three properties the host relies on:

- signals from sandboxed code to PID 1 are dropped by the kernel unless PID 1 installed a handler,
  so `kill(-1)`, `kill(getppid())` and SIGINT cannot take the worker down;
- orphans (double-forked daemons) are re-parented to the worker, which reaps them;
- `kill(-1, SIGKILL)` from the worker kills every other process in the namespace and nothing
  outside it: the tree-kill after each test. The kernel sends it under the tasklist lock, so a
  fork bomb cannot outrun it.

The worker is non-dumpable, so the programs it forks (same uid, no capabilities) cannot open its
`/proc/<pid>/mem` or fds to forge results; seccomp also denies ptrace and process_vm_*.

Protocol on two pipes (the worker's original stdin/stdout): 4-byte big-endian length + JSON.
host -> worker: {"op": "run", "code", "style", "tests", "timeout", "limits", "files", ...}
worker -> host: {"ready": ...} once, then one {"results": [...]} per job.
"""

import ctypes
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time
import traceback
import types

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
CHUNK = 65536


def read_msg(fd):
    header = _read_exact(fd, 4)
    if header is None:
        return None
    body = _read_exact(fd, struct.unpack(">I", header)[0])
    return json.loads(body.decode("utf-8"))


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def send_msg(fd, obj):
    body = json.dumps(obj).encode("utf-8")
    data = struct.pack(">I", len(body)) + body
    while data:
        data = data[os.write(fd, data) :]


def apply_seccomp(prog: bytes):
    """Load a classic-BPF seccomp filter (used by modes whose launcher cannot load one, e.g. unshare)."""
    libc = ctypes.CDLL(None, use_errno=True)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    fprog = SockFprog(len(prog) // 8, prog)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def set_dumpable(flag):
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, flag, 0, 0, 0)


class Worker:
    def __init__(self, config):
        self.scratch = config["scratch"]
        self.tmp_dirs = config["tmp_dirs"]
        self.env = config["env"]
        # Only a worker that is PID 1 of a fresh PID namespace may use kill(-1): outside one it
        # would signal every process of this uid on the host.
        self.own_pidns = config["pid_namespace"] and os.getpid() == 1

    def wipe(self):
        """Empty scratch and /tmp so nothing one program wrote is visible to the next."""
        for d in [self.scratch] + self.tmp_dirs:
            for name in os.listdir(d):
                path = os.path.join(d, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)

    def kill_all_others(self, leader):
        """Kill the test's whole process tree, including daemons that left its session."""
        if self.own_pidns:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass  # nothing else is alive
        else:
            try:
                os.killpg(leader, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.reap()

    def reap(self):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                if not self.own_pidns:
                    return
                time.sleep(0.0005)  # killed processes still exiting; all of them are ours to reap

    def run_job(self, job):
        self.wipe()
        for name, content in (job.get("files") or {}).items():
            path = os.path.join(self.scratch, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)
        code = job["code"]
        results = []
        for i, test in enumerate(job["tests"]):
            r = self.run_one(code, test, job)
            results.append(r)
            if job.get("stop_on_failure") and not r["passed"]:
                results += [{"status": "skipped", "passed": False} for _ in job["tests"][i + 1 :]]
                break
        return results

    def run_one(self, code, test, job):
        style, limits = job["style"], job["limits"]
        stdin_data = test.get("input", "") if style != "assert" else ""
        stdin_fd = os.memfd_create("stdin")
        os.write(stdin_fd, stdin_data.encode("utf-8"))
        os.lseek(stdin_fd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        nonce = os.urandom(16).hex()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            child(code, test, style, limits, self, stdin_fd, out_w, err_w, res_w, nonce)
        for fd in (stdin_fd, out_w, err_w, res_w):
            os.close(fd)
        status, captured, waitstatus = self.supervise(pid, {out_r: b"", err_r: b"", res_r: b""}, job)
        wall = time.monotonic() - start
        self.kill_all_others(pid)
        for fd in (out_r, err_r, res_r):
            os.close(fd)
        stdout = captured[out_r].decode("utf-8", "replace")
        stderr = captured[err_r].decode("utf-8", "replace")
        reached_end = captured[res_r] == nonce.encode()
        return classify(status, waitstatus, stdout, stderr, reached_end, test, style, wall)

    def supervise(self, pid, bufs, job):
        """Collect output until the child exits, the deadline passes or the output cap is hit."""
        cap = job["limits"]["max_output_bytes"]
        deadline = time.monotonic() + job["timeout"]
        pidfd = os.pidfd_open(pid)
        for fd in bufs:
            os.set_blocking(fd, False)
        status, waitstatus, open_fds = None, None, set(bufs)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    status = "timeout"
                    break
                ready, _, _ = select.select(list(open_fds) + [pidfd], [], [], remaining)
                for fd in ready:
                    if fd == pidfd:
                        continue
                    chunk = os.read(fd, CHUNK)
                    if not chunk:
                        open_fds.discard(fd)
                    bufs[fd] += chunk
                if sum(len(b) for b in bufs.values()) > cap:
                    status = "output_limit"
                    break
                if pidfd in ready:
                    for fd in open_fds:  # drain what the exited child left in the pipes
                        try:
                            bufs[fd] += os.read(fd, cap)
                        except BlockingIOError:
                            pass
                    break
        finally:
            os.close(pidfd)
        if status is not None:
            os.kill(pid, signal.SIGKILL)
        _, waitstatus = os.waitpid(pid, 0)
        for fd in bufs:
            bufs[fd] = bufs[fd][:cap]
        return status, bufs, waitstatus


def classify(status, waitstatus, stdout, stderr, reached_end, test, style, wall):
    exit_code = os.waitstatus_to_exitcode(waitstatus)
    if status is None:
        if exit_code == -signal.SIGXCPU:
            status = "timeout"
        elif exit_code == -signal.SIGKILL:
            status = "killed"  # the host turns this into "oom" when the memory cgroup OOM-killed it
        elif exit_code != 0 and stderr.rstrip().endswith("MemoryError"):
            status = "oom"
        elif exit_code != 0:
            status = "error"
        else:
            status = "ok"
    passed = status == "ok"
    if passed and style == "assert":
        # A program that calls exit(0) before the asserts ran has not passed.
        passed = reached_end
        status = "ok" if passed else "error"
    elif passed and style == "stdio":
        passed = stdout.split() == test.get("output", "").split()
        status = "ok" if passed else "wrong_answer"
    return {
        "status": status,
        "passed": passed,
        "exit_code": exit_code,
        "stdout": stdout,
        "stderr": stderr,
        "wall_time": wall,
    }


def child(code, test, style, limits, worker, stdin_fd, out_w, err_w, res_w, nonce):
    """Runs in the forked child: become a fresh, limited process, then execute the program."""
    try:
        os.setsid()
        os.dup2(stdin_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(res_w, 3)
        os.closerange(4, 1 << 16)  # the worker's control pipes must not be reachable from here
        set_dumpable(1)  # own /proc/self files again, to raise oom_score_adj below
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # the OOM killer must pick the program, never the worker
        set_rlimits(limits)
        os.chdir(worker.scratch)
        os.environ.clear()
        os.environ.update(worker.env)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # Fresh text streams on the redirected fds (they live until os._exit, hence no `with`).
        sys.stdin = open(0, "r", encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.argv = ["main.py"]
    except BaseException:  # noqa: BLE001 - a child that cannot set itself up must never run the program
        os._exit(70)
    exit_code, completed = execute_program(code, test, style)
    if completed and style == "assert":
        os.write(3, nonce.encode())
    os._exit(exit_code)


def set_rlimits(limits):
    cpu = int(limits["cpu_seconds"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["fsize_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["nofile"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.get("address_space_bytes"):  # only when no memory cgroup is available
        resource.setrlimit(resource.RLIMIT_AS, (limits["address_space_bytes"],) * 2)
    if limits.get("nproc"):  # only when no pids cgroup is available
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["nproc"],) * 2)


def execute_program(code, test, style):
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = module
    completed = False  # True only if the program and the test ran to their last line
    try:
        exec(compile(code, "main.py", "exec"), module.__dict__)  # noqa: S102 - running it is the point
        if style == "assert":
            exec(compile(test["code"], "test.py", "exec"), module.__dict__)  # noqa: S102
        exit_code, completed = 0, True
    except SystemExit as e:
        exit_code = _system_exit_code(e)
    except BaseException:  # noqa: BLE001 - any uncaught exception is the program's failure, reported
        traceback.print_exc()
        exit_code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        pass
    return exit_code, completed


def _system_exit_code(e):
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    print(e.code, file=sys.stderr)
    return 1


def main():
    # Take the control pipes off fds 0/1 so forked programs cannot inherit them.
    ctl_in, ctl_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1 a default disposition means "ignore"
    set_dumpable(0)
    config = read_msg(ctl_in)
    if config.get("seccomp_hex"):
        apply_seccomp(bytes.fromhex(config["seccomp_hex"]))
    worker = Worker(config)
    send_msg(ctl_out, {"ready": True, "pid": os.getpid(), "uid": os.getuid(), "own_pidns": worker.own_pidns})
    while True:
        job = read_msg(ctl_in)
        if job is None:
            return
        send_msg(ctl_out, {"results": worker.run_job(job)})


if __name__ == "__main__":
    main()
