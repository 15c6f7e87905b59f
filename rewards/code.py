"""Code rewards: run the last fenced Python block of a completion against the row's tests in the sandbox.

The test format is read from the dataset columns present in the row:

- HumanEval: `test` + `entry_point` (+ `prompt`). The program is `prompt` followed by the completion's
  code (a full function that redefines the prompt's stub, or the body continuing it), and the one test
  is the prompt's helpers (`prompt_helpers`, re-run so that a redefined `poly` is not the one the test
  calls) + `test` + `check(entry_point)`, as in openai/human-eval. HumanEval is all-or-nothing.
- MBPP: `test_list` (+ `test_setup_code` and/or `test_imports`): one test per assert.
- stdin/stdout (Codeforces / LiveCodeBench style): `inputs` + `outputs` lists; a case passes when
  stdout equals the expected output up to whitespace.

A row with no tests cannot be scored (`None`); a completion with no fenced block or code that does
not compile scores 0.0 without being run (code nested past the parser's limits too: the host's
compile raises MemoryError or RecursionError there, which must not take the training step down).
Everything else runs in `rewards.sandbox` (or a Piston server when `remote_url` is set).

What the program prints or exits with cannot earn reward: assert tests are judged on the host (the
sandbox reports each assert's program-side values as plain builtins, the comparison with the literal
expected value happens outside; an object whose `__eq__` always answers True scores 0), every
required assert must report exactly once and the guard must see the test reach its end (an early
`exit(0)` scores 0), the test runs against the prompt's own helpers and modules put back as they
were before the program (a redefined `poly` or a patched `math.factorial` scores 0), and stdio
outputs are compared on the host. The shortcuts
tried so far, and what each scores, are the rows of `tests/test_reward_hacking_code.py`; the
limits are in docs/sandbox.md.
"""

from __future__ import annotations

import ast
import re
import warnings
from functools import lru_cache
from typing import Any

from rewards.common import completion_text
from rewards.registry import register
from rewards.sandbox import PistonSandbox, default_sandbox

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(text: str) -> str | None:
    """The last fenced code block tagged python/py (or untagged); None when there is none.

    >>> extract_code("try\\n```python\\nx = 1\\n```\\nthen\\n```python\\nx = 2\\n```")
    'x = 2\\n'
    >>> extract_code("no code here") is None
    True
    """
    blocks = [code for lang, code in _FENCE.findall(text)]
    return blocks[-1] if blocks else None


def row_tests(row: dict[str, Any]) -> tuple[str, list, str] | None:
    """(style, tests, program context) for one dataset row, or None if it carries no tests.

    The context is what `build_program` joins to the completion's code: HumanEval's prompt (before
    it), MBPP's setup code (after it, as in MBPP's harness: the setup may use the program's classes).

    >>> row_tests({"test_list": ["assert f() == 1"], "test_setup_code": "import math"})
    ('assert', ['import math\\nassert f() == 1'], 'import math\\n')
    >>> row_tests({"inputs": ["1 2\\n"], "outputs": ["3\\n"]})
    ('stdio', [('1 2\\n', '3\\n')], '')
    >>> row_tests({"prompt": "x"}) is None
    True
    """
    if row.get("test") and row.get("entry_point"):
        helpers = prompt_helpers(row.get("prompt") or "", row["entry_point"])
        test = f"{helpers}\n\n{row['test']}\n\ncheck({row['entry_point']})\n"
        return "assert", [test], row.get("prompt") or ""
    if row.get("test_list"):
        setup = "\n".join(s for s in (row.get("test_setup_code"), *(row.get("test_imports") or [])) if s)
        # The setup also ends the program (`build_program`): the test runs in a copy of the program's
        # namespace, so a function that uses `math` imported only by the setup must find it in its own.
        return "assert", [f"{setup}\n{t}" if setup else t for t in row["test_list"]], f"{setup}\n" if setup else ""
    if row.get("inputs") and row.get("outputs"):
        if len(row["inputs"]) != len(row["outputs"]):
            return None
        return "stdio", list(zip(row["inputs"], row["outputs"])), ""
    return None


