"""A seccomp-BPF deny-list filter, written as raw classic-BPF bytes (no libseccomp binding needed).

bwrap loads it with `--seccomp FD` right before it execs the sandboxed program, after
`PR_SET_NO_NEW_PRIVS`. The filter is defence in depth on top of the namespaces: it closes kernel
attack surface that a program which only needs to compute never touches (ptrace, mounts, new
namespaces, bpf, keyrings, perf, io_uring, userfaultfd) and makes network sockets fail with EPERM
instead of relying on the empty network namespace alone.

Syscall numbers come from the kernel's `arch/x86/entry/syscalls/syscall_64.tbl` and
`include/uapi/asm-generic/unistd.h` (aarch64); `tests/test_sandbox_seccomp.py` checks them against the
installed kernel headers when present.
"""

from __future__ import annotations

import errno
import platform
import struct

# linux/audit.h: AUDIT_ARCH_* identify the syscall ABI in seccomp_data.arch.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    "unshare", "setns",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "add_key", "request_key", "keyctl",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff",
)  # fmt: skip

SYSCALLS = {
    "x86_64": {
        "socket": 41, "clone": 56, "ptrace": 101, "pivot_root": 155, "chroot": 161, "mount": 165,
        "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "init_module": 175,
        "delete_module": 176, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250,
        "unshare": 272, "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304,
        "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313,
        "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435,
        "mount_setattr": 442,
    },
    "aarch64": {
        "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "unshare": 97, "kexec_load": 104,
        "init_module": 105, "delete_module": 106, "ptrace": 117, "reboot": 142, "socket": 198,
        "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220, "swapon": 224, "swapoff": 225,
        "perf_event_open": 241, "name_to_handle_at": 264, "open_by_handle_at": 265, "setns": 268,
        "process_vm_readv": 270, "process_vm_writev": 271, "finit_module": 273, "bpf": 280,
        "userfaultfd": 282, "kexec_file_load": 294, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
        "fsmount": 432, "fspick": 433, "clone3": 435, "mount_setattr": 442,
    },
}  # fmt: skip

# linux/filter.h opcodes.
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

# linux/seccomp.h return actions.
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000

# Offsets in struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6];}; args are read as their low
# 32 bits, which is where socket's domain and clone's flags live on little-endian machines.
_NR, _ARCH, _ARG0 = 0, 4, 16

_AF_UNIX = 1
# clone() flags that create namespaces: CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET.
_CLONE_NEW_MASK = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
# x86_64 x32-ABI syscalls have bit 30 set; they alias the same kernel code, so deny them wholesale.
_X32_BIT = 0x40000000


def build_filter(arch: str | None = None) -> bytes:
    """The filter program as `struct sock_filter[]` bytes, ready to hand to `bwrap --seccomp FD`.

    Denied syscalls fail with EPERM; `socket()` is allowed for AF_UNIX only; `clone()` with
    namespace flags fails with EPERM; `clone3()` fails with ENOSYS (its flags sit in a struct the
    filter cannot read, and ENOSYS makes libc fall back to `clone()`); a foreign syscall ABI kills.

    >>> prog = build_filter("x86_64")
    >>> len(prog) % 8, len(prog) // 8 < 256
    (0, True)
    """
    arch = arch or platform.machine()
    if arch not in SYSCALLS:
        raise OSError(f"no seccomp syscall table for architecture {arch!r} (supported: {sorted(SYSCALLS)})")
    nr = SYSCALLS[arch]
    # Each entry: (code, jt, jf, k) where jt/jf are label names or 0 (fall through).
    prog: list[tuple[int, object, object, int]] = [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 0, "kill", AUDIT_ARCH[arch]),
        (_LD_W_ABS, 0, 0, _NR),
    ]
    if arch == "x86_64":
        prog.append((_JGE_K, "eperm", 0, _X32_BIT))
    prog += [(_JEQ_K, "eperm", 0, nr[name]) for name in DENIED]
    prog += [
        (_JEQ_K, "enosys", 0, nr["clone3"]),
        (_JEQ_K, "socket", 0, nr["socket"]),
        (_JEQ_K, "clone", 0, nr["clone"]),
        (_RET_K, 0, 0, _RET_ALLOW),
        ("socket", _LD_W_ABS, 0, 0, _ARG0),
        (_JEQ_K, "allow", "eperm", _AF_UNIX),
        ("clone", _LD_W_ABS, 0, 0, _ARG0),
        (_JSET_K, "eperm", "allow", _CLONE_NEW_MASK),
        ("allow", _RET_K, 0, 0, _RET_ALLOW),
        ("eperm", _RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
        ("enosys", _RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
        ("kill", _RET_K, 0, 0, _RET_KILL_PROCESS),
    ]
    return _assemble(prog)


def _assemble(prog: list[tuple]) -> bytes:
    """Resolve label names to the relative jump offsets classic BPF uses (from the next instruction)."""
    labels, insns = {}, []
    for item in prog:
        if isinstance(item[0], str):
            labels[item[0]] = len(insns)
            item = item[1:]
        insns.append(item)
    out = []
    for i, (code, jt, jf, k) in enumerate(insns):
        jt_off = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf_off = labels[jf] - i - 1 if isinstance(jf, str) else jf
        assert 0 <= jt_off < 256 and 0 <= jf_off < 256, "BPF conditional jumps are 8-bit forward offsets"
        out.append(struct.pack("=HBBI", code, jt_off, jf_off, k))
    return b"".join(out)
