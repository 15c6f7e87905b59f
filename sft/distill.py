"""`r1kit distill`: distil a reasoning teacher into a (smaller, dense) student.

DeepSeek-R1 (sec. 2.4) distils by plain SFT of small dense models on ~800k verified R1 samples. Mode
`traces` does that:

1. Decontaminate: training prompts sharing a word n-gram with any benchmark test problem in the registry
   (`r1kit data list`) are dropped and reported (`decontamination.json`).
2. Sample k completions per prompt from the teacher through the shared engine (`hf`, or `vllm` when
   installed), appending to `generations.jsonl` as it goes; a resumed run skips the prompts already there.
3. Verify with the RL rewards (rejection sampling): strict answers always (`strict_accuracy`, the
   format-checked reward GRPO's evaluation uses) plus any others listed; a sample is kept only if every
   reward scores at least its `min` (default 1). Then at most `max_kept_per_prompt` per prompt, the
   shortest first (`shortest_correct`), duplicates and samples over `max_completion_tokens` dropped.
   `traces.jsonl` keeps provenance (teacher, prompt id, sample index, every reward) and loads with
   `datasets.load_dataset("json", ...)`.
4. SFT the student on the kept traces with `sft/sft.py` (TRL's SFTTrainer), into `output_dir/student`.

Mode `logits` is on-policy distillation instead (GKD with lambda = 1, beta = 1; Agarwal et al. 2024): the
student samples completions and is trained to minimise the per-token reverse KL to the teacher's
distribution on its own samples, `sum_v p_s(v) (log p_s(v) - log p_t(v))`. A small loop on the shared
layer rather than TRL's GKDTrainer, which TRL 1.16 ships only under `trl.experimental`.

    r1kit distill --config recipes/tiny/distill.yaml

One process (sampling writes one resumable file); the student SFT of a large run can be launched on its own
with `accelerate launch -m sft.sft` on `traces.jsonl` (`completion_column: completion`).

Held-out greedy strict accuracy of the teacher and of the student before and after is in `summary.json`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from r1kit.config import arg, parse_config
from r1kit.configs import DataConfig, LoraConfig, ModelConfig, TrainConfig
from r1kit.errors import UserError, exit_on_user_error
from r1kit.generation.config import EngineConfig

GENERATIONS_FILE, TRACES_FILE, SUMMARY_FILE = "generations.jsonl", "traces.jsonl", "summary.json"
DECONTAMINATION_FILE = "decontamination.json"


@dataclass(kw_only=True)
class DistillConfig(ModelConfig, DataConfig, TrainConfig, LoraConfig, EngineConfig):
    """Distil a teacher into the student `model_name_or_path` (see sft/distill.py)."""

    mode: Literal["traces", "logits"] = arg(
        "traces", "traces: SFT on verified teacher samples; logits: on-policy reverse KL to the teacher."
    )
    teacher_name_or_path: str = arg(help="The teacher: a local saved model or a hub id.", path="model")
    engine: Literal["hf", "vllm"] = arg("hf", "Engine the teacher samples with (vllm needs the vllm extra).")
    num_samples: int = arg(4, "Teacher samples per prompt (k).", gt=0)
    temperature: float = arg(0.7, "Sampling temperature (teacher in traces mode, student in logits mode).", gt=0)
    top_p: float = arg(1.0, "Nucleus sampling mass.", gt=0, le=1)
    max_new_tokens: int = arg(256, "Most tokens generated per sample.", gt=0)
    generation_batch_size: int = arg(32, "Prompts per engine call (each gives num_samples completions).", gt=0)
    answer_format: Literal["answer_tag", "boxed"] = arg("answer_tag", "Where answers go: <answer> tag or \\boxed{}.")
    prefill_think: bool = arg(False, "The generation prompt ends with `<think>\\n` (R1-style prefill).")
    rewards: list[dict[str, Any]] = arg(  # noqa: RUF009 - arg() copies a list default per instance
        [{"name": "strict_accuracy"}],
        "Verification rewards, as in a GRPO recipe ({name, params, min}); a sample is kept when each scores >= "
        "its min (default 1). strict_accuracy is added when missing, so kept answers are always strict.",
        nonempty=True,
    )
    max_kept_per_prompt: int = arg(1, "Verified samples kept per prompt (0: all).", ge=0)
    shortest_correct: bool = arg(True, "Keep the shortest verified samples first (else in sample order).")
    dedupe: bool = arg(True, "Drop verified samples whose text repeats one already kept for the prompt.")
    max_completion_tokens: int = arg(0, "Drop samples longer than this many tokens (0: no cap).", ge=0)
    decontaminate: bool = arg(True, "Drop training prompts that share an n-gram with a benchmark test problem.")
    decontamination_ngram: int = arg(8, "Word n-gram size for decontamination (shorter texts: the whole text).", gt=0)
    train_student: bool = arg(True, "traces mode: SFT the student on the kept traces (false: only write them).")
    max_length: int = arg(1024, "Student SFT: longest tokenized example.", ge=16)
    eval_split: str = arg("test", "Split of dataset_name whose prompts measure held-out strict accuracy.")
    eval_accuracy_examples: int = arg(128, "Held-out prompts decoded greedily (0 skips).", ge=0)
    eval_max_new_tokens: int = arg(256, "Most tokens per held-out greedy completion.", gt=0)
    torch_threads: int = arg(0, "CPU threads for torch; 0 keeps torch's default.", ge=0)


# ------------------------------------------------------------------------------------- prompts


def prompt_id(prompt: Any) -> str:
    """A stable id from the prompt text (resume and provenance do not depend on row order).

    >>> prompt_id("What is 2 + 2?") == prompt_id("What is 2 + 2?"), len(prompt_id("x"))
    (True, 16)
    """
    return hashlib.sha1(json.dumps(prompt, sort_keys=True).encode()).hexdigest()[:16]


def load_prompts(cfg: DistillConfig, split: str, max_samples: int | None) -> list[dict]:
    from r1kit.data import load_rows
    from sft.data import check_columns

    rows = load_rows(replace(cfg, dataset_split=split, max_samples=max_samples), required=())
    rows = check_columns(rows, ("prompt", "answer"), f"dataset '{cfg.dataset_name}' ({split})", cfg.bad_rows)
    return [{**r, "prompt_id": prompt_id(r["prompt"])} for r in rows]


# ----------------------------------------------------------------------------- decontamination


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams; a text shorter than n words is one n-gram of all its words.

    >>> sorted(ngrams("What is 2 + 2?", 5))
    [('is', '2', '+', '2', '?'), ('what', 'is', '2', '+', '2')]
    >>> ngrams("Hi there", 8)
    {('hi', 'there')}
    """
    words = re.findall(r"\w+|[^\w\s]", str(text).lower())
    if len(words) <= n:
        return {tuple(words)} if words else set()
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


