"""Synthetic tasks: determinism, disjoint splits, answers checked independently with sympy, CLI."""

from __future__ import annotations

import json
import re

import pytest
import sympy
from sympy.parsing.sympy_parser import (
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

from r1kit import synth
from r1kit.errors import UserError

CASES = [(t, d) for t in synth.TASKS for d in synth.DIFFICULTIES]
_IMPLICIT = standard_transformations + (implicit_multiplication_application,)


def exact(text: str) -> sympy.Expr:
    return sympy.sympify(text, rational=True)


def check_answer(row: dict) -> None:
    """Re-derive the answer from the prompt alone, with sympy rather than the generator's code."""
    if row["task"] == "arithmetic":
        expr = re.fullmatch(r"What is (.+)\?", row["prompt"])[1]
        assert exact(expr) == exact(row["answer"]), row
    elif row["task"] == "linear_equation":
        lhs, rhs = re.fullmatch(r"Solve for x: (.+)", row["prompt"])[1].split(" = ")
        x = sympy.Symbol("x")
        sides = [parse_expr(s, transformations=_IMPLICIT, local_dict={"x": x}) for s in (lhs, rhs)]
        assert sympy.solve(sympy.Eq(*sides), x) == [exact(row["answer"])], row
    else:
        assert exact(row["answer"]) == row["target"], row
        assert sorted(map(int, re.findall(r"\d+", row["answer"]))) == sorted(row["numbers"]), row
        assert f"[{', '.join(map(str, row['numbers']))}]" in row["prompt"] and str(row["target"]) in row["prompt"]


@pytest.mark.parametrize("task,difficulty", CASES)
@pytest.mark.parametrize("split", synth.SPLITS)
def test_answers_are_correct_and_rows_distinct(task, difficulty, split):
    rows = synth.generate(task, 200, seed=5, difficulty=difficulty, split=split)
    assert len(rows) == 200 and len({r["prompt"] for r in rows}) == 200
    for row in rows:
        assert (row["task"], row["difficulty"]) == (task, difficulty)
        assert isinstance(row["answer"], str) and row["solution"]
        check_answer(row)


@pytest.mark.parametrize("task,difficulty", [c for c in CASES if c[0] != "linear_equation"])
def test_every_solution_line_keeps_the_value(task, difficulty):
    """Each worked step rewrites the expression without changing its value and ends at the answer."""
    for row in synth.generate(task, 100, seed=1, difficulty=difficulty):
        lines = row["solution"].split("\n")
        result = str(row["target"]) if task == "countdown" else row["answer"]  # countdown answers are expressions
        assert lines[-1] == f"= {result}"
        assert {exact(line.removeprefix("= ")) for line in lines} == {exact(result)}


def test_linear_solution_ends_with_the_answer():
    for d in synth.DIFFICULTIES:
        for row in synth.generate("linear_equation", 100, seed=1, difficulty=d):
            lines = row["solution"].split("\n")
            assert lines[0] == row["prompt"].removeprefix("Solve for x: ")
            assert lines[-1] == f"x = {row['answer']}"


def test_difficulty_1_arithmetic_is_one_two_digit_addition_or_subtraction():
    for row in synth.generate("arithmetic", 300, seed=2, difficulty=1):
        _a, _op, _b = re.fullmatch(r"What is (\d\d) ([+-]) (\d\d)\?", row["prompt"]).groups()
        assert int(row["answer"]) >= 0 and len(row["solution"].split("\n")) <= 4


def test_higher_difficulties_have_fractions_and_parentheses():
    assert any("/" in r["answer"] for r in synth.generate("arithmetic", 50, seed=0, difficulty=4))
    assert any("(" in r["prompt"] for r in synth.generate("arithmetic", 50, seed=0, difficulty=3))
    assert all("/" in r["answer"] for r in synth.generate("linear_equation", 50, seed=0, difficulty=4))


@pytest.mark.parametrize("task", synth.TASKS)
def test_same_seed_same_rows_other_seed_other_rows(task):
    a = synth.generate(task, 50, seed=3, difficulty=2)
    assert a == synth.generate(task, 50, seed=3, difficulty=2)
    b = synth.generate(task, 50, seed=4, difficulty=2)
    assert a != b


@pytest.mark.parametrize("task,difficulty", CASES)
def test_no_test_problem_in_train_whatever_the_seeds(task, difficulty):
    train = synth.generate(task, 400, seed=0, difficulty=difficulty, split="train")
    test = synth.generate(task, 100, seed=99, difficulty=difficulty, split="test")
    if task == "countdown":  # the problem is the numbers and target, however they are ordered
        key = lambda r: (tuple(sorted(r["numbers"])), r["target"])
    else:
        key = lambda r: r["prompt"]
    assert not {key(r) for r in train} & {key(r) for r in test}


def test_split_is_a_stable_hash_with_the_intended_test_share():
    problems = [f"{a} {op} {b}" for a in range(10, 100) for b in range(10, 100) for op in "+-" if op == "+" or a >= b]
    share = sum(synth.split_of("arithmetic", p) == "test" for p in problems) / len(problems)
    assert abs(share - synth.TEST_PERCENT / 100) < 0.02
    assert synth.split_of("arithmetic", "47 + 38") == synth.split_of("arithmetic", "47 + 38")


def test_format_completion_is_the_r1_target():
    row = synth.generate("arithmetic", 1, seed=0)[0]
    text = synth.format_completion(row)
    assert re.fullmatch(r"<think>\n(.+)\n</think>\n<answer>(.+)</answer>", text, re.DOTALL).groups() == (
        row["solution"],
        row["answer"],
    )


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="unknown synthetic task 'algebra'"):
        synth.generate("algebra", 1, seed=0)
    with pytest.raises(UserError, match="difficulty 9"):
        synth.generate("arithmetic", 1, seed=0, difficulty=9)
    with pytest.raises(UserError, match="split 'dev'"):
        synth.generate("arithmetic", 1, seed=0, split="dev")


