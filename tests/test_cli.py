"""The `r1kit` command: help, dispatch, user errors exit 2 without a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from r1kit.cli import COMMANDS, main


def run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "r1kit.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_stage(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("build-tiny", "pretrain", "sft", "grpo", "distill", "eval", "run", "data", "sandbox"):
        assert name in out and name in COMMANDS


def test_unknown_command_exits_2_with_suggestion():
    r = run("grop")
    assert r.returncode == 2 and "unknown command 'grop'" in r.stderr and "Did you mean 'grpo'" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("cmd", [c for c, (target, _) in COMMANDS.items() if target])
def test_each_implemented_command_has_help(cmd):
    r = run(cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()


def test_console_script_installed():
    # The script sits next to the interpreter running the tests (the venv's bin/).
    exe = shutil.which("r1kit", path=str(Path(sys.executable).parent))
    assert exe, "the r1kit console script is not installed (pip install -e .)"
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "commands:" in r.stdout


def test_data_list_shows_registry(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "gsm8k" in out and "openai/gsm8k" in out and "humaneval" in out