def benchmark_ngrams(n: int) -> dict[tuple[str, ...], str]:
    """n-gram -> benchmark name, over every registered benchmark's evaluation (non-train) splits."""
    from r1kit.data import BENCHMARKS, load_benchmark

    index: dict[tuple[str, ...], str] = {}
    for bench in BENCHMARKS.values():
        for split in bench.local:
            if split == "train":
                continue
            for row in load_benchmark(bench.name, split):
                for gram in ngrams(row["prompt"], n):
                    index.setdefault(gram, bench.name)
    return index


def decontaminate(rows: list[dict], index: dict[tuple[str, ...], str], n: int) -> tuple[list[dict], dict]:
    """(rows without benchmark overlap, report {benchmark: matches, "examples": [...]})."""
    kept, report, examples = [], {}, []
    for row in rows:
        hit = next((index[g] for g in ngrams(row["prompt"], n) if g in index), None)
        if hit is None:
            kept.append(row)
            continue
        report[hit] = report.get(hit, 0) + 1
        if len(examples) < 20:
            examples.append({"prompt_id": row["prompt_id"], "benchmark": hit, "prompt": str(row["prompt"])[:200]})
    return kept, {"checked": len(rows), "dropped": len(rows) - len(kept), "by_benchmark": report,
                  "examples": examples}