def test_asking_for_more_problems_than_exist_is_a_user_error():
    # Difficulty 1 arithmetic has ~12k problems, ~10% of them in test.
    with pytest.raises(UserError, match="found only .* distinct test problems"):
        synth.generate("arithmetic", 1500, seed=0, difficulty=1, split="test")


def test_cli_writes_jsonl(tmp_path, capsys):
    out = tmp_path / "sub" / "arith.jsonl"
    argv = ["--task", "countdown", "--n", "30", "--seed", "7", "--out", str(out), "--difficulty", "2", "--split", "test"]
    assert synth.cli_synth(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == synth.generate("countdown", 30, seed=7, difficulty=2, split="test")
    assert "wrote 30 test problems" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        synth.cli_synth(["--help"])
    assert e.value.code == 0
    with pytest.raises(UserError, match="n must be at least 1"):
        synth.cli_synth(["--task", "arithmetic", "--n", "0", "--seed", "1", "--out", str(out)])


# ------------------------------------------------------------------------------ countdown reward


@pytest.mark.parametrize(
    "completion,numbers,target,expected",
    [
        ("<think>x</think><answer>19 - (16 - 8)</answer>", [16, 8, 19], 11, 1.0),
        ("<answer>(16 - 8) - 19</answer>", [16, 8, 19], 11, 0.0),  # wrong value
        ("<answer>19 - 8</answer>", [16, 8, 19], 11, 0.0),  # a number left out
        ("<think>x</think><answer>19 - 16 + 8</answer>", [16, 8, 19], 11, 1.0),
        ("<think>x</think><answer>19 - (16 - 8) = 11</answer>", [16, 8, 19], 11, 1.0),  # restating the target is fine
        ("<think>x</think><answer>8 + 8 - 5</answer>", [8, 5, 8], 11, 1.0),  # repeated numbers count as a multiset
        ("<answer>8 + 8 - 5</answer>", [8, 5, 9], 11, 0.0),
        ("<think>x</think><answer>12 / 4 * 2</answer>", [12, 4, 2], 6, 1.0),  # exact division
        ("<answer>7 / (3 - 3) + 1</answer>", [7, 3, 3, 1], 1, 0.0),  # division by zero
        ("<answer>2 ** 3</answer>", [2, 3], 8, 0.0),  # only + - * /
        ("<answer>__import__('os')</answer>", [1], 1, 0.0),
        ("<answer>-4 + 15</answer>", [4, 15], 11, 0.0),  # unary minus is not a Countdown operation
        ("19 - (16 - 8)", [16, 8, 19], 11, 0.0),  # no answer tag
        ("<answer>19 - (16 - 8)</answer>", [16, 8, 19], 11, 0.0),  # no thought: not the declared format
        ("<think>x</think><answer>1 + 2</answer> then <answer>19 - (16 - 8)</answer>", [16, 8, 19], 11, 0.0),  # two
        ([{"role": "assistant", "content": "<think>x</think><answer>3 * 4</answer>"}], [3, 4], 12, 1.0),
    ],
)
def test_countdown_reward(completion, numbers, target, expected):
    from rewards.countdown import countdown_reward

    assert countdown_reward([completion], numbers=[numbers], target=[target]) == [expected]


@pytest.mark.parametrize("difficulty", synth.DIFFICULTIES)
def test_countdown_reward_accepts_every_generated_reference_solution(difficulty):
    from rewards.countdown import countdown_reward

    rows = synth.generate("countdown", 100, seed=11, difficulty=difficulty)
    scores = countdown_reward(
        [synth.format_completion(r) for r in rows],
        numbers=[r["numbers"] for r in rows], target=[r["target"] for r in rows], prompt=[r["prompt"] for r in rows],
    )
    assert scores == [1.0] * len(rows)
    shifted = countdown_reward(  # the same answers against the next row's target: almost all wrong
        [synth.format_completion(r) for r in rows],
        numbers=[r["numbers"] for r in rows], target=[r["target"] + 1 for r in rows],
    )
    assert shifted == [0.0] * len(rows)
