"""GRPO's held-out evaluation (`eval_steps`) judges like `r1kit eval`: the same verdict for every completion.

GRPO's side is `grpo.evaluate` with the judge `rl.setup.eval_judge` binds from a GRPO recipe; evals' side is
`evals.evaluate.score_task` with the matching `r1kit eval` settings. Planted completions cover each verdict
rule (correct, wrong, malformed, not in final form, the issue-11 echo, a hedge, code that passes or fails
its tests), and a real GRPO step on the tiny model logs `eval/accuracy`, `eval/format` and
`eval/completion_length` as `r1kit eval` would compute them.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from evals.evaluate import EvalConfig, score_task
from evals.tasks import get_task
from r1kit.config import load_config
from r1kit.generation import Rollout, SamplingSettings
from rl import grpo
from rl.config import GRPOConfig
from rl.setup import eval_judge

torch.set_num_threads(1)

ROW = {"prompt": "What is 4 * 3 / 2?", "answer": "6"}
THINK = "<think>\n4 * 3 = 12, 12 / 2 = 6\n</think>\n"
# (name, completion, strict verdict, lenient verdict (`strict: false` / `eval_reward: accuracy`), well formatted)
MATH = [
    ("correct", THINK + "<answer>6</answer>", True, True, True),
    ("chained to the value", THINK + "<answer>12/2 = 6</answer>", True, True, True),
    ("wrong", THINK + "<answer>7</answer>", False, False, True),
    ("no thought", "<answer>6</answer>", False, False, False),
    ("words before the answer", THINK + "So: <answer>6</answer>", False, True, False),  # lenient reads past them
    ("no answer tag", THINK + "6", False, False, False),
    ("hedged", THINK + "<answer>6</answer> or 7", False, False, False),
    ("not final", THINK + "<answer>12/2</answer>", False, False, True),
    ("echo shortcut", "4 * 3 / 2", False, False, False),
    ("echo in format", "<think>\n4 * 3 / 2\n</think>\n<answer>4 * 3 / 2</answer>", False, False, True),
    ("look-alike digit", THINK + "<answer>６</answer>", False, False, True),
    ("empty", "", False, False, False),
]
BOXED_PREFILLED = [
    ("correct", "12 / 2 = 6\n</think>\nSo $\\boxed{6}$.", True, True, True),
    ("not final", "12 / 2 = 6\n</think>\n$\\boxed{12/2}$", False, False, True),
    ("tag instead of box", "12 / 2 = 6\n</think>\n<answer>6</answer>", False, False, False),
]
CODE_ROW = {"prompt": "Write add(a, b).", "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]}
CODE = [
    ("passes", "<think>\nsum\n</think>\n```python\ndef add(a, b):\n    return a + b\n```", True, True, True),
    ("fails a test", "```python\ndef add(a, b):\n    return 3\n```", False, False, True),
    ("no code block", "def add(a, b): return a + b", False, False, False),
]

needs_sandbox = pytest.mark.skipif(not (shutil.which("bwrap") or shutil.which("unshare")),
                                   reason="no namespace sandbox on this machine")


@dataclass
class Setting:
    """One scoring setup said both ways: GRPO recipe keys and the `r1kit eval` keys that mean the same."""

    row: dict
    table: list
    grpo: dict
    evals: dict
    benchmark: str = "synthetic:arithmetic"
    lenient: bool = False


SETTINGS = {
    "strict answer_tag": Setting(ROW, MATH, {}, {"answer_format": "answer_tag"}),
    "lenient answer_tag": Setting(ROW, MATH, {"eval_reward": "accuracy"},
                                  {"answer_format": "answer_tag", "strict": False}, lenient=True),
    "boxed, prefilled thought": Setting(
        ROW, BOXED_PREFILLED,
        {"prefill_think": True, "rewards": [{"name": "accuracy", "params": {"answer_format": "boxed"}}]},
        {"answer_format": "boxed", "prefill_think": True}),
    "code rows": pytest.param(Setting(CODE_ROW, CODE, {}, {}, benchmark="mbpp"), marks=needs_sandbox),
}


def grpo_cfg(**over) -> GRPOConfig:
    base = {"model_name_or_path": "m", "dataset_name": "synthetic:arithmetic", "output_dir": "o", "eval_steps": 1}
    return load_config(GRPOConfig, None, {**base, **over}, check_paths=False)


def grpo_evaluate(judge, rows: list[dict], texts: list[str]) -> dict[str, float]:
    """`grpo.evaluate` on a single process whose engine "generates" `texts` (token i decodes to text i)."""
    run = SimpleNamespace(
        eval_prompts=[[1]] * len(rows), eval_rows=rows, sampling=SamplingSettings(8), eval_fn=judge,
        engine=SimpleNamespace(generate=lambda ids, s: Rollout([[i] * (i + 1) for i in range(len(ids))],
                                                               [[0.0] * (i + 1) for i in range(len(ids))],
                                                               [False] * len(ids))),
        tokenizer=SimpleNamespace(batch_decode=lambda ids, skip_special_tokens: [texts[len(c) - 1] for c in ids]),
        reduce_sum=float)
    return grpo.evaluate(run)


def evals_score(setting: Setting, texts: list[str], tmp_path) -> tuple[dict, list[dict]]:
    """`r1kit eval`'s scoring of the same completions (generation mode, one sample per item)."""
    cfg = EvalConfig(model=["m"], benchmarks=[setting.benchmark], output_dir=str(tmp_path), **setting.evals)
    rows = [{**setting.row, "id": str(i), "message": setting.row["prompt"]} for i in range(len(texts))]
    gens = {str(i): {"completions": [t], "num_tokens": [i + 1]} for i, t in enumerate(texts)}
    return score_task(cfg, get_task(setting.benchmark), rows, gens)


