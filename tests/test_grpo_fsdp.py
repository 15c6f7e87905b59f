"""A real 2-process FSDP2 GRPO run on CPU (gloo) trains like the 2-process DDP run on the same seed and batch.

Launch (what the test runs; `--use_fsdp` makes r1kit shard the policy with `fully_shard`, and
`--multi_gpu` without it is plain DDP; `--cpu --num_processes 2` would silently run one process):

    accelerate launch --use_fsdp --fsdp_version 2 --num_processes 2 tests/test_grpo_fsdp.py fsdp POLICY OUT
    accelerate launch --multi_gpu --num_processes 2 tests/test_grpo_fsdp.py ddp POLICY OUT

Both run `rl.grpo`'s own loop on `r1kit build-tiny`'s DeepSeek-V3-style MoE policy with dynamic sampling on
(a 0/1 reward, so some groups have no variance and are set aside), gradient clipping, AdamW, the router-bias
balancer, two micro-batches per update, a held-out evaluation and a checkpoint at step 2. Sampling is real: rollouts see whole weights
(FSDP2 gathers them once per rollout), so both runs draw the same tokens; the update then differs only in
how gradients are reduced (DDP all-reduce vs FSDP reduce-scatter, the global norm from shard norms). The
test asserts equal per-step losses and grad norms, final weights within a tolerance, that each process
held half of every weight, that the checkpoint loads with `AutoModelForCausalLM`, and that a third launch
resuming from checkpoint-2 ends bit-identical to the uninterrupted FSDP run. The dense student (lean decode
path) gets the same DDP comparison. Measured on build_tiny's dense student: weights within 5.2e-7.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STEPS, SAVE_AT = 3, 2
# Measured here: losses equal to 1.2e-7, grad norms to 1.6e-6 relative (shard norms summed in another order,
# gradients reduced per micro-batch), final weights within 1.5e-6 of DDP's after 3 steps (6 AdamW updates) that
# moved them by up to 6e-3; a wrong normaliser or reduction moves them by ~lr = 1e-3. The resumed run: 0.
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5


def has_digit(completions, **columns):
    """1.0 when the completion writes a digit: an untrained policy sometimes does, so some groups vary and
    others do not (dynamic sampling sets those aside and samples more prompts).

    >>> has_digit(["a1", "ab"])
    [1.0, 0.0]
    """
    return [float(any(ch.isdigit() for ch in c)) for c in completions]


def worker(mode: str, policy: str, out: str, resume: str | None = None) -> None:
    from r1kit.config import load_config
    from r1kit.modeling.fsdp import is_fsdp
    from rewards import registry
    from rl import grpo
    from rl.config import GRPOConfig

    torch.set_num_threads(1)
    registry._REGISTRY["test_has_digit"] = has_digit
    cfg = load_config(GRPOConfig, None, {
        "model_name_or_path": policy, "dataset_name": "synthetic:arithmetic", "output_dir": out, "max_samples": 64,
        "num_generations": 4, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
        "max_completion_length": 8, "max_steps": STEPS,
        "learning_rate": 1e-3, "lr_scheduler_type": "constant", "max_grad_norm": 1.0, "dynamic_sampling": True,
        "rewards": [{"name": "test_has_digit"}], "save_steps": SAVE_AT, "eval_steps": STEPS, "eval_max_samples": 8,
        "log_completions_steps": 0, "use_cpu": True, "seed": 0, "resume_from_checkpoint": resume})
    run = grpo.setup_run(cfg)
    assert run.accelerator.num_processes == 2, "expected two processes"
    assert is_fsdp(run.model) == (mode == "fsdp") and run.sharded == (mode == "fsdp")
    if mode == "fsdp":
        local = sum(p.to_local().numel() for p in run.model.parameters())
        full = sum(p.numel() for p in run.model.parameters())
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, f"shards_{run.accelerator.process_index}.json").write_text(json.dumps([local, full]))
    grpo.resume(run)
    grpo.train(run)
    grpo.teardown_run(run)


def launch(mode: str, policy: Path, out: Path, resume: Path | None = None) -> None:
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo), "MASTER_PORT": "29537"}
    dist = ["--use_fsdp", "--fsdp_version", "2"] if mode == "fsdp" else ["--multi_gpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *dist, "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", __file__, mode, str(policy), str(out),
           *([str(resume)] if resume else [])]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{mode}: {proc.stderr[-4000:]}"


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # an ordinary HF checkpoint
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_fsdp_matches_ddp(policy: Path, ddp_out: Path, fsdp_out: Path, moe: bool) -> dict[str, torch.Tensor]:
    """The checks shared by both policies; returns the FSDP run's final weights."""
    for rank in range(2):  # each process held half of every weight (dim 0 sharded), not a replica
        local, full = json.loads((fsdp_out / f"shards_{rank}.json").read_text())
        assert abs(local - full / 2) < full * 0.01, (local, full)
    ddp, sharded = metrics(ddp_out), metrics(fsdp_out)
    assert ddp[0]["step"] == sharded[0]["step"] == 0  # the held-out eval before training, on the same weights
    assert ddp[0]["eval/accuracy"] == sharded[0]["eval/accuracy"]
    ddp, sharded = ddp[1:], sharded[1:]
    assert [m["step"] for m in ddp] == [m["step"] for m in sharded] == list(range(1, STEPS + 1))
    assert sum(m["dropped_groups"] for m in sharded) > 0, "dynamic sampling never set a group aside"
    for a, b in zip(ddp, sharded):
        for key in ("reward", "dropped_groups", "sampled_groups", "completion_length"):  # the same rollouts
            assert a[key] == b[key], (a["step"], key, a[key], b[key])
        for key in ("loss", "grad_norm", *(["moe/bias_abs_mean"] if moe else [])):
            assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL, abs=1e-9), (a["step"], key, a[key], b[key])
    assert ddp[-1]["eval/accuracy"] == sharded[-1]["eval/accuracy"]
    assert ddp[-1]["eval/completion_length"] == sharded[-1]["eval/completion_length"]
    start, w_ddp, w_fsdp = weights(policy), weights(ddp_out), weights(fsdp_out)
    assert max((w_fsdp[k] - start[k]).abs().max().item() for k in start) > 1e-3  # training moved the weights
    for name, w in w_ddp.items():
        torch.testing.assert_close(w_fsdp[name], w, rtol=0, atol=WEIGHT_ATOL, msg=lambda m, n=name: f"{n}: {m}")
    return w_fsdp


