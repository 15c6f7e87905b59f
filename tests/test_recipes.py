"""Every recipe shipped in recipes/ parses into its stage's config."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1kit.config import load_config
from r1kit.configs import STAGES, stage_config_class

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))
# Pipeline recipes (`r1kit run`: a top-level `stages:` list) are checked in tests/test_pipeline_recipes.py.
STAGE_RECIPES = [p for p in RECIPES if "accelerate_configs" not in p.parts
                 and not any(line.startswith("stages:") for line in p.read_text().splitlines())]


def stage_of(path: Path) -> str:
    """`recipes/<setup>/<stage>[_variant].yaml` -> stage."""
    stem = path.stem
    for stage in sorted(STAGES, key=len, reverse=True):
        if stem == stage or stem.startswith(stage + "_"):
            return stage
    raise AssertionError(f"{path}: file name must start with a stage name ({', '.join(STAGES)})")


def test_there_are_recipes():
    assert STAGE_RECIPES, "recipes/ holds no stage recipes"


@pytest.mark.parametrize("path", STAGE_RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_recipe_parses(path):
    cls = stage_config_class(stage_of(path))
    # Paths are checked separately (tests/test_config.py): recipe models are built by earlier stages.
    cfg = load_config(cls, path, check_paths=False)
    assert type(cfg) is cls
    head = path.read_text().lstrip()
    assert head.startswith("#"), f"{path} should open with a comment saying what it does and how to launch it"
    assert "r1kit " in head or "accelerate launch" in head, f"{path}: give the launch command in the header"


@pytest.mark.parametrize("path", [p for p in RECIPES if "accelerate_configs" in p.parts], ids=lambda p: p.name)
def test_accelerate_configs_are_valid(path):
    import yaml

    cfg = yaml.safe_load(path.read_text())
    assert cfg["distributed_type"] in {"MULTI_GPU", "FSDP", "DEEPSPEED"}
    assert cfg["num_machines"] >= 1 and cfg["num_processes"] >= 1
    assert path.read_text().startswith("#") and "accelerate launch" in path.read_text()
