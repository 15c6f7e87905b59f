"""A local code-execution sandbox for model-written programs (no cloud service).

    from rewards.sandbox import execute, run_tests
    execute("print(input()[::-1])", stdin="abc").stdout          # 'cba\\n'
    run_tests("def f(x): return x + 1", ["assert f(1) == 2"])    # [TestResult(status='ok', passed=True, ...)]

The module-level functions share one `LocalSandbox` created on first use (closed at exit); build your
own `LocalSandbox(SandboxConfig(...))` to pick the mode, the number of parallel workers or the limits.
`PistonSandbox` offers the same methods against a Piston-style HTTP service for scaling out.
How it isolates programs, and what it does not protect against: docs/sandbox.md.
"""

from __future__ import annotations

import atexit
import threading

from rewards.sandbox.cli import sandbox_cli
from rewards.sandbox.local import LocalSandbox, SandboxConfig, SandboxError, normalize_tests
from rewards.sandbox.remote import PistonSandbox
from rewards.sandbox.results import ExecutionResult, TestResult

__all__ = [
    "ExecutionResult", "LocalSandbox", "PistonSandbox", "SandboxConfig", "SandboxError", "TestResult",
    "default_sandbox", "execute", "execute_batch", "normalize_tests", "run_tests", "run_tests_batch", "sandbox_cli",
]  # fmt: skip

_default: LocalSandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> LocalSandbox:
    """The shared sandbox behind the module-level functions, started on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = LocalSandbox()
            atexit.register(_default.close)
        return _default


def execute(code: str, stdin: str = "", timeout: float = 10.0, memory_mb: int = 512,
            files: dict | None = None) -> ExecutionResult:  # fmt: skip
    """Run one program in the default sandbox. See `LocalSandbox.execute`."""
    return default_sandbox().execute(code, stdin, timeout, memory_mb, files)


def run_tests(program: str, tests, style: str = "assert", **kwargs) -> list[TestResult]:
    """Run all tests of one program in the default sandbox. See `LocalSandbox.run_tests`."""
    return default_sandbox().run_tests(program, tests, style, **kwargs)


def run_tests_batch(programs: list[str], tests: list, style: str = "assert", **kwargs) -> list[list[TestResult]]:
    """Many programs in parallel in the default sandbox. See `LocalSandbox.run_tests_batch`."""
    return default_sandbox().run_tests_batch(programs, tests, style, **kwargs)


def execute_batch(codes: list[str], stdins: list[str] | None = None, **kwargs) -> list[ExecutionResult]:
    """Many `execute` calls in parallel in the default sandbox."""
    return default_sandbox().execute_batch(codes, stdins, **kwargs)
