"""Shortcut alarms (rl/alarms.py): each fires on the run it describes, stays quiet on an honest one, and
reports once per condition with a rate limit; a policy with nothing left to learn samples one round a step."""

from __future__ import annotations

import pytest
import torch

from rl import alarms, grpo
from rl.alarms import Alarms
from tests.test_grpo_loop import make_cfg

STEPS = 3 * alarms.WINDOW


def metrics_at(step: int, acc: float, fmt: float, length: float) -> dict[str, float]:
    return {"rewards/accuracy": acc, "rewards/format": fmt, "completion_length": length}


# (name, accuracy(step), format(step), length(step), varied(step), the alarms expected to fire)
RUNS = [
    ("echo shortcut: accuracy 0 -> 1, format 0, 6 tokens, then every group equal",
     lambda s: min(1.0, s / 15), lambda s: 0.0, lambda s: 6.0, lambda s: s < 15,
     {"accuracy_without_format", "short_completions", "no_reward_variance"}),
    ("honest learning: accuracy and format rise, 45 tokens",
     lambda s: min(1.0, s / 15), lambda s: min(1.0, s / 10), lambda s: 45.0, lambda s: True, set()),
    ("format earned now and then (every 5th step): not this alarm",
     lambda s: min(1.0, s / 15), lambda s: 0.1 if s % 5 == 0 else 0.0, lambda s: 45.0, lambda s: True, set()),
    ("accuracy flat at 0.4 with format 0: nothing rises",
     lambda s: 0.4, lambda s: 0.0, lambda s: 45.0, lambda s: True, set()),
    ("length collapses from 45 to 5 tokens",
     lambda s: 0.5, lambda s: 1.0, lambda s: 45.0 if s < 10 else 5.0, lambda s: True, {"short_completions"}),
    ("every group equal from step 5 on (all solved)",
     lambda s: 1.0, lambda s: 1.0, lambda s: 45.0, lambda s: s < 5, {"no_reward_variance"}),
]


@pytest.mark.parametrize("name,acc,fmt,length,varied,expected", RUNS, ids=[r[0] for r in RUNS])
def test_alarm_fires_on_the_run_it_describes(name, acc, fmt, length, varied, expected):
    a = Alarms(min_completion_length=8, patience=10)
    fired: dict[str, list[int]] = {}
    for step in range(1, STEPS + 1):
        for alarm in a.observe(step, metrics_at(step, acc(step), fmt(step), length(step)), ["accuracy", "format"],
                               varied(step)):
            fired.setdefault(alarm, []).append(step)
    assert set(fired) == expected
    assert all(len(steps) == 1 for steps in fired.values()), fired  # once, then rate-limited


def test_alarm_repeats_after_the_rate_limit_and_zero_disables():
    a, off = Alarms(min_completion_length=8, patience=3), Alarms(min_completion_length=0, patience=0)
    steps = range(1, 2 * alarms.REPEAT + alarms.WINDOW + 1)
    fired = [s for s in steps if "short_completions" in a.observe(s, metrics_at(s, 0, 0, 5.0), [], False)]
    assert fired == [alarms.WINDOW, alarms.WINDOW + alarms.REPEAT, alarms.WINDOW + 2 * alarms.REPEAT]
    assert not any(off.observe(s, metrics_at(s, 0, 0, 5.0), [], False) for s in steps)
    assert a.saturated and not off.saturated


def test_saturation_ends_when_a_group_varies_again():
    a = Alarms(patience=2)
    for step, varied in enumerate([False, False, False, True, False], 1):
        a.observe(step, metrics_at(step, 1, 1, 45.0), [], varied)
        assert a.saturated == (step in (2, 3)), step


def test_loop_warns_and_samples_one_round_once_nothing_varies(tiny_dir, tmp_path, monkeypatch, capsys):
    """A constant reward: every group is equal. Dynamic sampling spends its extra rounds until the patience
    runs out, then samples one round per step, without oversampling; the alarm is printed and logged once."""
    from rewards import registry

    monkeypatch.setitem(registry._REGISTRY, "test_letter_share", lambda completions, **_: [0.5] * len(completions))
    cfg = make_cfg(tiny_dir, tmp_path, rewards=[{"name": "test_letter_share"}], max_sampling_rounds=2,
                   zero_variance_patience=2, max_steps=4, max_completion_length=4, log_completions_steps=0)
    run = grpo.setup_run(cfg)
    prompts_per_step = []
    real = grpo.sample_groups
    monkeypatch.setattr(grpo, "sample_groups", lambda r, n: (prompts_per_step.append(n), real(r, n))[1])
    logged = []
    for step in range(1, 5):
        torch.manual_seed(step)
        prompts_per_step.append("|")
        logged.append(grpo.train_step(run, step))
    grpo.teardown_run(run)
    rounds = "".join("|" if n == "|" else "r" for n in prompts_per_step).split("|")[1:]
    assert [len(r) for r in rounds] == [3, 3, 1, 1]  # 1 + max_sampling_rounds, until 2 flat steps
    assert prompts_per_step[-1] == run.local_batch // cfg.num_generations  # no oversampling once saturated
    assert [m.get("alarm/no_reward_variance") for m in logged] == [None, 1.0, None, None]
    assert capsys.readouterr().err.count("SHORTCUT ALARM no_reward_variance") == 1