# ------------------------------------------------------------------------------ teacher samples


def read_generations(path: Path) -> list[dict]:
    """Records written so far; a last line cut off by a kill is dropped (and removed from the file)."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
        path.write_text("".join(lines))
    return [json.loads(line) for line in lines]


def generate(cfg: DistillConfig, engine, tokenizer, rows: list[dict], path: Path) -> list[dict]:
    """k teacher samples per prompt appended to `path`, one batch of prompts at a time; prompts with
    records there already are not sampled again (a prompt's k samples are written together)."""
    from tqdm import tqdm

    from r1kit.chat import encode_prompt
    from r1kit.generation import SamplingSettings

    records = read_generations(path)
    done = {r["prompt_id"] for r in records}
    todo = [r for r in rows if r["prompt_id"] not in done]
    sampling = SamplingSettings(cfg.max_new_tokens, cfg.temperature, cfg.top_p, n=cfg.num_samples, seed=cfg.seed)
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc="teacher samples", unit="prompt")
    with path.open("a") as f:
        for start in range(0, len(todo), cfg.generation_batch_size):
            chunk = todo[start: start + cfg.generation_batch_size]
            ids = [encode_prompt(r["prompt"], tokenizer, cfg.system_prompt, cfg.prefill_think) for r in chunk]
            rollout = engine.generate(ids, sampling)
            texts = tokenizer.batch_decode(rollout.completion_ids, skip_special_tokens=True)
            for j, text in enumerate(texts):
                row = chunk[j // cfg.num_samples]
                record = {"prompt_id": row["prompt_id"], "sample_index": j % cfg.num_samples,
                          "prompt": row["prompt"], "answer": row["answer"], "completion": text,
                          "completion_tokens": len(rollout.completion_ids[j]), "truncated": rollout.truncated[j],
                          # token ids too: length rewards (overlong_penalty, ...) read them, as in GRPO
                          "completion_token_ids": rollout.completion_ids[j], "teacher": cfg.teacher_name_or_path}
                f.write(json.dumps(record) + "\n")
                records.append(record)
            f.flush()
            bar.update(len(chunk))
    bar.close()
    return records


# ---------------------------------------------------------------------------------- verification


def verification_rewards(cfg: DistillConfig) -> list[tuple[Any, float]]:
    """(reward fn, minimum score) pairs; strict_accuracy in the recipe's answer format is always one."""
    from rewards.registry import build_rewards

    specs = [dict(s) for s in cfg.rewards]
    if not any(s.get("name") == "strict_accuracy" for s in specs):
        specs.insert(0, {"name": "strict_accuracy",
                         "params": {"answer_format": cfg.answer_format, "think_prefilled": cfg.prefill_think}})
    mins = [float(s.pop("min", 1.0)) for s in specs]
    return list(zip(build_rewards(specs), mins))


def verify(records: list[dict], rewards: list[tuple[Any, float]]) -> list[dict]:
    """Each record with `rewards` {name: score} and `verified` (every reward >= its minimum). Rewards get the
    records' other fields as columns (answer, completion_token_ids, ...), as GRPO passes them."""
    if not records:
        return []
    texts = [r["completion"] for r in records]
    columns = {k: [r.get(k) for r in records] for k in records[0] if k != "completion"}
    scores = {fn.name: fn(texts, **columns) for fn, _ in rewards}
    out = []
    for i, record in enumerate(records):
        got = {name: s[i] for name, s in scores.items()}
        ok = all(got[fn.name] is not None and got[fn.name] >= low for fn, low in rewards)
        out.append({**record, "rewards": got, "verified": ok})
    return out


def select(records: list[dict], cfg: DistillConfig) -> list[dict]:
    """The verified samples to train on: length cap, dedupe, shortest first, at most k per prompt."""
    by_prompt: dict[str, list[dict]] = {}
    for r in records:
        if r["verified"] and not (cfg.max_completion_tokens and r["completion_tokens"] > cfg.max_completion_tokens):
            by_prompt.setdefault(r["prompt_id"], []).append(r)
    kept = []
    for group in by_prompt.values():
        if cfg.shortest_correct:
            group = sorted(group, key=lambda r: (r["completion_tokens"], r["sample_index"]))
        seen: set[str] = set()
        chosen = []
        for r in group:
            text = " ".join(r["completion"].split())
            if cfg.dedupe and text in seen:
                continue
            seen.add(text)
            chosen.append(r)
        kept += chosen[: cfg.max_kept_per_prompt or None]
    return kept


def write_traces(kept: list[dict], path: Path, prefill_think: bool) -> None:
    """JSONL for `r1kit sft` (completion_column: completion) with provenance; the completion includes the
    `<think>\\n` a prefilled prompt supplied, so the student learns the whole turn."""
    with path.open("w") as f:
        for r in kept:
            completion = ("<think>\n" + r["completion"]) if prefill_think else r["completion"]
            f.write(json.dumps({"prompt": r["prompt"], "answer": r["answer"], "completion": completion,
                                "teacher": r["teacher"], "prompt_id": r["prompt_id"],
                                "sample_index": r["sample_index"], "completion_tokens": r["completion_tokens"],
                                "rewards": r["rewards"]}) + "\n")


# ---------------------------------------------------------------------------------------- models


def load_pair(cfg: DistillConfig):
    """(teacher, teacher tokenizer, student tokenizer); bad pairs are user errors before any work."""
    import torch

    from r1kit.modeling.loading import load_model, load_tokenizer
    from sft.data import check_chat_template

    device = "cuda" if torch.cuda.is_available() and not cfg.use_cpu else "cpu"
    teacher_tok = load_tokenizer(cfg.teacher_name_or_path)
    check_chat_template(teacher_tok, f"teacher '{cfg.teacher_name_or_path}'")
    student_tok = load_tokenizer(cfg.tokenizer_name_or_path or cfg.model_name_or_path)
    if cfg.mode == "logits" and student_tok.get_vocab() != teacher_tok.get_vocab():
        raise UserError(
            f"logit distillation compares next-token distributions, so the student's tokenizer must equal the "
            f"teacher's; '{cfg.model_name_or_path}' ({len(student_tok)} tokens) and '{cfg.teacher_name_or_path}' "
            f"({len(teacher_tok)} tokens) differ. Use mode: traces, or a student built on the teacher's tokenizer."
        )
    teacher = load_model(cfg.teacher_name_or_path, dtype=cfg.dtype, device=device,
                         attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code)
    return teacher.to(device).eval().requires_grad_(False), teacher_tok, student_tok


def heldout_accuracy(model, tokenizer, rows: list[dict], cfg: DistillConfig) -> float:
    from sft.sft import greedy_probe

    return greedy_probe(model, tokenizer, rows, cfg)["probe/strict_accuracy"] if rows else float("nan")


# ------------------------------------------------------------------------------------ traces mode


def distill_traces(cfg: DistillConfig, teacher, tokenizer, rows: list[dict], out: Path) -> dict[str, Any]:
    from r1kit.generation import build_engine
    from r1kit.generation.config import engine_spec

    start = time.time()
    engine = build_engine(engine_spec(cfg, cfg.max_new_tokens + 512), teacher, tokenizer)
    records = generate(cfg, engine, tokenizer, rows, out / GENERATIONS_FILE)
    wanted = {r["prompt_id"] for r in rows}
    records = [r for r in records if r["prompt_id"] in wanted]
    generation_s = time.time() - start
    checked = verify(records, verification_rewards(cfg))
    kept = select(checked, cfg)
    write_traces(kept, out / TRACES_FILE, cfg.prefill_think)
    summary = {"generated": len(checked), "verified": sum(r["verified"] for r in checked), "kept": len(kept),
               "prompts_with_a_kept_trace": len({r["prompt_id"] for r in kept}),
               "teacher_sample_accuracy": sum(r["verified"] for r in checked) / max(len(checked), 1),
               "generation_time_s": round(generation_s, 1)}
    print(json.dumps(summary), flush=True)
    if cfg.train_student:
        if not kept:
            raise UserError("no teacher sample passed verification, so there is nothing to train the student on; "
                            "check the teacher, answer_format / prefill_think, or raise num_samples.")
        summary |= student_sft(cfg, out)
    return summary


def student_sft(cfg: DistillConfig, out: Path) -> dict[str, Any]:
    """SFT of the student on traces.jsonl through sft/sft.py, into output_dir/student."""
    from r1kit.config import load_config
    from sft.sft import SFTConfig, train

    keys = {f for f in SFTConfig.__dataclass_fields__ if f in DistillConfig.__dataclass_fields__}
    values = {k: getattr(cfg, k) for k in keys}
    values |= {"dataset_name": str(out / TRACES_FILE), "dataset_split": "train", "max_samples": None,
               "prompt_column": "prompt", "answer_column": "answer", "completion_column": "completion",
               "output_dir": str(out / "student"), "eval_max_samples": 0,
               "eval_accuracy_examples": 0, "packing": False}
    summary = train(load_config(SFTConfig, None, values))
    return {"student_sft_steps": summary["steps"], "student_sft_time_s": summary["train_time_s"]}


# ------------------------------------------------------------------------------------ logits mode


def reverse_kl(student_logits, teacher_logits, mask):
    """Mean over masked positions of KL(p_student || p_teacher) over the vocabulary.

    student_logits, teacher_logits (B, T, V); mask (B, T).
    >>> import torch
    >>> x = torch.randn(1, 3, 5)
    >>> float(reverse_kl(x, x, torch.ones(1, 3))) == 0.0
    True
    """
    import torch.nn.functional as F

    log_s = F.log_softmax(student_logits.float(), -1)  # (B, T, V)
    log_t = F.log_softmax(teacher_logits.float(), -1)  # (B, T, V)
    per_token = (log_s.exp() * (log_s - log_t)).sum(-1)  # (B, T)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def _sequences(prompts: list[list[int]], completions: list[list[int]], pad: int):
    """Right-padded prompt+completion ids (B, T), attention mask (B, T), mask of positions whose next token
    is a completion token (B, T)."""
    import torch

    width = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(prompts), width), pad)
    attn = torch.zeros((len(prompts), width), dtype=torch.long)
    predicts = torch.zeros((len(prompts), width))
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        attn[i, : len(p) + len(c)] = 1
        predicts[i, len(p) - 1: len(p) + len(c) - 1] = 1
    return ids, attn, predicts


