"""2-process DDP (gloo, CPU) gives the same gradient as 1 process on the same global batch.

The test launches this file once with `accelerate launch --multi_gpu --num_processes 2` (`--cpu`
would silently run one process); each rank trains on its half of a fixed 16-completion batch, once
per loss variant (the loss function is swapped on the same run: launching costs most of the time),
and rank 0 saves the gradients the optimizer receives.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from r1kit.config import load_config
from rl import grpo
from rl.config import GRPOConfig
from rl.engine import Rollout
from rl.losses import get_loss

GLOBAL_N, G = 16, 4
# dapo normalises by the step's token count, grpo by its sequence count: both must be counted over processes.
LOSSES = ("dapo", "grpo")


def global_groups(run) -> grpo.Groups:
    """A fixed batch built without sampling, so both set-ups see identical token ids and advantages."""
    gen = torch.Generator().manual_seed(7)
    vocab = len(run.tokenizer)
    lengths = torch.randint(3, 10, (GLOBAL_N,), generator=gen).tolist()
    completions = [torch.randint(10, vocab, (n,), generator=gen).tolist() for n in lengths]
    prompts = [run.prompt_ids[i // G] for i in range(GLOBAL_N)]
    rewards = torch.rand(GLOBAL_N, generator=gen).tolist()
    return grpo.Groups([run.rows[i // G] for i in range(GLOBAL_N)], prompts,
                       Rollout(completions, [[0.0] * n for n in lengths], [False] * GLOBAL_N), rewards,
                       [[r] for r in rewards])


def grads_after_update(run, groups: grpo.Groups, loss_type: str) -> dict[str, torch.Tensor]:
    from tests.test_grpo_loop import capture_grads

    run.loss_fn = get_loss(loss_type)
    adv = grpo.advantages_for(run, groups)
    batch = grpo.to_tensors(run, groups, adv)
    norm = grpo.Normalizers(num_seqs=run.reduce_sum(float(len(adv))),
                            num_tokens=run.reduce_sum(batch.completion_mask.sum().item()))
    grads = capture_grads(run, step=False)  # same weights for every loss variant
    grpo.update(run, batch, norm)
    return grads


def make_cfg(policy: str, out: str, per_device: int, accum: int) -> GRPOConfig:
    return load_config(GRPOConfig, None, dict(
        model_name_or_path=policy, dataset_name="synthetic:arithmetic", output_dir=out, max_samples=16,
        num_generations=G, per_device_train_batch_size=per_device, gradient_accumulation_steps=accum,
        max_steps=1, moe_bias_update_speed=0.0, max_grad_norm=0.0, rewards=[{"name": "accuracy"}], use_cpu=True))


def worker(policy: str, out: str) -> None:
    torch.set_num_threads(1)
    run = grpo.setup_run(make_cfg(policy, out, 8, 1))
    rank, world = run.accelerator.process_index, run.accelerator.num_processes
    assert world == 2, "expected two processes"
    half = GLOBAL_N // world
    mine = global_groups(run).take(list(range(rank * half, (rank + 1) * half)))
    grads = {loss: grads_after_update(run, mine, loss) for loss in LOSSES}
    if rank == 0:
        torch.save(grads, Path(out) / "ddp_grads.pt")
    grpo.teardown_run(run)


def test_two_process_ddp_matches_one_process(tiny_dir, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo), "MASTER_PORT": "29533"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", __file__,
           str(tiny_dir / "policy"), str(tmp_path)]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp_grads.pt")

    torch.set_num_threads(1)
    run = grpo.setup_run(make_cfg(str(tiny_dir / "policy"), str(tmp_path / "single"), 8, 2))
    single = {loss: grads_after_update(run, global_groups(run), loss) for loss in LOSSES}
    grpo.teardown_run(run)
    for loss in LOSSES:
        assert any(g.abs().sum() > 0 for g in single[loss].values())
        for name, g in single[loss].items():
            torch.testing.assert_close(ddp[loss][name], g, rtol=1e-4, atol=1e-7, msg=f"{loss}: {name}")
    # the two variants really differ, so each comparison above checks its own normaliser
    assert any(not torch.allclose(single["dapo"][n], single["grpo"][n]) for n in single["dapo"])


if __name__ == "__main__":
    worker(*sys.argv[1:3])
