r"""`r1kit eval`: score models (or generations made elsewhere) on math and code benchmarks, and report.

Three ways in, one scorer (`rewards.judge`, the RL rewards' own functions) and one report:

    r1kit eval --model runs/tiny/grpo runs/tiny/pretrain --benchmark synthetic:arithmetic --output runs/eval
    r1kit eval --config recipes/eval/eval_r1_math500.yaml --model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
    r1kit eval --predictions preds.jsonl --benchmark humaneval --output runs/he     # score-only
    r1kit eval report --results runs/eval/a runs/eval/b --run_dir runs/tiny/grpo --output runs/cmp

Protocol (DeepSeek-R1's evaluation, the defaults): the R1 math instruction, temperature 0.6, top-p 0.95,
`num_samples` completions per problem, pass@1 averaged over them; system prompt and `<think>` prefill
optional. Everything is a recipe key. Per model, `DIR/results.json` maps each benchmark to its metrics,
`DIR/details/<benchmark>.jsonl` holds every item (prompt, completions, extracted answers, verdicts,
sandbox status) and `DIR/generations/<benchmark>.jsonl` the raw generations (itself a valid score-only
file; generation resumes from it item by item). `DIR/report.{md,html}` and `DIR/plots/*.png` compare
all models of the call.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from evals.metrics import default_ks, summarize
from evals.predictions import read_predictions
from evals.report import dir_label, ensure_output_dir, read_json, write_report
from evals.tasks import EvalTask, custom_task, get_task, load_task_rows
from r1kit.config import arg, check_path, config_help, load_config, parse_overrides, to_dict
from r1kit.errors import UserError
from rewards.judge import score


@dataclass(kw_only=True)
class EvalConfig:
    """Evaluation of checkpoints or of a predictions file on benchmarks (DeepSeek-R1 protocol by default)."""

    model: list[str] = arg([], "Checkpoint directories (full models or LoRA adapters) or hub ids; several are compared.")  # noqa: RUF009 - arg() copies a list default
    predictions: str | None = arg(None, "Score-only: a JSONL file of {id, prediction | completions} made elsewhere.", path="file")
    benchmarks: list[str] = arg([], "gsm8k, math500, aime24, aime25, humaneval, mbpp, synthetic:<task>[:difficulty].")  # noqa: RUF009 - arg() copies a list default
    data: str | None = arg(None, "A custom JSONL benchmark file (with --task, and the *_field keys).", path="file")
    task: Literal["math", "code"] | None = arg(None, "Scorer for --data: math (answer verified) or code (tests run).")
    id_field: str = arg("id", "Field of --data rows holding each item's id.")
    prompt_field: str = arg("prompt", "Field of --data rows holding the problem.")
    answer_field: str = arg("answer", "Field of --data rows holding the gold answer (math).")
    output_dir: str = arg(help="Where results.json, details, generations and the report go.", nonempty=True)
    split: str = arg("test", "Benchmark split.")
    max_samples: int | None = arg(None, "Evaluate the first N items of each benchmark.", gt=0)
    bare: bool = arg(False, "Score-only: predictions are bare final answers (math) instead of whole completions.")
    answer_format: Literal["boxed", "answer_tag", "final_answer", "any"] | None = arg(
        None, "Where a math completion's answer is read (rewards.math.answer); default: the benchmark's "
        "(boxed; answer_tag for synthetic). `any` grades free-form output of models without a format.")
    strict: bool = arg(True, "Math: score with strict_accuracy (one thought, then the answer in its format); "
                       "false: with accuracy (the answer read from its format, whatever surrounds it).")
    final_form: bool = arg(True, "A numeric gold demands a number literal (`2+3` is not 5); off for symbolic tasks.")
    prefill_think: bool = arg(False, "Prompts end with `<think>\\n` (R1 prefill); completions start inside the thought.")
    system_prompt: str | None = arg(None, "System message before every prompt.")
    prompt_template: str | None = arg(None, "User message template with {problem} (and {tests} for MBPP); default: the benchmark's.")
    num_samples: int = arg(1, "Completions per problem (n); pass@1 is averaged over them.", gt=0)
    pass_k: list[int] = arg([], "k values for pass@k and maj@k; default 1, powers of two below n, and n.")  # noqa: RUF009 - arg() copies a list default
    temperature: float = arg(0.6, "Sampling temperature (R1 protocol: 0.6).", ge=0)
    top_p: float = arg(0.95, "Nucleus sampling mass (R1 protocol: 0.95).", gt=0, le=1)
    top_k: int = arg(0, "Top-k sampling (0 disables).", ge=0)
    max_new_tokens: int = arg(32768, "Most tokens generated per completion (R1 protocol: 32768).", gt=0)
    batch_size: int = arg(32, "Completions generated per engine call (items are saved after each).", gt=0)
    engine: Literal["hf", "vllm"] = arg("hf", "Generation engine: hf (transformers model) or vllm (when installed).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = arg("auto", "Weights dtype (auto: bf16 on CUDA, fp32 on CPU).")
    seed: int = arg(0, "Sampling seed (and the synthetic tasks' draw).")
    code_timeout: float = arg(5.0, "Seconds per code test in the sandbox.", gt=0)
    run_dir: str | None = arg(None, "A training run directory: its metrics.jsonl becomes training curves in the report.", path="dir")
    compare: list[str] = arg([], "Earlier eval output directories to put side by side with this one in the report.")  # noqa: RUF009 - arg() copies a list default
    report_samples: int = arg(2, "Correct and incorrect sample completions shown per benchmark in the report.", ge=0)

    def validate(self) -> None:
        if bool(self.model) == bool(self.predictions):
            raise ValueError("give either `model` (checkpoints to generate with) or `predictions` (score-only), not both or neither")
        if self.data and not self.task:
            raise ValueError("`data` needs `task: math` or `task: code`")
        if self.data and self.benchmarks:
            raise ValueError("give either `data` (a custom file) or `benchmarks`, not both")
        if not self.data and not self.benchmarks:
            raise ValueError("name the benchmarks (--benchmark gsm8k math500 ...) or a custom --data FILE --task math|code")
        if self.predictions and len(self.benchmarks) > 1:
            raise ValueError("a predictions file belongs to one benchmark: give exactly one --benchmark")
        if self.bare and not self.predictions:
            raise ValueError("`bare` is for score-only predictions files")
        bad = [k for k in self.pass_k if k < 1 or (self.model and k > self.num_samples)]
        if bad:
            raise ValueError(f"pass_k {bad} must lie within 1..num_samples={self.num_samples}")


# ------------------------------------------------------------------------------------ tasks and scoring


def eval_tasks(cfg: EvalConfig) -> list[EvalTask]:
    if cfg.data:
        return [custom_task(cfg.data, cfg.task, cfg.prompt_template, cfg.id_field)]
    return [get_task(name) for name in cfg.benchmarks]


def task_rows(cfg: EvalConfig, task: EvalTask) -> list[dict]:
    return load_task_rows(task, split=cfg.split, data=cfg.data, prompt_field=cfg.prompt_field,
                          answer_field=cfg.answer_field, max_samples=cfg.max_samples, seed=cfg.seed,
                          template=cfg.prompt_template)  # fmt: skip


def score_options(cfg: EvalConfig, task: EvalTask) -> dict:
    """The scorer's keyword arguments for one task: the strict answer rules or the sandbox limits."""
    if task.kind == "code":
        return {"bare": bool(cfg.predictions), "timeout": cfg.code_timeout}
    return {"bare": cfg.bare, "answer_format": cfg.answer_format or task.answer_format,
            "think_prefilled": cfg.prefill_think, "final_form": cfg.final_form, "strict": cfg.strict}