@lru_cache(maxsize=1024)
def prompt_helpers(prompt: str, entry_point: str) -> str:
    """The HumanEval prompt without the entry point's stub: its imports and helper functions, which
    the test re-runs after the program so that it calls the prompt's `poly` / `encode_cyclic`, not a
    version the completion redefined.

    >>> print(prompt_helpers("import math\\ndef poly(xs, x):\\n    return 0\\ndef find_zero(xs):\\n    pass\\n", "find_zero"))
    import math
    <BLANKLINE>
    def poly(xs, x):
        return 0
    """
    if not prompt:
        return ""
    module = ast.parse(prompt)  # dataset text; a prompt that does not parse is a broken row: it raises
    stub = (ast.FunctionDef, ast.AsyncFunctionDef)
    module.body = [s for s in module.body if not (isinstance(s, stub) and s.name == entry_point)]
    return ast.unparse(module)


def build_program(code: str, prefix: str, entry_point: str | None) -> str:
    """The program to run: HumanEval completions continue (or redefine) the prompt; MBPP's setup
    code (`prefix` of a row without an entry point) follows the completion.

    >>> build_program("def f():\\n    return math.pi\\n", "import math\\n", None)
    'def f():\\n    return math.pi\\n\\nimport math\\n'
    """
    if not prefix:
        return code
    if not entry_point:
        return f"{code}\n{prefix}"
    if entry_point and re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        return f"{prefix}\n\n{code}"  # a full function replaces the prompt's stub; helpers stay
    return prefix + code


def _compiles(program: str) -> bool:
    try:
        with warnings.catch_warnings():  # e.g. invalid escapes: the sandbox reports those, not us
            warnings.simplefilter("ignore")
            compile(program, "main.py", "exec")  # compile only: nothing from the completion runs here
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError):
        return False  # MemoryError/RecursionError: nested past the parser's stack (`x = ------...1`, `1 + 1 + ...`)
    return True


def _rows(n: int, columns: dict[str, list]) -> list[dict[str, Any]]:
    return [{k: v[i] for k, v in columns.items() if isinstance(v, (list, tuple)) and len(v) == n} for i in range(n)]


def _score(completions: list, columns: dict, timeout: float, memory_mb: int, remote_url: str, binary: bool) -> list[float | None]:
    rows = _rows(len(completions), columns)
    scores: list[float | None] = [None] * len(completions)
    jobs: dict[str, list] = {"assert": [], "stdio": []}  # style -> [(index, program, tests)]
    for i, (completion, row) in enumerate(zip(completions, rows)):
        spec = row_tests(row)
        if spec is None:
            continue
        style, tests, prefix = spec
        code = extract_code(completion_text(completion))
        program = build_program(code, prefix, row.get("entry_point")) if code is not None else None
        if program is None or not _compiles(program):
            scores[i] = 0.0
            continue
        jobs[style].append((i, program, tests))
    sandbox = PistonSandbox(remote_url) if remote_url else default_sandbox()
    for style, items in jobs.items():
        if not items:
            continue
        results = sandbox.run_tests_batch(
            [p for _, p, _ in items], [t for _, _, t in items], style,
            timeout=timeout, memory_mb=memory_mb, stop_on_first_failure=binary,
        )  # fmt: skip
        for (i, _, tests), res in zip(items, results):
            passed = sum(r.passed for r in res)
            scores[i] = float(passed == len(tests)) if binary else passed / len(tests)
    return scores


@register("code")
def code_reward(completions: list, *, timeout: float = 5.0, memory_mb: int = 512, remote_url: str = "",
                **columns) -> list[float | None]:  # fmt: skip
    """Fraction of the row's tests the completion's last ```python block passes (see module docstring).

    `timeout` is per test in seconds, `memory_mb` per program; `remote_url` sends programs to a
    Piston server instead of the local sandbox.

    >>> code_reward(["```python\\ndef add(a, b):\\n    return a + b\\n```", "no code"],
    ...             test_list=[["assert add(1, 2) == 3", "assert add(2, 2) == 5"]] * 2)
    [0.5, 0.0]
    """
    return _score(completions, columns, timeout, memory_mb, remote_url, binary=False)


@register("binary_code")
def binary_code_reward(completions: list, *, timeout: float = 5.0, memory_mb: int = 512, remote_url: str = "",
                       **columns) -> list[float | None]:  # fmt: skip
    """1.0 if the completion passes every test of its row, else 0.0 (stops at the first failing test).

    >>> binary_code_reward(["```python\\nprint(sum(map(int, input().split())))\\n```"],
    ...                    inputs=[["1 2", "5 5"]], outputs=[["3", "10"]], prompt=["Add two numbers."])
    [1.0]
    """
    return _score(completions, columns, timeout, memory_mb, remote_url, binary=True)
