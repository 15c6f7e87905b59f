"""Result records shared by the local and remote sandboxes."""

from __future__ import annotations

from dataclasses import dataclass

# ok: ran to the end (exit code 0 for `execute`; the test passed for `run_tests`).
# error: non-zero exit, uncaught exception, crash signal. timeout: wall or CPU deadline.
# oom: memory limit. output_limit: stdout+stderr over the cap. killed: SIGKILL not sent by the sandbox.
# wrong_answer: stdio test whose output differs. skipped: not run (stop on first failure).
STATUSES = ("ok", "error", "timeout", "oom", "output_limit", "killed", "wrong_answer", "skipped")


@dataclass(frozen=True)
class ExecutionResult:
    """One program run: `status` in ok | error | timeout | oom | output_limit | killed."""

    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    wall_time: float


@dataclass(frozen=True)
class TestResult:
    """One test of one program. `passed` is the verdict; `status` says why it failed."""

    __test__ = False  # not a pytest test class despite the name

    status: str
    passed: bool
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    wall_time: float = 0.0
