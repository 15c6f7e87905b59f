"""`r1kit sandbox run FILE [--stdin F] [--timeout S] [--memory MB] [--mode M] [--json]`.

Runs one Python file in the local sandbox, the same way code rewards run completions, e.g. to check
what a model-written program does, or that the sandbox works on this machine:

    r1kit sandbox run solution.py --stdin input.txt --timeout 5 --memory 256 --json

Exit code: 0 when the program ran to completion with exit code 0, 1 otherwise, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from r1kit.errors import UserError
from rewards.sandbox.local import MODES, LocalSandbox, SandboxConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1kit sandbox", description="Run code in the r1kit sandbox.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one Python file")
    run.add_argument("file", type=Path, help="Python source file to run")
    run.add_argument("--stdin", type=Path, help="file whose contents become the program's stdin")
    run.add_argument("--timeout", type=float, default=10.0, help="wall-clock limit in seconds (default 10)")
    run.add_argument("--memory", type=int, default=512, help="memory limit in MiB (default 512)")
    run.add_argument("--mode", choices=MODES, default="auto", help="isolation mode (default: bwrap if installed)")
    run.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return parser


def _read(path: Path, what: str) -> str:
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist or is not a file")
    return path.read_text(encoding="utf-8", errors="replace")


def sandbox_cli(argv: list[str]) -> int:
    """Entry point for `r1kit sandbox ...`; `argv` are the arguments after `sandbox`."""
    args = _parser().parse_args(argv)
    code = _read(args.file, "program file")
    stdin = _read(args.stdin, "--stdin file") if args.stdin else ""
    with LocalSandbox(SandboxConfig(mode=args.mode, workers=1)) as sandbox:
        result = sandbox.execute(code, stdin=stdin, timeout=args.timeout, memory_mb=args.memory)
        limits = sandbox.limits_in_force()
    if args.json:
        print(json.dumps({**dataclasses.asdict(result), "limits": limits}))
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        print(f"[sandbox] status={result.status} exit_code={result.exit_code} wall={result.wall_time:.3f}s",
              file=sys.stderr)  # fmt: skip
    return 0 if result.status == "ok" else 1
