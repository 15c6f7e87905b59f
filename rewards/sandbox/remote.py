"""A remote backend with the local sandbox's interface, for users who scale execution out to a
Piston-style HTTP service (https://github.com/engineer-man/piston, API v2 `POST /api/v2/execute`).

Only the transport differs: each test becomes one remote execution (stdio tests send their input;
assert tests are split as locally by `asserts.plan_test`, and the program's side of each assert is
appended to the program after a small audit hook that prints the values, tagged with a random
marker, on stdout), and the verdict is computed here as locally. There is no audit-hook guard remotely: a
program can print fake records, but matching a literal expected value it never sees is no easier
than computing it, and a required assert recorded twice fails. The local sandbox stays the default;
isolation is then the service's responsibility.
"""

from __future__ import annotations

import inspect
import json
import secrets
import textwrap
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from rewards.sandbox import worker
from rewards.sandbox.asserts import judge_records, plan_test, shadowed_builtins
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
        shadowed = shadowed_builtins(program)
        for test in normalize_tests(tests, style):
            if stop_on_first_failure and results and not results[-1].passed:
                results.append(TestResult("skipped", False))
                continue
            if style == "stdio":
                r = self.execute(program, test["input"], timeout, memory_mb, files)
                passed, status, stderr = r.status == "ok", r.status, r.stderr
                if passed and r.stdout.split() != test["output"].split():
                    passed, status = False, "wrong_answer"
            else:
                plan, marker = plan_test(test["code"], shadowed), secrets.token_hex(8)
                code = f"{program}\n{_reporter(marker)}\n{plan.source}\n"
                r = self.execute(code, "", timeout, memory_mb, files)
                records = "".join(line[len(marker) :] + "\n" for line in r.stdout.splitlines() if line.startswith(marker))
                status, why = judge_records(plan, records) if r.status == "ok" else (r.status, "")
                passed, stderr = status == "ok", r.stderr + (f"\nr1kit sandbox: {why}\n" if why else "")
            results.append(TestResult(status, passed, r.exit_code, r.stdout, stderr, r.wall_time))
        return results

    def run_tests_batch(self, programs: list[str], tests: list, style: str = "assert", **kwargs) -> list[list[TestResult]]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(lambda p, t: self.run_tests(p, t, style, **kwargs), programs, tests))


def _reporter(marker: str) -> str:
    """Source installing, after the program, an audit hook that reports host-judged asserts remotely:
    the same marker events and serializer as the local guard (`worker.make_plain_json`), one
    `marker`-tagged line per executed assert on stdout."""
    serializer = textwrap.indent(inspect.getsource(worker.make_plain_json), "    ")
    return (
        "def _r1kit_install():\n    import _json, math, sys, types\n"
        f"    MAX_DEPTH, LEAF, MARKER = {worker.MAX_DEPTH}, {worker.LEAF!r}, {worker.MARKER + ' '!r}\n{serializer}\n"
        "    leaf, out, busy = make_plain_json(), sys.__stdout__, []\n"
        "    def hook(event, args):\n"
        "        if event != 'object.__getattr__' or args[1] != '__code__' or busy or type(args[0]) is not types.FunctionType:\n"
        "            return\n"
        "        busy.append(1)\n"
        "        try:\n"
        "            tags = [k for k in args[0].__code__.co_consts if type(k) is str and k.startswith(MARKER)]\n"
        "            if tags:\n"
        "                _, check_id, n = tags[0].split()\n"
        "                local = sys._getframe(1).f_locals\n"
        "                values = ','.join([leaf(local.get(LEAF + str(k))) for k in range(int(n))])\n"
        f"                out.write('\\n{marker}[' + check_id + ',[' + values + ']]\\n')\n"
        "                out.flush()\n"
        "        finally:\n"
        "            busy.pop()\n"
        "    sys.addaudithook(hook)\n"
        "_r1kit_install()\n"
    )
