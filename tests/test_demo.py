"""The README's main command, whole: `r1kit run recipes/tiny/r1.yaml` must finish and visibly learn.

Issue 15's figures, on held-out synthetic problems scored strictly (the answer inside <answer> after a
thought, in final form): base < SFT < GRPO, GRPO at least 30 points above SFT, the distilled student at
least 90% of its teacher with at most half of its parameters, and the report holding the curves. About
15 minutes on 2 idle CPU cores, hence `slow`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evals.report import model_parameters

ROOT = Path(__file__).resolve().parents[1]
BENCH = "synthetic:arithmetic:2"


def pass_at_1(run: Path, label: str) -> float:
    results = json.loads((run / "eval" / label / "results.json").read_text())
    return results[BENCH]["pass@1"]


@pytest.mark.slow
def test_the_demo_runs_whole_and_learns(tmp_path):
    run = tmp_path / "r1"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "r1kit.cli", "run", "recipes/tiny/r1.yaml", "--run_dir", str(run)],
                          check=False, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=45 * 60)
    assert proc.returncode == 0, proc.stderr[-3000:]

    base, sft, grpo = (pass_at_1(run, label) for label in ("pretrain", "sft", "grpo"))
    student, student_base = pass_at_1(run, "student"), pass_at_1(run, "pretrain_student")
    assert base < sft < grpo, (base, sft, grpo)
    assert grpo - sft >= 0.30, (sft, grpo)
    assert student >= 0.9 * grpo, (student, grpo)
    assert student > student_base, (student_base, student)
    assert 2 * model_parameters(run / "distill" / "student") <= model_parameters(run / "grpo")

    # What earns the reward is honest: GRPO's right held-out answers are worked (a `= ...` line in the
    # thought), and GRPO's completions are longer than SFT's (it learned to work the steps).
    right = [it["completions"][0] for it in details(run, "grpo") if it["correct"][0]]
    worked = [c for c in right if "\n= " in c.split("</think>")[0]]
    assert len(right) >= 50 and len(worked) >= 0.95 * len(right), [c for c in right if c not in worked][:3]
    mean_length = {m: sum(it["lengths"][0] for it in details(run, m)) / 200 for m in ("sft", "grpo")}
    assert mean_length["grpo"] > mean_length["sft"] + 5, mean_length

    # GRPO's held-out curve starts at the SFT model (step 0) and ends where r1kit eval scores the policy.
    curve = [m for m in map(json.loads, (run / "grpo" / "metrics.jsonl").read_text().splitlines()) if "eval/accuracy" in m]
    assert curve[0]["step"] == 0 and curve[-1]["eval/accuracy"] - curve[0]["eval/accuracy"] >= 0.25, curve
    report = (run / "report" / "report.md").read_text()
    assert "Training curves" in report and "2.09M" in report and "368.6k" in report


def details(run: Path, label: str) -> list[dict]:
    path = run / "eval" / label / "details" / "synthetic_arithmetic_2.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]
