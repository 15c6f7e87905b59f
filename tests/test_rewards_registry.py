"""Recipe-facing registry: names, params and weights, and the exit-2 path for user mistakes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from r1kit.errors import UserError
from rewards.registry import available_rewards, build_rewards, register, tunable_params


def test_all_issue_rewards_are_registered():
    assert {
        "accuracy",
        "format",
        "tag_count",
        "language_consistency",
        "cosine_length",
        "overlong_penalty",
        "repetition_penalty",
    } <= set(available_rewards())


def test_build_binds_params_and_weight():
    fmt, acc = build_rewards(
        [
            {"name": "format", "weight": 0.25, "params": {"answer_format": "boxed", "think_prefilled": True}},
            {"name": "accuracy"},
        ]
    )
    assert (fmt.name, fmt.weight, acc.weight) == ("format", 0.25, 1.0)
    assert fmt.__name__ == "format"
    assert fmt([r"x</think> \boxed{1}", r"<think>x</think> \boxed{1}"]) == [1.0, 0.0]
    assert acc(["<think>1+1</think><answer>2</answer>", "<answer>2</answer>"], answer=["2", "2"]) == [1.0, 0.0]


def test_unknown_name_suggests_and_lists():
    with pytest.raises(UserError, match=r"unknown reward 'fromat' \(did you mean 'format'\?\).*'accuracy'"):
        build_rewards([{"name": "fromat"}])


def test_unknown_param_names_it_and_lists_allowed():
    with pytest.raises(UserError, match=r"no param 'think_prefiled'.*'answer_format', 'final_answer_pattern', 'think_prefilled'"):
        build_rewards([{"name": "format", "params": {"think_prefiled": True}}])


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"name": "format", "wieght": 1}, "unknown keys"),
        ({"name": "format", "weight": "high"}, "weight must be a number"),
        ({"name": "format", "params": {"think_prefilled": "yes"}}, "must be bool"),
        ({"name": "repetition_penalty", "params": {"ngram_size": 2.5}}, "must be int"),
        ({"weight": 1}, "'name' key"),
    ],
)
def test_bad_specs_are_user_errors(spec, match):
    with pytest.raises(UserError, match=match):
        build_rewards([spec])


def test_columns_are_not_params():
    # `answer` is a dataset column of accuracy_reward, not something a recipe may set.
    assert "answer" not in tunable_params(build_rewards([{"name": "accuracy"}])[0].fn)
    with pytest.raises(UserError, match="no param 'answer'"):
        build_rewards([{"name": "accuracy", "params": {"answer": "4"}}])


def test_register_rejects_a_name_clash():
    available_rewards()
    with pytest.raises(ValueError, match="taken by rewards.math.accuracy_reward"):
        register("accuracy")(lambda completions, **c: [0.0] * len(completions))


def test_importing_rewards_does_not_import_sympy():
    code = (
        "import sys, rewards, rewards.registry, rewards.math, rewards.format; print('sympy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_user_error_exits_2_without_traceback():
    code = (
        "from r1kit.errors import exit_on_user_error\n"
        "from rewards.registry import build_rewards\n"
        "exit_on_user_error(lambda: build_rewards([{'name': 'nope'}]))()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown reward 'nope'") and "Traceback" not in proc.stderr