def distill_logits(cfg: DistillConfig, teacher, tokenizer, rows: list[dict], out: Path) -> dict[str, Any]:
    """On-policy reverse-KL distillation: the student samples, the teacher scores every vocabulary entry."""
    import random

    import torch
    from tqdm import tqdm

    from r1kit.chat import encode_prompt
    from r1kit.checkpoint import save_model
    from r1kit.generation import HFEngine, SamplingSettings
    from r1kit.modeling.loading import load_for_training
    from r1kit.tracking import Tracker

    student, _ = load_for_training(cfg, teacher.device)
    student = student.to(teacher.device)
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * len(rows) /
                                                              cfg.per_device_train_batch_size)
    engine = HFEngine(student, tokenizer)
    sampling = SamplingSettings(cfg.max_new_tokens, cfg.temperature, cfg.top_p)
    tracker = Tracker(cfg.output_dir, cfg.report_to, {}, stdout_keys=("reverse_kl",))
    order, rng, start = list(range(len(rows))), random.Random(cfg.seed), time.time()
    for step in tqdm(range(1, steps + 1), desc="on-policy distill", unit="step"):
        batch = [rows[rng.choice(order)] for _ in range(cfg.per_device_train_batch_size)]
        prompts = [encode_prompt(r["prompt"], tokenizer, cfg.system_prompt, cfg.prefill_think) for r in batch]
        student.eval()
        completions = engine.generate(prompts, sampling).completion_ids
        student.train()
        ids, attn, predicts = (t.to(teacher.device) for t in _sequences(prompts, completions, tokenizer.pad_token_id))
        with torch.no_grad():
            teacher_logits = teacher(input_ids=ids, attention_mask=attn).logits  # (B, T, V)
        loss = reverse_kl(student(input_ids=ids, attention_mask=attn).logits, teacher_logits, predicts)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm or math.inf)
        optimizer.step()
        optimizer.zero_grad()
        if step % cfg.logging_steps == 0:
            tracker.log(step, {"reverse_kl": loss.item()}, echo=False)
    tracker.close()
    from accelerate import Accelerator

    save_model(Accelerator(cpu=cfg.use_cpu), student, tokenizer, out / "student")
    return {"logit_distill_steps": steps, "logit_distill_time_s": round(time.time() - start, 1)}


