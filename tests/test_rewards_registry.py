"""Recipe-facing registry: names, params and weights, and the exit-2 path for user mistakes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from r1kit.errors import UserError
from rewards.math import accuracy_reward
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
        ({"name": "format", "weight": "high"}, "weight must be a finite number"),
        ({"name": "format", "weight": float("nan")}, "'format': weight must be a finite number, got nan"),
        ({"name": "format", "weight": float("inf")}, "'format': weight must be a finite number, got inf"),
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


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"name": "accuracy", "params": {"final_form": "no"}}, r"'accuracy': param 'final_form' must be bool"),
        ({"name": "accuracy", "params": {"think_prefilled": 1}}, r"param 'think_prefilled' must be bool"),
        ({"name": "accuracy", "params": {"deadline_s": "5"}}, r"param 'deadline_s' must be float"),
        ({"name": "strict_accuracy", "params": {"answer_format": 3}}, r"param 'answer_format' must be str"),
        ({"name": "format", "params": {"final_answer_pattern": None}}, r"param 'final_answer_pattern' must be str"),
        ({"name": "accuracy", "params": {"answer_format": "boxd"}},
         r"param 'answer_format' must be one of \['answer_tag', 'boxed', 'final_answer', 'any'\], got 'boxd'"),
        ({"name": "format", "params": {"answer_format": "bare"}}, r"'format': param 'answer_format' must be one of"),
        ({"name": "tag_count", "params": {"answer_format": "xml"}}, r"'tag_count': param 'answer_format' must be one of"),
        ({"name": "accuracy", "params": {"rel_tol": -1}}, r"'accuracy': param 'rel_tol' must be >= 0, got -1"),
        ({"name": "strict_accuracy", "params": {"rel_tol": float("nan")}}, r"param 'rel_tol' must be a finite number"),
        ({"name": "accuracy", "params": {"deadline_s": -5}}, r"'accuracy': param 'deadline_s' must be > 0"),
        ({"name": "accuracy", "params": {"deadline_s": 0}}, r"param 'deadline_s' must be > 0"),
        ({"name": "accuracy", "params": {"deadline_s": float("inf")}}, r"param 'deadline_s' must be a finite number"),
        ({"name": "cosine_length", "params": {"deadline_s": -1.0}}, r"'cosine_length': param 'deadline_s' must be > 0"),
        ({"name": "accuracy", "params": {"final_answer_pattern": "("}},
         r"'accuracy': param 'final_answer_pattern' is not a valid regular expression"),
        ({"name": "format", "params": {"final_answer_pattern": "[a"}},
         r"'format': param 'final_answer_pattern' is not a valid regular expression"),
    ],
)
def test_bad_param_value_is_a_user_error_naming_it(spec, message):
    with pytest.raises(UserError, match=message):
        build_rewards([spec])


def test_a_bad_final_answer_pattern_is_a_user_error():
    # Under any answer format, when the recipe loads; and from the library, when the pattern is used.
    with pytest.raises(UserError, match="param 'final_answer_pattern' is not a valid regular expression"):
        build_rewards([{"name": "accuracy", "params": {"final_answer_pattern": "("}}])
    with pytest.raises(UserError, match="final_answer_pattern '\\(' is not a valid regular expression"):
        accuracy_reward(["<think>x</think>Answer: 1"], answer=["1"], answer_format="final_answer",
                        final_answer_pattern="(")


@pytest.mark.parametrize("params", [{"rel_tol": 0}, {"rel_tol": 0.01, "deadline_s": 0.5}, {"final_answer_pattern": "Result"}])
def test_good_param_values_build(params):
    assert build_rewards([{"name": "accuracy", "params": params}])[0].params == params


def test_strict_accuracy_is_registered_and_bound():
    strict = build_rewards([{"name": "strict_accuracy", "params": {"answer_format": "boxed", "think_prefilled": True}}])[0]
    assert strict([r"2+2</think> so \boxed{4}", r"2+2</think> so \boxed{4} or 5", r"\boxed{4}"], answer=["4"] * 3) == [
        1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "specs,golds,prefill,expected",
    [
        ([{"name": "accuracy"}, {"name": "format", "weight": 0.2}], ["4", "12"], False, []),
        ([{"name": "accuracy"}, {"name": "format", "params": {"answer_format": "boxed"}}], ["4"], None,
         ["pays for the 'boxed' answer format, but no reward can read it: accuracy (answer_tag)"]),
        ([{"name": "accuracy", "params": {"answer_format": "any"}}, {"name": "format", "params": {"answer_format": "boxed"}}],
         ["4"], None, []),
        ([{"name": "format"}], ["4"], None, ["no reward reads the answer"]),
        ([{"name": "accuracy", "params": {"final_form": False}}], ["4", "1/2", "0.5"], None,
         ["'accuracy' has final_form: false, but 3/3 sample answers are numbers"]),
        ([{"name": "accuracy", "params": {"final_form": False}}], [r"x^2+1", r"(r+5)^2"], None, []),
        ([{"name": "accuracy"}, {"name": "format", "weight": 0.2}], ["4"], True,
         ["'format' has think_prefilled: false but the prompt opens the thought"]),
        ([{"name": "accuracy"}, {"name": "format", "params": {"think_prefilled": True}}], ["4"], True, []),
        ([{"name": "strict_accuracy", "params": {"think_prefilled": True}}], ["4"], False,
         ["'strict_accuracy' has think_prefilled: true but the prompt does not open the thought"]),
    ],
)
def test_check_reward_setup_warns(specs, golds, prefill, expected):
    from rewards import check_reward_setup

    warnings = check_reward_setup(specs, golds, prefill_think=prefill)
    assert len(warnings) == len(expected)
    for warning, fragment in zip(warnings, expected):
        assert fragment in warning


def test_check_reward_setup_rejects_what_cannot_build():
    from rewards import check_reward_setup

    with pytest.raises(UserError, match="answer_format"):
        check_reward_setup([{"name": "accuracy", "params": {"answer_format": "nope"}}], ["1"])


@pytest.mark.parametrize("options", [{"deadline_s": -5.0}, {"deadline_s": float("nan")}, {"rel_tol": -1e-4}])
def test_library_calls_check_limits_too(options):
    with pytest.raises(UserError, match=next(iter(options))):
        accuracy_reward(["<think>x</think><answer>1</answer>"], answer=["1"], **options)