def score_task(cfg: EvalConfig, task: EvalTask, rows: list[dict], generations: dict[str, dict]) -> tuple[dict, list[dict]]:
    """(metrics, per-item details) of one benchmark from id -> {completions, truncated, num_tokens}."""
    completions = [generations[r["id"]]["completions"] for r in rows]
    items = score(task.kind, rows, completions, **score_options(cfg, task))
    for row, item in zip(rows, items):
        gen = generations[row["id"]]
        item["prompt"] = row["message"]
        item["truncated"] = gen.get("truncated")
        tokens = gen.get("num_tokens")
        item["lengths"] = tokens if tokens is not None else [len(c) for c in item["completions"]]
        item["length_unit"] = "tokens" if tokens is not None else "chars"
    n = len(completions[0])
    ks = [k for k in (cfg.pass_k or default_ks(n)) if k <= n]
    metrics = summarize(items, ks)
    if task.kind != "math":
        metrics = {k: v for k, v in metrics.items() if not k.startswith("maj@")}
    return metrics, items


def write_outputs(out: Path, task: EvalTask, metrics: dict, items: list[dict]) -> None:
    """Merge one benchmark into `out/results.json` and write its details JSONL (atomically)."""
    results_path = ensure_output_dir(out, "output_dir") / "results.json"
    results = read_json(results_path) if results_path.is_file() else {}
    results[task.name] = metrics
    _atomic_write(results_path, json.dumps(results, indent=2) + "\n")
    lines = [json.dumps({k: v for k, v in it.items() if k != "key_correct"}, ensure_ascii=False) for it in items]
    (out / "details").mkdir(exist_ok=True)
    _atomic_write(out / "details" / f"{_slug(task.name)}.jsonl", "\n".join(lines) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def print_metrics(label: str, task: EvalTask, metrics: dict) -> None:
    shown = {k: v for k, v in metrics.items() if k.startswith(("pass@", "maj@", "format_rate", "truncation_rate"))}
    body = "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
    print(f"{label} | {task.name} ({int(metrics['num_items'])} items x {int(metrics['num_samples'])}) | {body}", flush=True)


# ------------------------------------------------------------------------------------ modes


def score_only(cfg: EvalConfig) -> list[tuple[str, Path]]:
    (task,) = eval_tasks(cfg)
    rows = task_rows(cfg, task)
    generations = read_predictions(cfg.predictions, [r["id"] for r in rows], task.name)
    out = Path(cfg.output_dir)
    metrics, items = score_task(cfg, task, rows, generations)
    write_outputs(out, task, metrics, items)
    label = Path(cfg.predictions).stem
    print_metrics(label, task, metrics)
    info = {"predictions": cfg.predictions, "label": label, "config": to_dict(cfg)}
    _atomic_write(out / "run_info.json", json.dumps(info, indent=2))
    return [(label, out)]


def model_labels(models: list[str]) -> list[str]:
    """Short unique names for output subdirectories: the last path part, with its parent if needed.

    >>> model_labels(["runs/a/final", "runs/b/final", "org/model-id", "runs/grpo/checkpoint-50/model"])
    ['a_final', 'b_final', 'model-id', 'checkpoint-50']
    """
    # `checkpoint-100/model` is named after its checkpoint.
    labels = [p.parent.name if p.name == "model" and p.parent.name else p.name for p in (Path(m.rstrip("/")) for m in models)]
    if len(set(labels)) < len(labels):
        labels = [_slug("_".join(Path(m.rstrip("/")).parts[-2:])) if labels.count(l) > 1 else l
                  for m, l in zip(models, labels)]  # fmt: skip
    if len(set(labels)) < len(labels):
        labels = [f"{i}_{l}" for i, l in enumerate(labels)]
    return labels


def model_output_dirs(cfg: EvalConfig) -> list[Path]:
    """Where each model's results go: the output directory itself, or one subdirectory per model."""
    out_root = Path(cfg.output_dir)
    return [out_root] if len(cfg.model) <= 1 else [out_root / label for label in model_labels(cfg.model)]


def prepare_outputs(cfg: EvalConfig) -> None:
    """Create every output directory before any generation or scoring: a bad path fails in a second."""
    for out in [Path(cfg.output_dir), *model_output_dirs(cfg)]:
        if (ensure_output_dir(out, "output_dir") / "results.json").is_file():
            read_json(out / "results.json")  # merged into after scoring: unreadable is an error now, not then


def generate_and_score(cfg: EvalConfig) -> list[tuple[str, Path]]:
    from evals.generate import generate_task, open_model

    runs = []
    for model, label, out in zip(cfg.model, model_labels(cfg.model), model_output_dirs(cfg)):
        generator = open_model(model, cfg)
        for task in eval_tasks(cfg):
            rows = task_rows(cfg, task)
            generations = generate_task(generator, cfg, task, rows, out / "generations" / f"{_slug(task.name)}.jsonl")
            metrics, items = score_task(cfg, task, rows, generations)
            write_outputs(out, task, metrics, items)
            print_metrics(label, task, metrics)
        generator.close()
        _atomic_write(out / "run_info.json", json.dumps({"model": model, "label": label, "config": to_dict(cfg)}, indent=2))
        runs.append((label, out))
    return runs


def report_entries(cfg: EvalConfig, runs: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    extra = []
    for d in cfg.compare:
        path = Path(d)
        if not (path / "results.json").is_file():
            raise UserError(f"compare: {path} holds no results.json (give the output_dir of an earlier `r1kit eval`).")
        extra.append((dir_label(path), path))
    return extra + runs


# ------------------------------------------------------------------------------------ entry point

_MULTI = {"--model": "model", "--benchmark": "benchmarks", "--benchmarks": "benchmarks", "--compare": "compare",
          "--results": "compare", "--pass_k": "pass_k"}  # fmt: skip
_ALIASES = {"--output": "--output_dir", "--n": "--num_samples"}


def split_argv(argv: list[str]) -> tuple[str | None, dict]:
    """`--config FILE` and overrides; flags that take several values (`--model A B`) are gathered.

    >>> split_argv(["--model", "a", "b", "--benchmark", "gsm8k", "--output", "o", "--bare"])
    (None, {'output_dir': 'o', 'bare': True, 'model': ['a', 'b'], 'benchmarks': ['gsm8k']})
    """
    path, rest, multi, i = None, [], {}, 0
    while i < len(argv):
        tok, _, inline = argv[i].partition("=")
        tok = _ALIASES.get(tok, tok)
        if tok == "--config":
            path, i = (inline, i + 1) if inline else (argv[i + 1] if i + 1 < len(argv) else None, i + 2)
            if not path:
                raise UserError("--config needs a recipe file path.")
        elif tok in _MULTI:
            values, i = ([inline] if inline else []), i + 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            key = _MULTI[tok]
            multi[key] = multi.get(key, []) + [v for value in values for v in value.split(",") if v]
        else:
            rest.append(f"{tok}={inline}" if inline else tok)
            i += 1
    return path, dict(parse_overrides(rest)) | multi


def resolve_checkpoint(name: str) -> str:
    """A training checkpoint folder (`checkpoint-<step>/` with `model/` inside) means its model.

    >>> resolve_checkpoint("org/model-id")
    'org/model-id'
    """
    path = Path(name)
    saved = ("config.json", "adapter_config.json")
    if path.is_dir() and not any((path / f).is_file() for f in saved) and any((path / "model" / f).is_file() for f in saved):
        return str(path / "model")
    return name


def load_eval_config(argv: list[str]) -> EvalConfig:
    path, overrides = split_argv(argv)
    cfg = load_config(EvalConfig, path, overrides)
    cfg.model = [resolve_checkpoint(m) for m in cfg.model]
    for model in cfg.model:  # a list field: checked here, each like a stage's model_name_or_path
        check_path("model", model, "model", str(path or "command line"))
    return cfg


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "report":
        from evals.report import report_cli

        return report_cli(argv[1:])
    if "-h" in argv or "--help" in argv:
        print("usage: r1kit eval [--config RECIPE.yaml] [--key value ...]\n"
              "       r1kit eval report --results DIR [DIR ...] --output DIR   (r1kit eval report --help)\n")
        print(__doc__.strip() + "\n\nkeys (in a recipe or as --key value; --model/--benchmark take several values):")
        print(config_help(EvalConfig))
        return 0
    cfg = load_eval_config(argv)
    prepare_outputs(cfg)
    runs = score_only(cfg) if cfg.predictions else generate_and_score(cfg)

    paths = write_report(Path(cfg.output_dir), report_entries(cfg, runs), run_dir=cfg.run_dir, samples=cfg.report_samples)
    print(f"report: {paths['html']} ({paths['md'].name}, {len(paths['plots'])} plots)")
    return 0


if __name__ == "__main__":
    from r1kit.errors import exit_on_user_error

    raise SystemExit(exit_on_user_error(main)())