@pytest.mark.parametrize("setting", SETTINGS.values(), ids=SETTINGS.keys())
def test_grpo_eval_and_r1kit_eval_give_every_completion_the_same_verdict(setting, tmp_path):
    judge = eval_judge(grpo_cfg(**setting.grpo), setting.row)
    names, texts = [c[0] for c in setting.table], [c[1] for c in setting.table]
    expected = [c[3] if setting.lenient else c[2] for c in setting.table]
    metrics, items = evals_score(setting, texts, tmp_path)
    assert [item["correct"][0] for item in items] == expected, names
    grpo_verdicts = [grpo_evaluate(judge, [setting.row], [t])["eval/accuracy"] == 1.0 for t in texts]
    assert grpo_verdicts == expected, [n for n, g, e in zip(names, grpo_verdicts, expected) if g != e]
    assert [item["formatted"][0] for item in items] == [c[4] for c in setting.table]
    # all at once: GRPO's pass@1 and format rate are the numbers r1kit eval reports for the same completions
    together = grpo_evaluate(judge, [setting.row] * len(texts), texts)
    assert together["eval/accuracy"] == pytest.approx(metrics["pass@1"])
    assert together["eval/format"] == pytest.approx(metrics["format_rate"])
    assert together["eval/completion_length"] == pytest.approx(sum(range(1, len(texts) + 1)) / len(texts))


def test_a_grpo_eval_step_on_the_tiny_model_logs_r1kit_eval_numbers(tiny_dir, tmp_path):
    """A real step (sampling, update) with `eval_steps: 1`: the greedy held-out call returns planted completions
    built from the real held-out rows, and metrics.jsonl holds r1kit eval's pass@1 and format rate for them."""
    cfg = load_config(GRPOConfig, None, {
        "model_name_or_path": str(tiny_dir / "policy"), "dataset_name": "synthetic:arithmetic",
        "output_dir": str(tmp_path / "out"), "max_samples": 16, "num_generations": 4, "per_device_train_batch_size": 8,
        "max_completion_length": 8, "max_steps": 1, "eval_steps": 1, "eval_max_samples": len(MATH), "use_cpu": True,
        "log_completions_steps": 0, "save_steps": 0})
    run = grpo.setup_run(cfg)
    golds = [r["answer"] for r in run.eval_rows]
    texts = [text.replace("<answer>6</answer>", f"<answer>{g}</answer>") for (_, text, *_), g in zip(MATH, golds)]
    ids = [run.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    texts = run.tokenizer.batch_decode(ids, skip_special_tokens=True)  # what evaluate will read
    real_generate = run.engine.generate

    def generate(prompts, settings):
        if not settings.greedy:
            return real_generate(prompts, settings)
        assert prompts == run.eval_prompts
        return Rollout(ids, [[0.0] * len(i) for i in ids], [False] * len(ids))

    run.engine.generate = generate
    grpo.train(run)
    grpo.teardown_run(run)
    logged = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "eval/accuracy" in m] == [0, 1]  # the starting point, then each eval step
    step = next(m for m in logged if "eval/accuracy" in m)
    setting = Setting(run.eval_rows[0], MATH, {}, {"answer_format": "answer_tag"})
    rows = [{**r, "id": str(i), "message": r["prompt"]} for i, r in enumerate(run.eval_rows)]
    gens = {str(i): {"completions": [t], "num_tokens": [len(c)]} for i, (t, c) in enumerate(zip(texts, ids))}
    metrics, _ = score_task(EvalConfig(model=["m"], benchmarks=[setting.benchmark], output_dir=str(tmp_path),
                                       **setting.evals), get_task(setting.benchmark), rows, gens)
    assert 0 < metrics["pass@1"] < 1  # the planted set has both verdicts, so a constant scorer fails
    assert step["eval/accuracy"] == pytest.approx(metrics["pass@1"])
    assert step["eval/format"] == pytest.approx(metrics["format_rate"])
    assert step["eval/completion_length"] == pytest.approx(sum(map(len, ids)) / len(ids))