# -------------------------------------------------------------------------------------- entry


def run(cfg: DistillConfig) -> dict[str, Any]:
    """The whole stage; returns the summary also written to `output_dir/summary.json`."""
    import torch
    from accelerate import PartialState

    from r1kit.modeling.loading import load_model

    if PartialState().num_processes > 1:
        raise UserError("r1kit distill runs in one process (its teacher sampling appends to one file); launch it "
                        "without accelerate, then SFT large students with `accelerate launch -m sft.sft` on traces.jsonl.")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher, tokenizer, student_tok = load_pair(cfg)
    rows = load_prompts(cfg, cfg.dataset_split, cfg.max_samples)
    heldout = load_prompts(cfg, cfg.eval_split, cfg.eval_accuracy_examples) if cfg.eval_accuracy_examples else []
    summary: dict[str, Any] = {"teacher": cfg.teacher_name_or_path, "student": cfg.model_name_or_path,
                               "mode": cfg.mode, "prompts": len(rows)}
    if cfg.decontaminate:
        rows, report = decontaminate(rows, benchmark_ngrams(cfg.decontamination_ngram), cfg.decontamination_ngram)
        (out / DECONTAMINATION_FILE).write_text(json.dumps(report, indent=1))
        print(f"decontamination: dropped {report['dropped']} of {report['checked']} prompts {report['by_benchmark']}",
              flush=True)
        summary["decontaminated"] = report["dropped"]
    summary["teacher_params"] = sum(p.numel() for p in teacher.parameters())
    summary["teacher_heldout_strict_accuracy"] = heldout_accuracy(teacher, tokenizer, heldout, cfg)
    student = load_model(cfg.model_name_or_path, dtype=cfg.dtype)
    summary["student_params"] = sum(p.numel() for p in student.parameters())
    summary["student_heldout_strict_accuracy_before"] = heldout_accuracy(student, student_tok, heldout, cfg)
    distil = distill_traces if cfg.mode == "traces" else distill_logits
    summary |= distil(cfg, teacher, tokenizer if cfg.mode == "traces" else student_tok, rows, out)
    if (out / "student" / "config.json").is_file():
        trained = load_model(str(out / "student"), dtype=cfg.dtype)
        summary["student_heldout_strict_accuracy_after"] = heldout_accuracy(trained, student_tok, heldout, cfg)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1), flush=True)
    return summary


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(DistillConfig, argv, prog="r1kit distill")
    run(cfg)
    return 0


if __name__ == "__main__":
    main()
