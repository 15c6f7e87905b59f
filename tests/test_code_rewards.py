"""Code rewards: code extraction, test-format detection from columns, and the reference solutions of
HumanEval and MBPP passing (and broken versions failing) through the real sandbox."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from rewards.code import binary_code_reward, build_program, code_reward, extract_code, row_tests

needs_sandbox = pytest.mark.skipif(
    not (shutil.which("bwrap") or shutil.which("unshare")), reason="no namespace sandbox on this machine"
)


def fenced(code: str, lang: str = "python") -> str:
    return f"Here is my solution.\n```{lang}\n{code}\n```\nDone."


@pytest.mark.parametrize(
    "text,expected",
    [
        (fenced("x = 1"), "x = 1\n"),
        (fenced("x = 1", "py"), "x = 1\n"),
        (fenced("x = 1", ""), "x = 1\n"),
        ("```python\na = 1\n```\n```python\nb = 2\n```", "b = 2\n"),
        ("```cpp\nint main() {}\n```", None),
        ("no fence at all: def f(): pass", None),
        ("```python\nunterminated", None),
    ],
)
def test_extract_code(text, expected):
    assert extract_code(text) == expected


def test_build_program_humaneval_full_function_or_body():
    prompt = "from typing import List\n\ndef helper():\n    return 1\n\ndef f(xs: List[int]) -> int:\n    \"\"\"doc\"\"\"\n"
    full = build_program("def f(xs):\n    return helper()\n", prompt, "f")
    assert full.startswith(prompt) and full.rstrip().endswith("return helper()")
    body = build_program("    return helper()\n", prompt, "f")
    assert body == prompt + "    return helper()\n"


def test_row_without_tests_is_unscorable():
    assert row_tests({"prompt": "p", "solution": "s"}) is None
    assert code_reward([fenced("x = 1")], prompt=["p"]) == [None]
    assert row_tests({"inputs": ["1"], "outputs": ["1", "2"]}) is None  # mismatched lists


@needs_sandbox
def test_rewards_on_mbpp_style_rows():
    tests = [["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(2, 2) == 5"]] * 4
    completions = [
        fenced("def add(a, b):\n    return a + b"),  # passes 2 of 3 (the third test is wrong on purpose)
        fenced("def add(a, b):\n    return a - b"),  # passes 1 of 3 (0 - 0)
        fenced("def add(a, b)\n    return a + b"),  # syntax error: 0, not an exception
        [{"role": "assistant", "content": "I think add is easy."}],  # no code: 0
    ]
    assert code_reward(completions, test_list=tests) == pytest.approx([2 / 3, 1 / 3, 0.0, 0.0])
    assert binary_code_reward(completions, test_list=tests) == [0.0, 0.0, 0.0, 0.0]
    assert binary_code_reward(completions[:1], test_list=[tests[0][:2]]) == [1.0]


@needs_sandbox
def test_rewards_on_stdio_rows():
    inputs, outputs = [["3\n1 2 3\n", "1\n5\n"]] * 2, [["6\n", "5"]] * 2
    good = fenced("n = int(input())\nprint(sum(map(int, input().split())))")
    wrong = fenced("n = int(input())\nprint(max(map(int, input().split())))")  # right only when n == 1
    assert code_reward([good, wrong], inputs=inputs, outputs=outputs) == [1.0, 0.5]


@needs_sandbox
def test_setup_code_and_imports_are_prepended():
    completion = fenced("def f():\n    return math.pi > 3")
    assert code_reward([completion], test_list=[["assert f()"]], test_setup_code=["import math"]) == [1.0]
    assert code_reward([completion], test_list=[["assert f()"]], test_imports=[["import math"]]) == [1.0]
    assert code_reward([completion], test_list=[["assert f()"]]) == [0.0]  # NameError without the setup


def _jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@needs_sandbox
def test_humaneval_canonical_solutions_pass_and_broken_ones_fail(data_dir):
    rows = _jsonl(data_dir / "humaneval" / "test.jsonl")
    assert len(rows) == 164
    columns = {k: [r[k] for r in rows] for k in ("prompt", "test", "entry_point")}
    # The canonical solution is a body continuing the prompt, as a raw completion would be.
    good = [fenced(r["canonical_solution"].rstrip("\n")) for r in rows]
    assert sum(code_reward(good, **columns)) == 164
    # Broken: every function returns None immediately.
    broken = [fenced(f"def {r['entry_point']}(*args, **kwargs):\n    return None") for r in rows]
    assert sum(binary_code_reward(broken, **columns)) == 0


@needs_sandbox
def test_mbpp_reference_solutions_pass_and_broken_ones_fail(data_dir):
    rows = [r for r in _jsonl(data_dir / "mbpp" / "mbpp_sanitized.jsonl")]
    columns = {"test_list": [r["test_list"] for r in rows], "test_imports": [r["test_imports"] for r in rows]}
    good = [fenced(r["code"]) for r in rows]
    # Task 123 (amicable numbers below 9999) needs ~5 s of CPU: the one slow reference.
    assert code_reward(good, timeout=20, **columns) == [1.0] * len(rows)
    full = [r for r in _jsonl(data_dir / "mbpp" / "mbpp_full.jsonl") if 11 <= r["task_id"] <= 510]
    columns = {"test_list": [r["test_list"] for r in full], "test_setup_code": [r["test_setup_code"] for r in full]}
    scores = binary_code_reward([fenced(r["code"]) for r in full], timeout=20, **columns)
    assert scores == [1.0] * len(full)
    # Broken: the reference with its last return value replaced fails at least one test.
    broken = [fenced(r["code"] + "\n\nimport builtins\n" + _sabotage(r)) for r in rows[:50]]
    head = rows[:50]
    scores = binary_code_reward(broken, test_list=[r["test_list"] for r in head], test_imports=[r["test_imports"] for r in head])
    assert sum(scores) == 0


def _sabotage(row: dict) -> str:
    """Redefine the function under test to return a wrong marker value."""
    name = row["test_list"][0].split("assert", 1)[1].strip().lstrip("(").split("(")[0].strip()
    name = name.replace("not ", "").replace("set", "").strip("( ")
    return f"def {name}(*args, **kwargs):\n    return object()"


_ALWAYS_EQUAL = (
    "class E:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
    "    def __sub__(self, o): return self\n    __rsub__ = __sub__\n    def __abs__(self): return self\n"
    "    def __lt__(self, o): return True\n    __hash__ = object.__hash__\n"
)


@pytest.mark.slow
@needs_sandbox
def test_an_object_whose_eq_always_answers_true_passes_no_benchmark_task(data_dir):
    """Judged in the program's process, this object passed 157/164 HumanEval and 391/427 MBPP tasks."""
    rows = _jsonl(data_dir / "humaneval" / "test.jsonl")
    cheats = [fenced(f"{_ALWAYS_EQUAL}def {r['entry_point']}(*a, **k):\n    return E()") for r in rows]
    columns = {k: [r[k] for r in rows] for k in ("prompt", "test", "entry_point")}
    assert sum(binary_code_reward(cheats, timeout=2, **columns)) == 0
    rows = _jsonl(data_dir / "mbpp" / "mbpp_sanitized.jsonl")
    names = [re.search(r"def\s+(\w+)\s*\(", r["code"]).group(1) for r in rows]
    cheats = [fenced(f"{_ALWAYS_EQUAL}def {name}(*a, **k):\n    return E()") for name in names]
    columns = {"test_list": [r["test_list"] for r in rows], "test_imports": [r["test_imports"] for r in rows]}
    assert sum(binary_code_reward(cheats, timeout=2, **columns)) == 0
