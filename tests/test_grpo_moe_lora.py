"""MoE and LoRA wiring in the GRPO loop: adapters-only training, expert-bias balancing, routing replay."""

from __future__ import annotations

import pytest
import torch

from rl import grpo
from tests.test_grpo_loop import fixed_batch, letter_share_reward, make_cfg, norm_for  # noqa: F401 (fixture)

torch.set_num_threads(1)


def named(run) -> dict[str, torch.Tensor]:
    model = run.accelerator.unwrap_model(run.model)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_lora_trains_only_adapter_weights_and_checkpoints_the_adapter(tiny_dir, tmp_path):
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path, use_peft=True, lora_r=4, max_steps=1, beta=0.04))
    before = named(run)
    trainable = {n for n, p in run.accelerator.unwrap_model(run.model).named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    batch = fixed_batch(run, torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0, -1.0, -1.0]))
    grpo.fill_old_and_ref(run, batch)  # beta > 0: the reference is the base model with adapters off
    assert batch.ref_logps is not None and run.ref_model is None
    grpo.update(run, batch, norm_for(batch))
    after = named(run)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= trainable
    # the dense first layer and the shared experts are adapted too, not only the routed experts
    assert any("layers.0.mlp" in n for n in changed) and any("shared_experts" in n for n in changed)
    grpo.save(run, 1)
    assert (tmp_path / "checkpoint-1" / "model" / "adapter_config.json").is_file()
    grpo.teardown_run(run)


def _loads(run, steps: int) -> list[float]:
    """Max/mean expert load per step while training on the same batch (bias updates in between)."""
    out = []
    batch = fixed_batch(run, torch.zeros(8))  # zero advantage: only the balancing bias changes routing
    for _ in range(steps):
        m = grpo.update(run, batch, norm_for(batch))
        out.append(m["moe/max_over_mean"])
    return out


def test_bias_update_moves_expert_load_toward_uniform(tiny_dir, tmp_path):
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path / "on", moe_bias_update_speed=0.02))
    loads = _loads(run, 12)
    bias = [b for n, b in run.accelerator.unwrap_model(run.model).named_buffers() if "e_score_correction_bias" in n]
    assert bias and all(b.abs().sum() > 0 for b in bias)
    grpo.teardown_run(run)
    assert min(loads[-3:]) < loads[0] - 0.1, loads

    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path / "off", moe_bias_update_speed=0.0))
    off = _loads(run, 3)
    grpo.teardown_run(run)
    assert off[0] == pytest.approx(loads[0]) and off[-1] == pytest.approx(off[0])  # gamma 0: nothing moves


def test_routing_replay_forces_the_recorded_experts_in_the_update(tiny_dir, tmp_path):
    cfg = make_cfg(tiny_dir, tmp_path, routing_replay=True, num_iterations=2, moe_bias_update_speed=0.0)
    run = grpo.setup_run(cfg)
    batch = fixed_batch(run, torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0, -1.0, -1.0]))
    grpo.fill_old_and_ref(run, batch)  # mu = 2: old log-probs, recording each micro-batch's routing
    records = run.experts.routing._records
    assert records and batch.old_logps is not None
    natural = {layer: idx.unique().numel() for rec in records.values() for layer, idx in rec.items()}
    assert max(natural.values()) > 2  # left alone, the routers spread tokens over more than two experts
    for rec in records.values():  # rewrite the record: every token to experts 0 and 1
        for layer, idx in rec.items():
            rec[layer] = torch.stack([torch.zeros_like(idx[:, 0]), torch.ones_like(idx[:, 0])], 1)
    seen = []
    counts = run.experts.tracker.counts
    run.experts.tracker.counts = lambda: seen.append(counts()) or seen[-1]
    grpo.update(run, batch, grpo.Normalizers(8.0, batch.completion_mask.sum().item()))
    # the training forward routed exactly as recorded: only experts 0 and 1 carried tokens
    assert seen and all(c[:2].sum() > 0 and c[2:].sum() == 0 for c in seen[0].values()), seen
    grpo.teardown_run(run)


def test_routing_replay_and_aux_loss_run_in_a_full_step(tiny_dir, tmp_path):
    cfg = make_cfg(tiny_dir, tmp_path, routing_replay=True, num_iterations=2, router_aux_loss_coef=1e-3)
    run = grpo.setup_run(cfg)
    m = grpo.train_step(run, 1)
    assert m["skipped_steps"] == 0.0 and "moe/entropy" in m
    assert not run.experts.routing._records  # cleared once the step is done
    grpo.teardown_run(run)


def test_final_lora_save_keeps_router_biases(tiny_dir, tmp_path):
    """recipes/tiny/grpo_lora.yaml's final save: the adapter alone loses the balanced router biases."""
    from safetensors.torch import load_file

    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path, use_peft=True, lora_r=4, max_steps=2,
                                  moe_bias_update_speed=0.05))
    grpo.train(run)
    trained = {n: b.clone() for n, b in run.accelerator.unwrap_model(run.model).named_buffers()
               if "e_score_correction_bias" in n}
    grpo.teardown_run(run)
    assert trained and all(b.abs().sum() > 0 for b in trained.values())
    assert (tmp_path / "adapter_model.safetensors").is_file()
    saved = load_file(tmp_path / "router_bias.safetensors")
    assert sorted(saved) and all(v.abs().sum() > 0 for v in saved.values())
    assert not list(tmp_path.glob(".tmp-*")), "the final save is atomic: no temp dir left behind"
