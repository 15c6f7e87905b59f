"""Short cold-start SFT runs on the tiny MoE policy: held-out loss, router balancing, LoRA checkpoints and resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from r1kit.modeling.loading import load_model
from r1kit.modeling.lora import ROUTER_BIAS_FILE
from r1kit.modeling.moe import find_routers
from sft.sft import train
from tests.test_sft import make_cfg

pytestmark = pytest.mark.usefixtures("few_threads")


def logged(out, key: str) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def test_sft_lowers_heldout_loss(tiny_dir, tmp_path):
    summary = train(make_cfg(tiny_dir, tmp_path, max_steps=8, eval_max_samples=16, learning_rate=2e-3,
                             max_samples=64, packing=False, logging_steps=4))
    assert summary["eval_loss_after"] < summary["eval_loss_before"] - 0.5, summary
    assert (tmp_path / "config.json").is_file() and (tmp_path / "summary.json").is_file()
    assert logged(tmp_path, "loss")


def test_balancing_moves_router_load_toward_uniform(tiny_dir, tmp_path):
    # lr ~0: the weights stay put, so only the balancing bias changes routing (as in the GRPO test)
    cfg = make_cfg(tiny_dir, tmp_path, max_steps=10, learning_rate=1e-12, moe_bias_update_speed=0.05,
                   max_samples=40, packing=False, logging_steps=1)
    train(cfg)
    load = logged(tmp_path, "moe/max_over_mean")
    assert len(load) == 10 and min(load[-3:]) < load[0] - 0.1, load
    trained = find_routers(load_model(str(tmp_path)))
    assert all(r.e_score_correction_bias.abs().sum() > 0 for r in trained.values())


def test_lora_checkpoints_keep_router_biases_and_resume(tiny_dir, tmp_path):
    over = dict(use_peft=True, lora_r=4, max_steps=2, save_steps=1, save_total_limit=3, moe_bias_update_speed=0.05,
                learning_rate=1e-3, packing=False, resume_from_checkpoint="auto")
    train(make_cfg(tiny_dir, tmp_path, **over))
    for ckpt in ("checkpoint-1", "checkpoint-2"):
        assert (tmp_path / ckpt / "adapter_model.safetensors").is_file()
        assert (tmp_path / ckpt / ROUTER_BIAS_FILE).is_file()
    saved = load_file(tmp_path / ROUTER_BIAS_FILE)
    assert saved and all(v.abs().sum() > 0 for v in saved.values())
    assert all(torch.equal(saved[k], v) for k, v in load_file(tmp_path / "checkpoint-2" / ROUTER_BIAS_FILE).items())
    summary = train(make_cfg(tiny_dir, tmp_path, **{**over, "max_steps": 3}))
    assert summary["steps"] == 3 and "eval_loss_before" not in summary  # resumed, not restarted
    resumed = load_file(tmp_path / "checkpoint-3" / ROUTER_BIAS_FILE)
    assert any(not torch.equal(resumed[k], saved[k]) for k in saved)  # balancing went on from the saved biases
    assert all((resumed[k] - saved[k]).abs().max() <= 0.05 + 1e-6 for k in saved)  # one step away, not from zero
