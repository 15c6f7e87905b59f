"""`r1kit pretrain`: causal-LM pretraining of a tiny base on the synthetic corpus.

R1 starts from a pretrained base (DeepSeek-V3-Base) that can already do arithmetic; our tiny models
from `r1kit build-tiny` start from random weights. This stage stands in for that pretraining: plain-text
worked problems (`Problem: ... Solution: ... Answer: ...`, no chat template, no `<think>` tags: those
come with cold-start SFT) packed into fixed-length blocks, next-token loss on every token.

    r1kit pretrain --config recipes/tiny/pretrain.yaml
    accelerate launch -m sft.pretrain --config recipes/tiny/pretrain.yaml

Kept from standard LM pretraining: packing `bos text eos` documents into fixed-length blocks, AdamW,
warmup + cosine, gradient clipping. Changed: a document is never split across blocks and attends only
to itself (positions restart per document, see `pack`), as at generation time, where a prompt starts at
position 0 with nothing before it; otherwise a solution can be trained cut off from its question.
MoE policies also get DeepSeek-V3's auxiliary-loss-free balancing (V3 report
sec. 2.1.2: after each step every router's `e_score_correction_bias` moves by
`moe_bias_update_speed * sign(mean load - load)`), since nothing else keeps experts from collapsing.
Model loading, balancing and the atomic final save come from the shared layer (`r1kit.modeling`,
`r1kit.checkpoint.save_model`).
Held-out loss (test-split problems, never in train) is measured before and after; at the end a greedy
decode of held-out problems reports exact-answer accuracy per task and difficulty. `output_dir` gets
`metrics.jsonl`, `summary.json`, checkpoints (`save_steps`) and the final model + tokenizer.

This module imports torch only inside functions: `r1kit.configs.STAGES` imports `PretrainConfig` to
validate recipes, and that must stay fast and torch-free.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1kit import synth
from r1kit.config import arg, parse_config, to_dict
from r1kit.configs import ModelConfig, TrainConfig
from r1kit.errors import UserError, exit_on_user_error

SUMMARY_FILE = "summary.json"


@dataclass(kw_only=True)
class PretrainConfig(ModelConfig, TrainConfig):
    """Causal-LM pretraining on synthetic worked problems (see sft/pretrain.py)."""

    tasks: list[str] = arg(  # noqa: RUF009 - arg() copies a list default per instance
        list(synth.TASKS), "Synthetic tasks in the corpus.", choices=synth.TASKS, nonempty=True
    )
    min_difficulty: int = arg(1, "Easiest difficulty in the corpus.", ge=1, le=max(synth.DIFFICULTIES))
    max_difficulty: int = arg(3, "Hardest difficulty in the corpus.", ge=1, le=max(synth.DIFFICULTIES))
    num_examples: int = arg(20000, "Training problems, spread evenly over tasks x difficulties.", gt=0)
    eval_examples: int = arg(300, "Held-out (test-split) problems for the held-out loss.", gt=0)
    max_seq_len: int = arg(256, "Tokens per packed training block.", ge=16)
    eval_steps: int = arg(0, "Held-out loss every N optimizer steps (0: only before and after training).", ge=0)
    eval_accuracy_examples: int = arg(
        64, "Held-out problems per task and difficulty solved greedily after training (0 skips).", ge=0
    )
    torch_threads: int = arg(
        0, "CPU threads for torch (torch.set_num_threads); 0 keeps torch's default (OMP_NUM_THREADS, else all cores).",
        ge=0,
    )
    moe_bias_update_speed: float = arg(
        0.001, "MoE only: DeepSeek-V3 aux-loss-free balancing step for e_score_correction_bias (0 disables).", ge=0
    )

    def validate(self) -> None:
        if self.min_difficulty > self.max_difficulty:
            raise ValueError(
                f"key 'min_difficulty' ({self.min_difficulty}) is above 'max_difficulty' ({self.max_difficulty}); "
                "swap them."
            )


# ------------------------------------------------------------------------------------------- data


def build_corpus(cfg: PretrainConfig, split: str, n: int) -> list[str]:
    """`n` plain-text worked problems from `split`, spread evenly over tasks x difficulties, shuffled."""
    combos = [(t, d) for t in cfg.tasks for d in range(cfg.min_difficulty, cfg.max_difficulty + 1)]
    per_combo = math.ceil(n / len(combos))
    texts = [
        synth.pretrain_text(row)
        for task, difficulty in combos
        for row in synth.generate(task, per_combo, cfg.seed, difficulty, split)
    ]
    random.Random(cfg.seed).shuffle(texts)
    return texts[:n]


def pack(tokenizer, texts: list[str], seq_len: int):
    """Pack whole `bos text eos` documents into (N, seq_len) blocks; no document is split across blocks.

    Returns (input_ids, labels, position_ids). Positions restart at 0 for every document and, with
    `use_cache=False` and no attention mask, transformers turns restarting positions into a
    block-diagonal causal mask: a document sees only itself, exactly as at generation time, where a
    prompt starts at position 0 with nothing before it. (Packing across documents instead lets the
    model attend to the previous problem's numbers, and a split document's tail is trained
    without its question.) A block's unused tail is padding with labels -100.
    """
    import torch

    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise UserError("the tokenizer needs bos and eos tokens to separate packed documents.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    blocks: list[list[int]] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        doc = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
        if len(doc) > seq_len:
            raise UserError(f"a {len(doc)}-token document does not fit max_seq_len {seq_len}; raise max_seq_len.")
        if not blocks or len(blocks[-1]) + len(doc) > seq_len:
            blocks.append([])
        blocks[-1] += doc
    input_ids = torch.full((len(blocks), seq_len), pad)  # (N, T)
    labels = torch.full((len(blocks), seq_len), -100)  # (N, T)
    position_ids = torch.zeros((len(blocks), seq_len), dtype=torch.long)  # (N, T)
    for row, block in enumerate(blocks):
        input_ids[row, : len(block)] = labels[row, : len(block)] = torch.tensor(block)
        position_ids[row] = torch.tensor(_document_positions(block, tokenizer.bos_token_id, seq_len))
    return input_ids, labels, position_ids


def _document_positions(block: list[int], bos: int, seq_len: int) -> list[int]:
    """0, 1, 2, ... restarting at every bos; the padding tail counts from 0 as one more (masked) document."""
    positions: list[int] = []
    for token in block:
        positions.append(0 if token == bos else positions[-1] + 1)
    return positions + list(range(seq_len - len(block)))


# ------------------------------------------------------------------------------------ evaluation


def heldout_loss(model, loader, accelerator) -> float:
    """Mean next-token loss over every held-out token (not a mean of per-batch means)."""
    import torch

    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)  # (loss sum, token count)
    with torch.no_grad():
        for input_ids, labels, position_ids in loader:
            logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits[:, :-1].float()
            target = labels[:, 1:]  # (B, T-1)
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, T-1)
            mask = target != -100
            per_row = torch.stack([(nll * mask).sum(-1), mask.sum(-1)], dim=-1).double()  # (B, 2)
            total += accelerator.gather_for_metrics(per_row).sum(0)  # drops the padding accelerate adds
    model.train()
    return (total[0] / total[1]).item()


def _is_correct(row: dict, prediction: str) -> bool:
    if row["task"] == "countdown":  # any valid expression counts, not only the reference one
        from rewards.countdown import solves

        return solves(prediction, row["numbers"], row["target"])
    return prediction == row["answer"]


def answer_accuracy(model, tokenizer, cfg: PretrainConfig, batch_size: int = 64) -> dict[str, float]:
    """Greedy-decode held-out problems in the pretraining format; exact-answer accuracy per task/difficulty."""
    from r1kit.generation import HFEngine, SamplingSettings

    engine = HFEngine(model, tokenizer)
    model.eval()
    results: dict[str, float] = {}
    for task in cfg.tasks:
        for difficulty in range(cfg.min_difficulty, cfg.max_difficulty + 1):
            rows = synth.generate(task, cfg.eval_accuracy_examples, cfg.seed, difficulty, "test")
            # Room for the longest reference solution, so a failure is never a truncated success.
            longest = max(len(tokenizer(synth.pretrain_text(r))["input_ids"]) for r in rows)
            correct = 0
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                prompts = [f"{tokenizer.bos_token}Problem: {r['prompt']}\nSolution:\n" for r in chunk]
                ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
                out = engine.generate(ids, SamplingSettings(longest + 8, greedy=True))
                texts = tokenizer.batch_decode(out.completion_ids, skip_special_tokens=True)
                for row, text in zip(chunk, texts):
                    answer = text.rpartition("Answer:")[2].split("\n")[0].strip() if "Answer:" in text else ""
                    correct += _is_correct(row, answer)
            results[f"accuracy/{task}_d{difficulty}"] = correct / len(rows)
    model.train()
    return results


# -------------------------------------------------------------------------------------- training


@dataclass
class _Run:
    accelerator: Any
    model: Any
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    train_loader: Any
    eval_loader: Any
    total_steps: int
    experts: Any  # r1kit.modeling.moe.ExpertBalancer, or None for a dense model


def _loader(tensors, batch_size: int, shuffle: bool):
    from torch.utils.data import DataLoader, TensorDataset

    if len(tensors[0]) == 0:
        raise UserError("the corpus is empty; raise num_examples / eval_examples.")
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle, drop_last=False)


def setup(cfg: PretrainConfig) -> _Run:
    import torch
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from r1kit.modeling.loading import load_for_training

    bf16 = cfg.bf16 if cfg.bf16 is not None else (
        torch.cuda.is_available() and not cfg.use_cpu and torch.cuda.is_bf16_supported())
    accelerator = Accelerator(
        cpu=cfg.use_cpu,
        mixed_precision="bf16" if bf16 else "no",
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        # A seedable sampler gives each epoch a fixed order, so a resumed run skips exactly what it saw.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    set_seed(cfg.seed)
    model, tokenizer = load_for_training(cfg, accelerator.device)
    train_loader = _loader(pack(tokenizer, build_corpus(cfg, "train", cfg.num_examples), cfg.max_seq_len),
                           cfg.per_device_train_batch_size, shuffle=True)
    eval_loader = _loader(pack(tokenizer, build_corpus(cfg, "test", cfg.eval_examples), cfg.max_seq_len),
                          cfg.per_device_train_batch_size, shuffle=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_loader) / (cfg.gradient_accumulation_steps * accelerator.num_processes))
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.num_train_epochs)
    # accelerate steps a prepared scheduler once per process per optimizer step, hence the scaling.
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer,
                              num_warmup_steps=int(cfg.warmup_ratio * total) * accelerator.num_processes,
                              num_training_steps=total * accelerator.num_processes)
    experts = _expert_balancer(model, cfg)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler)
    return _Run(accelerator, model, tokenizer, optimizer, scheduler, train_loader, eval_loader, total, experts)


def _expert_balancer(model, cfg: PretrainConfig):
    from r1kit.modeling.moe import ExpertBalancer, is_moe

    return ExpertBalancer(model, cfg.moe_bias_update_speed) if is_moe(model) else None


def _balance_experts(run: _Run) -> dict[str, float]:
    """After an optimizer step: move router biases toward uniform load; return load metrics."""
    if run.experts is None:
        return {}
    metrics = run.experts.after_step()
    return {k: v for k, v in metrics.items() if k in ("moe/max_over_mean", "moe/entropy", "moe/bias_abs_mean")}


def _evaluate(run: _Run) -> float:
    if run.experts is not None:
        run.experts.enabled = False  # held-out tokens must not steer the routers
    loss = heldout_loss(run.model, run.eval_loader, run.accelerator)
    if run.experts is not None:
        run.experts.enabled = True
    return loss


def _resume(run: _Run, cfg: PretrainConfig) -> tuple[int, int, int]:
    """(optimizer step, epoch, micro-batches already seen in that epoch) to start from."""
    from r1kit.checkpoint import clean_temp, load_checkpoint, resolve_resume

    clean_temp(cfg.output_dir)
    path = resolve_resume(cfg.resume_from_checkpoint, cfg.output_dir)
    if path is None:
        return 0, 0, 0
    state, data = load_checkpoint(run.accelerator, path)
    run.accelerator.print(f"resumed from {path} at step {state['step']}")
    return state["step"], data["epoch"], data["batches_in_epoch"]


def train(cfg: PretrainConfig) -> dict[str, Any]:
    """Run pretraining; returns the summary also written to `output_dir/summary.json`."""
    import torch
    from tqdm import tqdm

    from r1kit.checkpoint import save_checkpoint
    from r1kit.tracking import Tracker

    run = setup(cfg)
    acc, model = run.accelerator, run.model
    tracker = Tracker(cfg.output_dir, cfg.report_to, to_dict(cfg), is_main=acc.is_main_process,
                      stdout_keys=("loss", "eval/loss", "lr"))
    step, epoch, skip = _resume(run, cfg)
    loss_before = _evaluate(run)
    tracker.log(step, {"eval/loss": loss_before}, echo=False)
    bar = tqdm(total=run.total_steps, initial=step, desc="pretrain", disable=not acc.is_local_main_process)
    losses, tokens, t_start, t_log = [], 0, time.time(), time.time()
    model.train()
    while step < run.total_steps:
        run.train_loader.set_epoch(epoch)
        batches = acc.skip_first_batches(run.train_loader, skip) if skip else run.train_loader
        for batch_idx, (input_ids, labels, position_ids) in enumerate(batches, start=skip):
            with acc.accumulate(model):
                # use_cache=False: a cache object would disable the per-document mask (see `pack`)
                loss = model(input_ids=input_ids, labels=labels, position_ids=position_ids, use_cache=False).loss
                acc.backward(loss)
                grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or math.inf) \
                    if acc.sync_gradients else None
                run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad()
            losses.append(loss.detach())
            tokens += int((labels != -100).sum())
            if not acc.sync_gradients:
                continue
            step += 1
            metrics = _balance_experts(run)
            bar.update(1)
            if step % cfg.logging_steps == 0 or step == run.total_steps:
                mean_loss = acc.reduce(torch.stack(losses).mean(), "mean").item()
                now = time.time()
                metrics |= {"loss": mean_loss, "lr": run.scheduler.get_last_lr()[0],
                            "grad_norm": float(grad_norm), "tokens_per_s": tokens * acc.num_processes / (now - t_log)}
                bar.set_postfix(loss=f"{mean_loss:.3f}")
                tracker.log(step, metrics, echo=False)
                losses, tokens, t_log = [], 0, now
            if cfg.eval_steps and step % cfg.eval_steps == 0 and step < run.total_steps:
                tracker.log(step, {"eval/loss": _evaluate(run)}, echo=False)
            if cfg.save_steps and step % cfg.save_steps == 0 and step < run.total_steps:
                save_checkpoint(acc, cfg.output_dir, step, model=model, tokenizer=run.tokenizer,
                                state={}, data_state={"epoch": epoch, "batches_in_epoch": batch_idx + 1},
                                save_total_limit=cfg.save_total_limit)
            if step >= run.total_steps:
                break
        epoch, skip = epoch + 1, 0
    bar.close()
    train_time = time.time() - t_start
    summary = _finish(run, cfg, tracker, step, loss_before, train_time)
    tracker.close()
    return summary


def _finish(run: _Run, cfg: PretrainConfig, tracker, step: int, loss_before: float, train_time: float) -> dict:
    """Final held-out loss, accuracy probe, atomic save and the summary."""
    from r1kit.checkpoint import save_model

    acc = run.accelerator
    loss_after = _evaluate(run)
    summary: dict[str, Any] = {
        "model": cfg.model_name_or_path,
        "parameters": sum(p.numel() for p in acc.unwrap_model(run.model).parameters()),
        "steps": step,
        "train_time_s": round(train_time, 1),
        "eval_loss_before": loss_before,
        "eval_loss_after": loss_after,
    }
    if run.experts is not None:
        run.experts.enabled = False
    if cfg.eval_accuracy_examples and acc.is_main_process:
        summary |= answer_accuracy(acc.unwrap_model(run.model), run.tokenizer, cfg)
    tracker.log(step, {k: v for k, v in summary.items() if k.startswith(("eval_", "accuracy/"))}, echo=False)
    save_model(acc, run.model, run.tokenizer, cfg.output_dir)
    if acc.is_main_process:
        (Path(cfg.output_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
        acc.print(json.dumps(summary, indent=1))
    return summary


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(PretrainConfig, argv, prog="r1kit pretrain")
    train(cfg)
    return 0


if __name__ == "__main__":
    main()
