"""After the tiny cold start, greedy held-out completions are well formatted and more often strictly correct.

Slow (CPU minutes): pretrains the tiny MoE policy as recipes/tiny/pretrain.yaml does (fewer steps), then runs
recipes/tiny/sft.yaml on it and reads the greedy probe (format and strict_accuracy rewards on 128 held-out
prompts) before and after SFT.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from r1kit.config import load_config
from sft.pretrain import PretrainConfig
from sft.pretrain import train as pretrain
from sft.sft import SFTConfig, train

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "tiny"


@pytest.mark.slow
def test_cold_start_learns_the_format_and_beats_the_base(tiny_dir, tmp_path):
    base = tmp_path / "pretrain"
    pretrain(load_config(PretrainConfig, RECIPES / "pretrain.yaml", {
        "model_name_or_path": str(tiny_dir / "policy"), "output_dir": str(base), "max_steps": 600,
        "eval_accuracy_examples": 0, "eval_steps": 0}))
    summary = train(load_config(SFTConfig, RECIPES / "sft.yaml", {
        "model_name_or_path": str(base), "output_dir": str(tmp_path / "sft")}))
    assert summary["probe/format_after"] >= 0.95, summary
    assert summary["probe/strict_accuracy_after"] > summary["probe/strict_accuracy_before"], summary
    assert summary["eval_loss_after"] < summary["eval_loss_before"], summary
