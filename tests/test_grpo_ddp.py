"""2-process DDP (gloo, CPU) trains exactly like 1 process on the same global batch, through `train_step`.

The test launches this file once with `accelerate launch --multi_gpu --num_processes 2` (`--cpu`
would silently run one process). Each rank holds its half of a fixed 16-completion batch (sampling is
replaced by that batch, so both set-ups see identical token ids and rewards) and runs `train_step` with
the defaults (two updates per rollout batch) under a cosine schedule with warmup, one step per variant:
the dapo and grpo normalisers (token and sequence counts over processes) and `scale_rewards: batch`
(a standard deviation over the global batch). Rank 0 saves the gradient the optimizer receives and the
learning rate it steps with at every optimizer step; the single process must match both.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from r1kit.config import load_config
from r1kit.generation import Rollout
from rl import grpo
from rl.config import GRPOConfig
from rl.losses import get_loss

GLOBAL_N, G = 16, 4
# (loss_type, scale_rewards), one train_step each: dapo normalises by the step's token count, grpo by its
# sequence count, `batch` divides by the global batch's reward std: all must be counted over processes.
VARIANTS = (("dapo", "group"), ("grpo", "group"), ("dapo", "batch"), ("grpo", "batch"))


def global_groups(run) -> grpo.Groups:
    """A fixed batch built without sampling. Rewards are uniform draws, so each half's std differs from the
    whole batch's (a per-process std under `scale_rewards: batch` would change the advantages)."""
    gen = torch.Generator().manual_seed(7)
    vocab = len(run.tokenizer)
    lengths = torch.randint(3, 10, (GLOBAL_N,), generator=gen).tolist()
    completions = [torch.randint(10, vocab, (n,), generator=gen).tolist() for n in lengths]
    prompts = [run.prompt_ids[i // G] for i in range(GLOBAL_N)]
    rewards = torch.rand(GLOBAL_N, generator=gen).tolist()
    return grpo.Groups([run.rows[i // G] for i in range(GLOBAL_N)], prompts,
                       Rollout(completions, [[0.0] * n for n in lengths], [False] * GLOBAL_N), rewards,
                       [[r] for r in rewards])


def record_optimizer_steps(run) -> list[tuple[float, dict[str, torch.Tensor]]]:
    """(lr, gradients) the optimizer is given at each of its steps (Adam's update would amplify float noise
    in tiny gradients, so gradients are compared, not weights)."""
    seen: list[tuple[float, dict[str, torch.Tensor]]] = []
    real_step = run.optimizer.step

    def recording_step(*args, **kwargs):
        grads = {n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                 for n, p in run.accelerator.unwrap_model(run.model).named_parameters()}
        seen.append((run.optimizer.param_groups[0]["lr"], grads))
        return real_step(*args, **kwargs)

    run.optimizer.step = recording_step
    return seen


def train_variants(run, groups: grpo.Groups) -> list[tuple[float, dict[str, torch.Tensor]]]:
    seen = record_optimizer_steps(run)
    grpo.collect = lambda _run: (groups, {})  # this process's share of the fixed batch, every step
    for step, (loss_type, scale) in enumerate(VARIANTS, 1):
        run.loss_fn = get_loss(loss_type)
        run.cfg = replace(run.cfg, scale_rewards=scale)
        grpo.train_step(run, step)
    return seen


def make_cfg(policy: str, out: str, per_device: int, accum: int) -> GRPOConfig:
    return load_config(GRPOConfig, None, dict(
        model_name_or_path=policy, dataset_name="synthetic:arithmetic", output_dir=out, max_samples=16,
        num_generations=G, per_device_train_batch_size=per_device, gradient_accumulation_steps=accum,
        max_steps=len(VARIANTS), learning_rate=1e-4, lr_scheduler_type="cosine", warmup_ratio=0.25,
        moe_bias_update_speed=0.0, max_grad_norm=0.0, rewards=[{"name": "accuracy"}], use_cpu=True,
        log_completions_steps=0))


def worker(policy: str, out: str) -> None:
    torch.set_num_threads(1)
    run = grpo.setup_run(make_cfg(policy, out, 8, 1))
    rank, world = run.accelerator.process_index, run.accelerator.num_processes
    assert world == 2, "expected two processes"
    half = GLOBAL_N // world
    seen = train_variants(run, global_groups(run).take(list(range(rank * half, (rank + 1) * half))))
    if rank == 0:
        torch.save(seen, Path(out) / "ddp_steps.pt")
    grpo.teardown_run(run)


def test_two_process_ddp_train_step_matches_one_process(tiny_dir, tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo), "MASTER_PORT": "29533"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", __file__,
           str(tiny_dir / "policy"), str(tmp_path)]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp_steps.pt")

    torch.set_num_threads(1)
    monkeypatch.setattr(grpo, "collect", grpo.collect)  # train_variants replaces it
    run = grpo.setup_run(make_cfg(str(tiny_dir / "policy"), str(tmp_path / "single"), 8, 2))
    single = train_variants(run, global_groups(run))
    grpo.teardown_run(run)

    n_updates = len(VARIANTS) * run.cfg.num_iterations
    assert len(single) == len(ddp) == n_updates == 8
    lrs = [lr for lr, _ in single]
    # cosine with 2 warmup steps of 8: 0, lr/2, then down to near 0 (under 2 processes without the fix, warmup
    # ended after one optimizer step and the cosine reached 0 halfway)
    assert lrs[0] == 0.0 and lrs[1] == 5e-5 and max(lrs) == lrs[2] == 1e-4 and lrs[-1] < 1e-5, lrs
    assert [lr for lr, _ in ddp] == lrs
    for k, ((_, g1), (_, g2)) in enumerate(zip(single, ddp)):
        variant = VARIANTS[k // run.cfg.num_iterations]
        assert any(g.abs().sum() > 0 for g in g1.values()), variant
        for name, g in g1.items():
            # atol 1e-6: Adam turns float noise in near-zero gradients into lr-sized weight differences that
            # grow over the 8 updates (seen: 1.5e-7 at update 7); a wrong normaliser or std differs by ~1e-3
            torch.testing.assert_close(g2[name], g, rtol=1e-4, atol=1e-6,
                                       msg=lambda m, k=k, v=variant, n=name: f"update {k} {v}: {n}: {m}")
    # the variants really differ, so each comparison checks its own normaliser and std (the first update's lr
    # is 0, so the first step's two updates see the same weights)
    firsts = [single[k][1] for k in range(0, n_updates, run.cfg.num_iterations)]
    assert all(any(not torch.allclose(a[n], b[n]) for n in a) for a, b in itertools.pairwise(firsts))


if __name__ == "__main__":
    worker(*sys.argv[1:3])
