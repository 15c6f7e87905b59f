r"""Evaluation tasks: which rows a benchmark has, how each is identified, and how it is prompted.

A task wraps a data source from `r1kit.data` (registered benchmarks, offline under `$R1KIT_DATA_DIR` or
from the hub; the synthetic tasks' test split; a custom JSONL file) with what evaluation adds:

- `id_field`: the benchmark's own id, the key of a score-only predictions file (`task_id` for
  HumanEval and MBPP, `unique_id` for MATH-500, `id` for GSM8K and AIME);
- `template`: the user message built from a row. Math uses the DeepSeek-R1 evaluation protocol
  ("Please reason step by step, and put your final answer within \boxed{}."); code asks for the program
  in a fenced ```python block, which is where the `code` reward reads it from.

Every row comes back with `id` (a string), `prompt` (the raw problem), `message` (the templated user
message) and the columns its scorer needs (`answer` for math; `test`/`entry_point` or `test_list` for
code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from r1kit.data import get_benchmark, load_benchmark, read_jsonl
from r1kit.errors import UserError

R1_MATH = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
HUMANEVAL = (
    "Complete the following Python function. Think it through, then give the whole function in a "
    "```python code block.\n\n```python\n{problem}```"
)
MBPP = (
    "{problem}\nYour code should pass these tests:\n\n{tests}\n\n"
    "Think it through, then give the whole program in a ```python code block."
)
CODE = "{problem}\n\nThink it through, then give the whole program in a ```python code block."
PLAIN = "{problem}"
SYNTHETIC_ROWS = 500  # synthetic test rows drawn when max_samples is not set
KINDS = ("math", "code")


@dataclass(frozen=True)
class EvalTask:
    """One benchmark as evaluation sees it."""

    name: str
    kind: str  # "math" | "code": picks the scorer
    id_field: str
    template: str
    answer_format: str = "boxed"  # where a math completion's answer is read (strict rules)
    # The id of a row that lacks `id_field` (hub copies without the local files' id column), from its
    # position in source order: the local files were numbered the same way (see their READMEs).
    positional_id: str | None = None


TASKS: dict[str, EvalTask] = {
    t.name: t
    for t in [
        EvalTask("gsm8k", "math", "id", R1_MATH, positional_id="gsm8k-{split}-{index:05d}"),
        EvalTask("math500", "math", "unique_id", R1_MATH),
        EvalTask("aime24", "math", "id", R1_MATH),
        EvalTask("aime25", "math", "id", R1_MATH, positional_id="{index}"),
        EvalTask("humaneval", "code", "task_id", HUMANEVAL),
        EvalTask("mbpp", "code", "task_id", MBPP),
    ]
}


def get_task(name: str) -> EvalTask:
    """The task of a benchmark name (aliases as in `r1kit.data`), or `synthetic:<task>[:difficulty]`.

    >>> get_task("MATH-500").id_field, get_task("synthetic:arithmetic").answer_format
    ('unique_id', 'answer_tag')
    """
    if name.startswith("synthetic:"):
        # The tiny models learn `<think>...</think><answer>...</answer>` on these prompts, with no instruction.
        return EvalTask(name, "math", "id", PLAIN, answer_format="answer_tag")
    return TASKS[get_benchmark(name).name]


def custom_task(path: str, kind: str, template: str | None, id_field: str) -> EvalTask:
    """A task for a user's JSONL file (`--data FILE --task math|code`)."""
    if kind not in KINDS:
        raise UserError(f"--task must be one of {', '.join(KINDS)} for --data {path}, got {kind!r}.")
    return EvalTask(f"custom:{Path(path).stem}", kind, id_field, template or (R1_MATH if kind == "math" else CODE))


def render(task: EvalTask, row: dict, template: str | None = None) -> str:
    """The user message for one row: `template` (or the task's) with {problem} and, for MBPP, {tests}.

    >>> render(get_task("gsm8k"), {"prompt": "1+1?"})
    '1+1?\\nPlease reason step by step, and put your final answer within \\\\boxed{}.'
    """
    text = template or task.template
    return text.format(problem=row["prompt"], tests="\n".join(row.get("test_list") or []))


def load_task_rows(task: EvalTask, *, split: str = "test", data: str | None = None, prompt_field: str = "prompt",
                   answer_field: str = "answer", max_samples: int | None = None, seed: int = 0,
                   template: str | None = None) -> list[dict]:  # fmt: skip
    """The task's rows with `id`, `prompt`, `message` and scoring columns, in the benchmark's order.

    `max_samples` keeps the first rows (not a shuffle), so a score-only file made for a subset keeps
    matching; a synthetic task draws that many (default `SYNTHETIC_ROWS`) test rows with `seed`.
    """
    if data is not None:
        rows = _custom_rows(Path(data), task, prompt_field, answer_field)
    elif task.name.startswith("synthetic:"):
        rows = _synthetic_rows(task.name, max_samples or SYNTHETIC_ROWS, seed)
    else:
        rows = load_benchmark(task.name, split, bad_rows="error")
    rows = rows[:max_samples] if max_samples else rows
    out = []
    for index, row in enumerate(rows):
        row = dict(row, id=_row_id(task, row, index, split))
        row["message"] = render(task, row, template)
        out.append(row)
    _check_unique_ids(out, task)
    return out


def _row_id(task: EvalTask, row: dict, index: int, split: str) -> str:
    if row.get(task.id_field) is not None:
        return str(row[task.id_field])
    if task.positional_id is None:
        raise UserError(f"{task.name}: row {index + 1} has no id field '{task.id_field}' (fields: {', '.join(row)}); "
                        f"give --id_field the name of the field that identifies each item.")
    return task.positional_id.format(split=split, index=index)


def _check_unique_ids(rows: list[dict], task: EvalTask) -> None:
    seen: set[str] = set()
    for i, row in enumerate(rows, 1):
        if row["id"] in seen:
            raise UserError(f"{task.name}: row {i} repeats id {row['id']!r} (field '{task.id_field}'); ids must be unique.")
        seen.add(row["id"])


def _custom_rows(path: Path, task: EvalTask, prompt_field: str, answer_field: str) -> list[dict]:
    if not path.is_file():
        raise UserError(f"--data {path}: no such file.")
    required = (task.id_field, prompt_field) + ((answer_field,) if task.kind == "math" else ())
    rows = read_jsonl(path, required=required, bad_rows="error")
    out = []
    for row in rows:
        row = dict(row, prompt=row[prompt_field])
        if task.kind == "math":
            row["answer"] = str(row[answer_field])
        out.append(row)
    if not out:
        raise UserError(f"--data {path} has no rows.")
    return out


def _synthetic_rows(name: str, n: int, seed: int) -> list[dict]:
    from r1kit import synth

    parts = name.split(":")
    task, difficulty = parts[1], int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 1
    if task not in synth.TASKS or task == "countdown":
        math_tasks = [t for t in synth.TASKS if t != "countdown"]
        raise UserError(f"benchmark '{name}': evaluation supports synthetic:{{{','.join(math_tasks)}}}[:difficulty].")
    rows = synth.generate(task, n=n, seed=seed, difficulty=difficulty, split="test")
    return [dict(r, id=f"{task}-{difficulty}-{i:05d}") for i, r in enumerate(rows)]
