"""Synthetic reasoning tasks with verifiable answers and worked solutions.

Three seeded task families, each with a difficulty knob (1-4):

- `arithmetic`: 1 = one 2-digit addition/subtraction (the GRPO benchmark), 2 = three one-digit numbers
  with `+ - *`, precedence and parentheses (two steps, every value 0-100: the CPU demo's task),
  3 = four numbers up to 20 with parentheses, 4 = fractions (answers like `3/4`).
- `linear_equation`: 1 = `x + b = c`, 2 = `ax + b = c`, 3 = `ax + b = cx + d`, 4 = fractional solutions.
- `countdown`: reach a target with every given number exactly once (TinyZero's task); 3-5 numbers.

Every record has `prompt`, `answer` (a string), `solution` (the worked steps, one rewrite per line),
`task`, `difficulty`, plus task columns (countdown: `numbers`, `target`). Whether a problem is in the
train or the test split is a hash of the problem itself (not of the seed or its position), so a test
problem never appears in train, whatever seeds the two sets were drawn with.

    r1kit data synth --task arithmetic --n 1000 --seed 1 --out data/arith_train.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from r1kit.errors import UserError

TASKS = ("arithmetic", "linear_equation", "countdown")
DIFFICULTIES = (1, 2, 3, 4)
SPLITS = ("train", "test")
TEST_PERCENT = 10  # share of each task's problem space that is held out
# A draw can repeat an earlier problem or land in the other split; give up after this many draws per row.
_DRAWS_PER_ROW = 200


@dataclass(frozen=True)
class _Problem:
    key: str  # the problem without its phrasing; decides the split and deduplicates
    prompt: str
    answer: str
    solution: str
    columns: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- expression trees
# A tree is a Fraction (leaf) or a tuple (op, left, right); the tree encodes precedence, so the
# worked solution can reduce one innermost operation per line.

Tree = Fraction | tuple
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_APPLY: dict[str, Callable[[Fraction, Fraction], Fraction]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}


def fmt(x: Fraction) -> str:
    """Canonical answer text: `7`, `-3`, `5/4`.

    >>> fmt(Fraction(10, 8)), fmt(Fraction(-6, 2))
    ('5/4', '-3')
    """
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def value(tree: Tree) -> Fraction:
    if isinstance(tree, Fraction):
        return tree
    op, left, right = tree
    return _APPLY[op](value(left), value(right))


def render(tree: Tree, parent: str | None = None, right: bool = False) -> str:
    """Infix text with only the parentheses the tree needs.

    >>> F = Fraction
    >>> render(("*", ("+", F(1), F(2)), ("-", F(7), ("-", F(4), F(3)))))
    '(1 + 2) * (7 - (4 - 3))'
    """
    if isinstance(tree, Fraction):
        text = fmt(tree)
        needs = parent is not None and (tree < 0 or (tree.denominator != 1 and parent in "*/"))
        return f"({text})" if needs else text
    op, left, right_tree = tree
    text = f"{render(left, op)} {op} {render(right_tree, op, right=True)}"
    if parent is not None and (_PREC[op] < _PREC[parent] or (right and _PREC[op] == _PREC[parent])):
        return f"({text})"
    return text


def _reduce_once(tree: Tree) -> Tree:
    """Replace the leftmost operation whose operands are both numbers by its value."""
    op, left, right = tree
    if isinstance(left, Fraction) and isinstance(right, Fraction):
        return value(tree)
    if not isinstance(left, Fraction):
        return (op, _reduce_once(left), right)
    return (op, left, _reduce_once(right))


def worked_steps(tree: Tree) -> list[str]:
    """The expression, then `= ...` after each single reduction, ending with the value.

    >>> F = Fraction
    >>> worked_steps(("-", ("+", F(12), ("*", F(7), F(3))), F(5)))
    ['12 + 7 * 3 - 5', '= 12 + 21 - 5', '= 33 - 5', '= 28']
    """
    lines = [render(tree)]
    while not isinstance(tree, Fraction):
        tree = _reduce_once(tree)
        lines.append(f"= {render(tree)}")
    return lines


def _random_tree(rng: random.Random, leaves: list[Fraction], ops: str) -> Tree:
    """Combine random pairs until one tree is left: every shape (hence parentheses) is possible."""
    nodes: list[Tree] = list(leaves)
    while len(nodes) > 1:
        i, j = sorted(rng.sample(range(len(nodes)), 2))
        right, left = nodes.pop(j), nodes.pop(i)
        nodes.insert(i, (rng.choice(ops), left, right))
    return nodes[0]


# ---------------------------------------------------------------------------------- arithmetic


def _arithmetic(rng: random.Random, difficulty: int) -> _Problem | None:
    if difficulty == 1:
        return _two_digit(rng)
    if difficulty == 2:
        tree = _random_tree(rng, [Fraction(rng.randint(2, 9)) for _ in range(3)], "+-*")
        if not _within(tree, 0, 100):  # small, non-negative steps: each line is a fact a tiny model can learn
            return None
    elif difficulty == 3:
        tree = _random_tree(rng, [Fraction(rng.randint(2, 20)) for _ in range(4)], "+-*")
    else:
        fracs = [Fraction(rng.randint(1, 9), rng.randint(2, 9)) for _ in range(rng.randint(2, 3))]
        if all(f.denominator == 1 for f in fracs):
            return None
        tree = _random_tree(rng, fracs, "+-*")
    if abs(value(tree)) > 1000:  # keep answers short enough for a tiny model's context
        return None
    expr = render(tree)
    return _Problem(
        key=expr,
        prompt=f"What is {expr}?",
        answer=fmt(value(tree)),
        solution="\n".join(worked_steps(tree)),
    )


def _within(tree: Tree, low: int, high: int) -> bool:
    """Whether the value of the tree and of every subtree lies in [low, high]."""
    if isinstance(tree, Fraction):
        return low <= tree <= high
    return low <= value(tree) <= high and _within(tree[1], low, high) and _within(tree[2], low, high)


def _two_digit(rng: random.Random) -> _Problem:
    """`a ± b` with 2-digit numbers and a non-negative result; adds/subtracts tens, then units."""
    a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
    if op == "-" and a < b:
        a, b = b, a
    tens, units = b - b % 10, b % 10
    partial = a + tens if op == "+" else a - tens
    result = a + b if op == "+" else a - b
    lines = [f"{a} {op} {b}"]
    if units:
        lines += [f"= {a} {op} {tens} {op} {units}", f"= {partial} {op} {units}"]
    lines.append(f"= {result}")
    return _Problem(key=f"{a} {op} {b}", prompt=f"What is {a} {op} {b}?", answer=str(result), solution="\n".join(lines))


# ----------------------------------------------------------------------------- linear equations


def _side(coef: int, const: int) -> str:
    """`3x - 5`, `x`, `-x + 2`, `7` (coef 0)."""
    if coef == 0:
        return str(const)
    term = {1: "x", -1: "-x"}.get(coef, f"{coef}x")
    if const == 0:
        return term
    return f"{term} {'+' if const > 0 else '-'} {abs(const)}"


def _minus(a: int, b: int) -> str:
    """`a - b` written so that subtracting a negative reads as addition."""
    if b == 0:
        return str(a)
    return f"{a} - {b}" if b > 0 else f"{a} + {-b}"


def _linear_equation(rng: random.Random, difficulty: int) -> _Problem | None:
    if difficulty == 1:
        a, c, x, b = 1, 0, rng.randint(0, 99), rng.choice([1, -1]) * rng.randint(1, 99)
        d = x + b
    elif difficulty == 2:
        a, c, x, b = rng.randint(2, 9), 0, rng.randint(-10, 10), rng.choice([1, -1]) * rng.randint(1, 20)
        d = a * x + b
    elif difficulty == 3:
        c, a = sorted(rng.sample(range(1, 10), 2))
        x, b = rng.randint(-10, 10), rng.randint(-20, 20)
        d = (a - c) * x + b
    else:
        a, c, b, d = rng.randint(2, 9), 0, rng.randint(-20, 20), rng.randint(-20, 20)
        if (d - b) % a == 0:
            return None
    k, rhs = a - c, d - b
    lines = [f"{_side(a, b)} = {_side(c, d)}"]
    if c:
        lines.append(f"{_side(a, 0)} - {_side(c, 0)} = {_minus(d, b)}")
    elif b:
        lines.append(f"{_side(a, 0)} = {_minus(d, b)}")
    if c or b:
        lines.append(f"{_side(k, 0)} = {rhs}")
    solution = Fraction(rhs, k)
    if k != 1:
        lines.append(f"x = {rhs} / {k}")
        lines.append(f"x = {fmt(solution)}")
    equation = lines[0]
    return _Problem(
        key=f"{a},{b},{c},{d}",
        prompt=f"Solve for x: {equation}",
        answer=fmt(solution),
        solution="\n".join(lines),
    )


# ------------------------------------------------------------------------------------ countdown

_COUNTDOWN = {1: (3, 20), 2: (4, 20), 3: (4, 50), 4: (5, 50)}  # difficulty -> (how many numbers, max)


def _combine(rng: random.Random, left: Tree, right: Tree) -> Tree:
    """A random operation that keeps every intermediate a positive integer (Countdown's rules)."""
    a, b = value(left), value(right)
    if a < b:
        left, right, a, b = right, left, b, a
    ops = ["+", "*"] + (["-"] if a != b else []) + (["/"] if b > 1 and a % b == 0 else [])
    return (rng.choice(ops), left, right)


def _countdown(rng: random.Random, difficulty: int) -> _Problem | None:
    count, top = _COUNTDOWN[difficulty]
    numbers = [rng.randint(1, top) for _ in range(count)]
    nodes: list[Tree] = [Fraction(n) for n in numbers]
    while len(nodes) > 1:
        i, j = sorted(rng.sample(range(len(nodes)), 2))
        right, left = nodes.pop(j), nodes.pop(i)
        nodes.append(_combine(rng, left, right))
    tree = nodes[0]
    target = int(value(tree))
    if target > 1000:
        return None
    listed = ", ".join(map(str, numbers))
    return _Problem(
        key=f"{sorted(numbers)}->{target}",
        prompt=f"Using the numbers [{listed}], make {target}. "
        "You may use +, -, *, / and parentheses, and must use each number exactly once.",
        answer=render(tree),
        solution="\n".join(worked_steps(tree)),
        columns={"numbers": numbers, "target": target},
    )


_MAKERS: dict[str, Callable[[random.Random, int], _Problem | None]] = {
    "arithmetic": _arithmetic,
    "linear_equation": _linear_equation,
    "countdown": _countdown,
}


# ------------------------------------------------------------------------------------- public API


def split_of(task: str, key: str) -> str:
    """'test' for TEST_PERCENT % of problems, chosen by a hash of the problem (stable across runs)."""
    digest = hashlib.sha256(f"{task}|{key}".encode()).digest()
    return "test" if int.from_bytes(digest[:4], "big") % 100 < TEST_PERCENT else "train"


def _check(task: str, n: int, difficulty: int, split: str) -> None:
    if task not in TASKS:
        raise UserError(f"unknown synthetic task '{task}'; choose one of: {', '.join(TASKS)}.")
    if difficulty not in DIFFICULTIES:
        raise UserError(f"difficulty {difficulty} is not available; choose one of {list(DIFFICULTIES)}.")
    if split not in SPLITS:
        raise UserError(f"split '{split}' is not available; choose 'train' or 'test'.")
    if n < 1:
        raise UserError(f"n must be at least 1 (got {n}).")


def generate(task: str, n: int, seed: int, difficulty: int = 1, split: str = "train") -> list[dict]:
    """`n` distinct problems of one task, split and difficulty; the same arguments give the same list.

    >>> rows = generate("arithmetic", n=2, seed=0)
    >>> sorted(rows[0])
    ['answer', 'difficulty', 'prompt', 'solution', 'task']
    >>> rows == generate("arithmetic", n=2, seed=0)
    True
    """
    _check(task, n, difficulty, split)
    make = _MAKERS[task]
    rng = random.Random(f"{task}/{difficulty}/{split}/{seed}")  # str seeds are stable across processes
    seen: set[str] = set()
    rows: list[dict] = []
    draws, budget = 0, _DRAWS_PER_ROW * n + 1000
    while len(rows) < n:
        if draws == budget:
            raise UserError(
                f"found only {len(rows)} distinct {split} problems for {task} at difficulty {difficulty} "
                f"after {draws} draws; ask for fewer than {n} or use a higher difficulty."
            )
        draws += 1
        p = make(rng, difficulty)
        if p is None or p.key in seen or split_of(task, p.key) != split:
            continue
        seen.add(p.key)
        rows.append({"prompt": p.prompt, "answer": p.answer, "solution": p.solution,
                     "task": task, "difficulty": difficulty, **p.columns})
    return rows


def format_completion(record: dict) -> str:
    """The R1-style SFT target for a record.

    >>> print(format_completion({"solution": "2 + 2\\n= 4", "answer": "4"}))
    <think>
    2 + 2
    = 4
    </think>
    <answer>4</answer>
    """
    return f"<think>\n{record['solution']}\n</think>\n<answer>{record['answer']}</answer>"


def pretrain_text(record: dict) -> str:
    """A plain-text worked problem for causal-LM pretraining (no chat template, no tags).

    >>> print(pretrain_text({"prompt": "What is 2 + 2?", "solution": "2 + 2\\n= 4", "answer": "4"}))
    Problem: What is 2 + 2?
    Solution:
    2 + 2
    = 4
    Answer: 4
    """
    return f"Problem: {record['prompt']}\nSolution:\n{record['solution']}\nAnswer: {record['answer']}"


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--out '{path}' is a directory; give a file name such as {path}/data.jsonl.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)  # a crash never leaves a half-written file under the real name
    return path


def cli_synth(argv: list[str]) -> int:
    """`r1kit data synth`: write one split of a synthetic task to JSONL."""
    parser = argparse.ArgumentParser(
        prog="r1kit data synth",
        description="Write seeded synthetic problems (prompt, answer, worked solution) to a JSONL file.",
    )
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--n", type=int, required=True, help="number of distinct problems")
    parser.add_argument("--seed", type=int, required=True, help="sampling seed (other seeds give other problems)")
    parser.add_argument("--out", required=True, help="output .jsonl file")
    parser.add_argument("--difficulty", type=int, default=1, choices=DIFFICULTIES)
    parser.add_argument("--split", default="train", choices=SPLITS,
                        help="train or held-out test problems (disjoint whatever the seeds)")
    args = parser.parse_args(argv)
    rows = generate(args.task, args.n, args.seed, args.difficulty, args.split)
    path = write_jsonl(rows, args.out)
    print(f"wrote {len(rows)} {args.split} problems ({args.task}, difficulty {args.difficulty}) to {path}")
    return 0
