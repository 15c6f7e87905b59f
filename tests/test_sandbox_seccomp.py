"""The hand-written seccomp filter: syscall numbers match the kernel headers, and the BPF program is
well formed (every jump lands inside it, it ends in a return)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from rewards.sandbox import seccomp

HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}


@pytest.mark.parametrize("arch", sorted(HEADERS))
def test_syscall_numbers_match_kernel_headers(arch):
    header = HEADERS[arch]
    if not header.exists():
        pytest.skip(f"{header} not installed (linux-libc-dev)")
    defined = {name: nr for name, nr in re.findall(r"#define __NR_(\w+)\s+(\d+)", header.read_text())}
    for name, nr in seccomp.SYSCALLS[arch].items():
        assert int(defined[name]) == nr, f"{arch} {name}: header says {defined[name]}, table says {nr}"


@pytest.mark.parametrize("arch", sorted(seccomp.SYSCALLS))
def test_filter_is_well_formed(arch):
    prog = seccomp.build_filter(arch)
    insns = [struct.unpack("=HBBI", prog[i : i + 8]) for i in range(0, len(prog), 8)]
    assert insns[0] == (0x20, 0, 0, 4)  # first: load the arch
    assert insns[1][3] == seccomp.AUDIT_ARCH[arch]
    for i, (code, jt, jf, _) in enumerate(insns):
        if code & 0x07 == 0x05:  # BPF_JMP: both targets inside the program
            assert i + 1 + max(jt, jf) < len(insns)
    assert insns[-1][0] == 0x06  # ends with a return
    denied = {k for code, _, _, k in insns if code == 0x15}
    assert {seccomp.SYSCALLS[arch][n] for n in seccomp.DENIED} <= denied


def test_unknown_arch_is_an_error():
    with pytest.raises(OSError, match="riscv64"):
        seccomp.build_filter("riscv64")
