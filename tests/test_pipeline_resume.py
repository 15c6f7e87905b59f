"""`r1kit run` killed with SIGKILL in the middle of a stage, rerun: it finishes, skips what was complete,
resumes the interrupted stage from its checkpoint and ends with the same weights as an uninterrupted run.

A tiny real pipeline (build-tiny -> 6 pretrain steps -> 4 GRPO steps), run twice as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

STAGES = [
    {"stage": "build-tiny"},
    {"stage": "pretrain", "model_name_or_path": "${tiny}/policy", "tasks": ["arithmetic"], "max_difficulty": 1,
     "num_examples": 96, "eval_examples": 8, "max_steps": 6, "save_steps": 3, "eval_accuracy_examples": 0,
     "max_seq_len": 64, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "torch_threads": 1},
    # A reward that varies on an untrained policy's output (repeated words), so every step has a gradient.
    {"stage": "grpo", "dataset_name": "synthetic:arithmetic", "max_samples": 64, "max_steps": 4, "save_steps": 2,
     "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 16, "learning_rate": 1e-3,
     "rewards": [{"name": "repetition_penalty", "params": {"ngram_size": 1}}], "dynamic_sampling": False,
     "eval_steps": 0, "save_total_limit": None, "use_cpu": True},
]


def start(recipe: Path, run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "r1kit.cli", "run", str(recipe), "--run_dir", str(run_dir)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def weights(stage_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(stage_dir / "model.safetensors")


def test_sigkill_mid_stage_then_rerun_matches_uninterrupted(tmp_path):
    recipe = tmp_path / "p.yaml"
    recipe.write_text(yaml.safe_dump({"stages": STAGES}, sort_keys=False))
    victim = start(recipe, tmp_path / "killed")
    deadline = time.monotonic() + 400
    grpo = tmp_path / "killed" / "grpo"
    while not (grpo / "checkpoint-2").exists():
        assert victim.poll() is None, "run ended before it could be killed: " + victim.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no GRPO checkpoint-2 within 400 s"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)  # the pipeline process only: its stage process must die with it
    victim.wait()
    time.sleep(1.0)
    assert not (grpo / "stage_done.json").exists() and not (grpo / "checkpoint-4").exists()
    assert (tmp_path / "killed" / "pretrain" / "stage_done.json").is_file()

    resumed = start(recipe, tmp_path / "killed")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert err.count("complete, skipped") == 2 and "resumed from" in out + err
    summary = json.loads((tmp_path / "killed" / "pipeline_summary.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["skipped (complete)", "skipped (complete)", "ran"]

    reference = start(recipe, tmp_path / "ref")
    out, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err[-3000:]
    a, b = weights(tmp_path / "ref" / "grpo"), weights(grpo)
    start_weights = weights(tmp_path / "ref" / "pretrain")
    assert any(not torch.equal(a[k], start_weights[k]) for k in a if k in start_weights), "GRPO never moved the weights"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert (grpo / "chat_template.jinja").is_file() or "chat_template" in (grpo / "tokenizer_config.json").read_text()
