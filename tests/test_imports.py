"""Layering: the stage folders rl/, sft/ and evals/ never import each other, and rewards/ imports none of them.

Shared code (generation engines, model loading, config blocks) lives in r1kit/, which every stage may import.
The check reads every import statement (function-local ones included) with `ast`, so nothing is executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("rl", "sft", "evals")
FORBIDDEN = {"rl": {"sft", "evals"}, "sft": {"rl", "evals"}, "evals": {"rl", "sft"}, "rewards": set(STAGES)}


def imported_packages(path: Path, package: str) -> set[tuple[str, int]]:
    """(top-level package, line) of every import in `path`; relative imports resolve inside `package`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(a.name.split(".")[0], node.lineno) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add((package if node.level else (node.module or "").split(".")[0], node.lineno))
    return found


def violations(root: Path) -> list[str]:
    bad = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            for name, line in imported_packages(path, package):
                if name in forbidden:
                    bad.append(f"{path.relative_to(root)}:{line} imports {name}")
    return bad


def test_stages_do_not_import_each_other():
    assert violations(REPO) == []


@pytest.mark.parametrize("package,source,caught", [
    ("rl", "from sft.pretrain import PretrainConfig\n", True),
    ("evals", "def f():\n    import rl.grpo\n", True),  # function-local imports count too
    ("rewards", "from rl import losses\n", True),
    ("sft", "from r1kit.generation import build_engine\nfrom rewards.registry import build_rewards\n", False),
    ("rl", "from . import losses\n", False),
])
def test_the_check_catches_a_cross_stage_import(tmp_path, package, source, caught):
    for p in FORBIDDEN:
        (tmp_path / p).mkdir()
    (tmp_path / package / "x.py").write_text(source)
    assert bool(violations(tmp_path)) == caught
