"""Every pipeline recipe under recipes/ (a top-level `stages:` list) passes `r1kit run --dry_run` checks:
each stage's keys through its typed config, reward names, local paths, data where it is local. Hub ids are
not looked up (the real-scale recipes name hub models this machine does not have)."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1kit.errors import UserError
from r1kit.pipeline import load_pipeline, validate

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml")
                   if any(line.startswith("stages:") for line in p.read_text().splitlines()))


def test_there_are_pipelines():
    names = {p.relative_to(ROOT / "recipes").as_posix() for p in PIPELINES}
    assert {"tiny/r1.yaml", "r1_zero/r1_zero.yaml", "r1_moe/r1.yaml", "distill/distill.yaml"} <= names


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.relative_to(ROOT / "recipes").as_posix())
def test_pipeline_recipe_validates(path, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # recipes name stage recipes relative to the repository root
    monkeypatch.setenv("MACHINE_RANK", "0")  # multi-node launchers read these
    monkeypatch.setenv("MAIN_IP", "10.0.0.1")
    pipe = load_pipeline(str(path.relative_to(ROOT)), run_dir=str(tmp_path / "run"))
    try:
        validate(pipe, hub=False)
    except UserError as e:
        if "is not available in this version" in str(e):  # a stage still being written: say which
            pytest.skip(str(e))
        raise
    head = path.read_text().lstrip()
    assert head.startswith("#") and "r1kit run " in head, f"{path}: open with what it does and the launch line"
    assert not (tmp_path / "run").exists()