@pytest.mark.slow
def test_fsdp2_grpo_on_two_cpu_processes_matches_ddp_and_resumes(tiny_dir, tmp_path):
    """The MoE policy (absorbed-MLA rollouts, router-bias balancing), then a resume from checkpoint-2."""
    policy = tiny_dir / "policy"
    launch("ddp", policy, tmp_path / "ddp")
    launch("fsdp", policy, tmp_path / "fsdp")
    launch("fsdp", policy, tmp_path / "resumed", resume=tmp_path / "fsdp" / f"checkpoint-{SAVE_AT}")
    w_fsdp = assert_fsdp_matches_ddp(policy, tmp_path / "ddp", tmp_path / "fsdp", moe=True)
    ckpt = weights(tmp_path / "fsdp" / f"checkpoint-{SAVE_AT}" / "model")
    assert any(not torch.equal(ckpt[k], w_fsdp[k]) for k in ckpt)  # step 2's weights, not the final ones
    w_resumed = weights(tmp_path / "resumed")
    assert all(torch.equal(w_resumed[k], w_fsdp[k]) for k in w_fsdp), "resumed run differs from the uninterrupted one"
    assert metrics(tmp_path / "resumed")[-1]["loss"] == metrics(tmp_path / "fsdp")[-1]["loss"]


@pytest.mark.slow
def test_fsdp2_grpo_on_the_dense_student_matches_ddp(tiny_dir, tmp_path):
    """The dense Qwen3 student: rollouts through the lean decode forward on gathered weights."""
    policy = tiny_dir / "student"
    launch("ddp", policy, tmp_path / "ddp")
    launch("fsdp", policy, tmp_path / "fsdp")
    assert_fsdp_matches_ddp(policy, tmp_path / "ddp", tmp_path / "fsdp", moe=False)


def test_fsdp_on_one_process_is_a_user_error_naming_the_launch(tiny_dir, tmp_path):
    from r1kit.config import load_config
    from r1kit.errors import UserError
    from rl import grpo
    from rl.config import GRPOConfig

    cfg = load_config(GRPOConfig, None, {"model_name_or_path": str(tiny_dir / "policy"), "fsdp": True,
                                         "dataset_name": "synthetic:arithmetic", "output_dir": str(tmp_path),
                                         "max_samples": 8, "num_generations": 4, "use_cpu": True})
    with pytest.raises(UserError, match="accelerate launch --use_fsdp --num_processes N"):
        grpo.setup_run(cfg)


if __name__ == "__main__":
    worker(*sys.argv[1:])
