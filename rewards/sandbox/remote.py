"""A remote backend with the local sandbox's interface, for users who scale execution out to a
Piston-style HTTP service (https://github.com/engineer-man/piston, API v2 `POST /api/v2/execute`).

Only the transport differs: each test becomes one remote execution (assert tests are appended to the
program; stdio tests send their input), and the verdict is computed here exactly as locally. The
local sandbox stays the default; isolation is then the service's responsibility.
"""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from rewards.sandbox.results import ExecutionResult, TestResult

# Piston reports these as `status` (or `signal`) when it stopped a run.
_PISTON_STATUS = {"TO": "timeout", "OL": "output_limit", "EL": "output_limit", "SG": "error", "RE": "error"}


class PistonSandbox:
    """`execute` / `run_tests` / `run_tests_batch` against a Piston server at `url`."""

    def __init__(self, url: str, language: str = "python", version: str = "*", workers: int = 8,
                 request_timeout: float = 60.0):  # fmt: skip
        self.url = url.rstrip("/") + "/api/v2/execute"
        self.language, self.version, self.workers = language, version, workers
        self.request_timeout = request_timeout

    def execute(self, code: str, stdin: str = "", timeout: float = 10.0, memory_mb: int = 512,
                files: dict | None = None) -> ExecutionResult:  # fmt: skip
        payload = {
            "language": self.language,
            "version": self.version,
            "files": [{"name": "main.py", "content": code}]
            + [{"name": n, "content": c} for n, c in (files or {}).items()],
            "stdin": stdin,
            "run_timeout": int(timeout * 1000),
            "run_memory_limit": memory_mb << 20,
        }
        request = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.request_timeout) as response:
            run = json.load(response)["run"]
        status = _PISTON_STATUS.get(run.get("status") or "", "ok" if run.get("code") == 0 else "error")
        if run.get("signal") == "SIGKILL" and status == "error":
            status = "killed"
        return ExecutionResult(status, run.get("code"), run.get("stdout", ""), run.get("stderr", ""),
                               float(run.get("wall_time") or 0) / 1000)  # fmt: skip

    def run_tests(self, program: str, tests, style: str = "assert", timeout: float = 5.0, memory_mb: int = 512,
                  stop_on_first_failure: bool = False, files: dict | None = None) -> list[TestResult]:  # fmt: skip
        from rewards.sandbox.local import normalize_tests

        results: list[TestResult] = []
        for test in normalize_tests(tests, style):
            if stop_on_first_failure and results and not results[-1].passed:
                results.append(TestResult("skipped", False))
                continue
            code = program + "\n" + test["code"] if style == "assert" else program
            r = self.execute(code, test.get("input", ""), timeout, memory_mb, files)
            passed = r.status == "ok"
            status = r.status
            if passed and style == "stdio" and r.stdout.split() != test["output"].split():
                passed, status = False, "wrong_answer"
            results.append(TestResult(status, passed, r.exit_code, r.stdout, r.stderr, r.wall_time))
        return results

    def run_tests_batch(self, programs: list[str], tests: list, style: str = "assert", **kwargs) -> list[list[TestResult]]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda p, t: self.run_tests(p, t, style, **kwargs), programs, tests))
