"""GRPO learns: on a partially competent tiny policy, a few dozen steps raise held-out accuracy.

The start point is build_tiny's dense student + a short TRL SFT (`benchmarks/_start_point.py`), cached in the system
temp dir (or $R1KIT_START_POINT) so this test and `benchmarks/grpo_vs_trl.py` build it once. Held-out
accuracy is greedy decoding on test-split problems the policy never trains on, before and after GRPO
with r1kit's defaults (warmup, dynamic sampling). Two seeds, so a lucky draw cannot pass the test.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest
import torch

from r1kit import synth
from r1kit.config import load_config
from rl import grpo
from rl.config import GRPOConfig

REPO = Path(__file__).resolve().parents[1]


def _load_start_point():
    # Loaded by path: putting benchmarks/ on sys.path would shadow the math_verify package with
    # benchmarks/math_verify.py for every test collected afterwards.
    spec = importlib.util.spec_from_file_location("_start_point", REPO / "benchmarks" / "_start_point.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_sp = _load_start_point()
DIFFICULTY, TASK, build_start_point, held_out_accuracy = _sp.DIFFICULTY, _sp.TASK, _sp.build_start_point, _sp.held_out_accuracy

STEPS, HELD_OUT = 60, 100
MARGIN = 0.10  # absolute held-out accuracy gain GRPO must show


@pytest.fixture(scope="module")
def start_policy(request) -> Path:
    # pyproject's addopts do not deselect `slow` yet: keep a plain `pytest` run from spending minutes here.
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("slow tier: run with -m slow")
    cache = os.environ.get("R1KIT_START_POINT") or Path(tempfile.gettempdir()) / "r1kit-start-point"
    return build_start_point(cache)


def accuracy(model, tokenizer) -> float:
    return held_out_accuracy(model, tokenizer, synth.generate(TASK, HELD_OUT, 123, DIFFICULTY, split="test"))


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "not reached yet (issue 5 stays open): from a 13% start (student, 1000 SFT steps) 60-100 steps left greedy "
    "held-out accuracy at 5-18%; from a 54% start (pretrained student + 300 SFT steps) 100 steps of r1kit and of "
    "TRL's GRPOTrainer alike left it flat (0.54 -> 0.52 and 0.505) while sampled train accuracy rose 0.31 -> 0.47 "
    "in 150 r1kit steps. Strict, so this test fails loudly the day it passes."))
@pytest.mark.parametrize("seed", [0, 1])
def test_grpo_raises_held_out_accuracy(start_policy, tmp_path, seed):
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    cfg = load_config(GRPOConfig, None, dict(
        model_name_or_path=str(start_policy), dataset_name=f"synthetic:{TASK}:{DIFFICULTY}", output_dir=str(tmp_path),
        max_samples=1000, num_generations=8, per_device_train_batch_size=128, max_completion_length=64,
        learning_rate=2e-4, max_steps=STEPS, rewards=[{"name": "accuracy"}, {"name": "format", "weight": 0.2}],
        loss_type="dapo", epsilon_high=0.28, use_cpu=True, log_completions_steps=0, seed=seed))
    run = grpo.setup_run(cfg)
    model = run.accelerator.unwrap_model(run.model)
    before = accuracy(model, run.tokenizer)
    for step in range(1, STEPS + 1):
        grpo.train_step(run, step)
    after = accuracy(model, run.tokenizer)
    grpo.teardown_run(run)
    print(f"seed {seed}: held-out accuracy {before:.2f} -> {after:.2f} after {STEPS} steps")
    assert after >= before + MARGIN, (before, after)
