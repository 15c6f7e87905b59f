"""`r1kit sft`: cold-start SFT on reasoning traces, on TRL's SFTTrainer.

DeepSeek-R1 (sec. 2.3.1) fine-tunes the base on a few thousand long chain-of-thought examples before RL,
so the policy already writes `<think>...</think>` and a readable answer and RL starts from rewards it can
earn. Here the rows are (prompt, reasoning, answer) rendered by `sft/data.py` into exactly the format the
format and strict-accuracy rewards check (`<answer>` tag or `\\boxed{}`, optional `<think>` prefill); the
demo's set is the synthetic generator's worked solutions (`synthetic:<task>`, column `solution`).

    r1kit sft --config recipes/tiny/sft.yaml
    accelerate launch -m sft.sft --config recipes/tiny/sft.yaml

Kept from TRL: the trainer, loss on assistant tokens only (`assistant_only_loss` through the chat
template's `{% generation %}` markers), best-fit packing into position-id rows that never attend across
examples (`packing`: TRL's padding-free BFD), checkpoints and resume. r1kit adds: typed config validated
at load, LoRA through `r1kit.modeling` (MoE routers stay unadapted), DeepSeek-V3 router balancing and
expert-load metrics as a callback, a count of truncated examples, held-out loss and a greedy probe
(well-formatted and strictly correct shares) before and after, metrics through r1kit's tracker
(`metrics.jsonl` + `report_to`), and the final model saved atomically (adapter + router biases with LoRA).

Torch, transformers and TRL are imported inside functions: `r1kit.configs.STAGES` imports `SFTConfig`
to validate recipes, and that must stay fast.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from r1kit.config import arg, parse_config, to_dict
from r1kit.configs import DataConfig, LoraConfig, ModelConfig, TrainConfig
from r1kit.errors import exit_on_user_error

SUMMARY_FILE = "summary.json"
STDOUT_KEYS = ("loss", "eval_loss", "moe/max_over_mean", "learning_rate")


@dataclass(kw_only=True)
class SFTConfig(ModelConfig, DataConfig, TrainConfig, LoraConfig):
    """Cold-start supervised fine-tuning on reasoning traces (see sft/sft.py)."""

    reasoning_column: str = arg("solution", "Column holding the worked reasoning (the thought).")
    completion_column: str | None = arg(
        None, "Column holding finished completions (e.g. `r1kit distill` traces), trained on verbatim instead of "
        "rendering reasoning_column and the answer."
    )
    answer_format: Literal["answer_tag", "boxed"] = arg(
        "answer_tag", "How the answer follows the thought: <answer>...</answer> or \\boxed{...}."
    )
    prefill_think: bool = arg(False, "The generation prompt ends with `<think>\\n` (R1-style prefill).")
    short_thought_fraction: float = arg(
        0.0, "Share of training examples whose thought is cut to the reasoning's first line (the answer then "
        "comes unworked): a cold-start set of mixed quality, which GRPO can improve on. Held-out rows stay whole.",
        ge=0, le=1,
    )
    max_length: int = arg(1024, "Longest tokenized example; longer ones are truncated (and counted).", ge=16)
    packing: bool = arg(
        True, "Pack examples into rows (best-fit, padding-free): positions restart per example, so no "
        "example attends to another. False: one padded example per row."
    )
    eval_split: str = arg("test", "Split of dataset_name for held-out loss and the greedy probe.")
    eval_max_samples: int = arg(200, "Held-out examples for the held-out loss (0: no held-out loss).", ge=0)
    eval_steps: int = arg(0, "Held-out loss every N steps (0: only before and after training).", ge=0)
    eval_accuracy_examples: int = arg(
        64, "Held-out prompts decoded greedily before and after training, scored with the format and "
        "strict_accuracy rewards (0 skips).", ge=0
    )
    eval_max_new_tokens: int = arg(256, "Most tokens generated per probe completion.", gt=0)
    moe_bias_update_speed: float = arg(
        1e-3, "MoE only: DeepSeek-V3 aux-loss-free balancing step for e_score_correction_bias (0 disables).", ge=0
    )
    torch_threads: int = arg(0, "CPU threads for torch; 0 keeps torch's default.", ge=0)


# ------------------------------------------------------------------------------------------- data


def load_examples(cfg: SFTConfig, split: str, max_samples: int | None) -> list[dict]:
    """Rows of `split` with prompt, reasoning and answer; a missing column is a UserError at start."""
    from r1kit.data import load_rows
    from sft.data import check_columns

    data_cfg = replace(cfg, dataset_split=split, max_samples=max_samples)
    rows = load_rows(data_cfg, required=())
    columns = ("prompt", cfg.completion_column) if cfg.completion_column else ("prompt", cfg.reasoning_column, "answer")
    return check_columns(rows, columns,
                         f"dataset '{cfg.dataset_name}' ({split})", cfg.bad_rows)


def count_truncated(tokenizer, examples: list[dict], max_length: int) -> int:
    """Examples whose chat-templated tokens exceed `max_length` (TRL keeps their start)."""
    texts = [tokenizer.apply_chat_template(e["messages"], tokenize=False) for e in examples]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return sum(n > max_length for n in lengths)


def _dataset(examples: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(examples)


# ----------------------------------------------------------------------------------- callbacks


def _callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


def tracker_callback(tracker):
    """Send every trainer log to r1kit's tracker (metrics.jsonl, stdout, report_to backends)."""

    class TrackerCallback(_callback_base()):
        def on_log(self, args, state, control, logs=None, **kwargs):
            numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            tracker.log(state.global_step, numbers, echo=False)

    return TrackerCallback()


def expert_balance_callback(balancer):
    """DeepSeek-V3 balancing after each optimizer step; the last step's load metrics join every log.

    Only training forwards count: a pre-forward hook turns counting on while the model is in train mode
    and takes the batch's attention mask (padding never counts), so evaluation and generation never
    steer the routers.
    """

    class ExpertBalanceCallback(_callback_base()):
        def __init__(self):
            self.metrics: dict[str, float] = {}

        def on_step_end(self, args, state, control, **kwargs):
            self.metrics = balancer.after_step()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and "loss" in logs:
                logs.update({k: v for k, v in self.metrics.items() if "/layer" not in k})

        def on_save(self, args, state, control, model=None, **kwargs):
            _save_router_bias(model, Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return ExpertBalanceCallback()


def _watch_training_forwards(model, balancer):
    def hook(module, args, kwargs):
        balancer.enabled = module.training
        balancer.set_mask(kwargs.get("attention_mask") if module.training else None)

    return model.register_forward_pre_hook(hook, with_kwargs=True)


def _save_router_bias(model, checkpoint: Path) -> None:
    """Trainer checkpoints of a peft model hold only the adapter; keep the balanced router biases beside it."""
    from peft import PeftModel
    from safetensors.torch import save_file

    from r1kit.modeling.lora import ROUTER_BIAS_FILE, router_biases

    if isinstance(model, PeftModel) and checkpoint.is_dir():
        save_file(router_biases(model.state_dict()), checkpoint / ROUTER_BIAS_FILE)


def _restore_router_bias(model, checkpoint: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from r1kit.modeling.lora import ROUTER_BIAS_FILE
    from r1kit.modeling.moe import find_routers

    if (checkpoint / ROUTER_BIAS_FILE).is_file():
        routers = find_routers(model)
        with torch.no_grad():
            for layer, bias in load_file(checkpoint / ROUTER_BIAS_FILE).items():
                routers[int(layer)].e_score_correction_bias.copy_(bias)


# ------------------------------------------------------------------------------------ evaluation


def greedy_probe(model, tokenizer, rows: list[dict], cfg: SFTConfig, batch_size: int = 64) -> dict[str, float]:
    """Greedy completions of held-out prompts (shared `hf` engine): shares well formatted and strictly correct."""
    from r1kit.chat import encode_prompt
    from r1kit.generation import HFEngine, SamplingSettings
    from rewards.registry import build_rewards

    params = {"answer_format": cfg.answer_format, "think_prefilled": cfg.prefill_think}
    fmt, strict = build_rewards([{"name": "format", "params": params},
                                 {"name": "strict_accuracy", "params": params}])
    engine, greedy = HFEngine(model, tokenizer), SamplingSettings(cfg.eval_max_new_tokens, greedy=True)
    was_training = model.training
    model.eval()
    texts = []
    for start in range(0, len(rows), batch_size):
        ids = [encode_prompt(r["prompt"], tokenizer, cfg.system_prompt, cfg.prefill_think)
               for r in rows[start: start + batch_size]]
        texts += tokenizer.batch_decode(engine.generate(ids, greedy).completion_ids, skip_special_tokens=True)
    model.train(was_training)
    answers = [r["answer"] for r in rows]
    return {"probe/format": sum(fmt(texts)) / len(rows),
            "probe/strict_accuracy": sum(s or 0.0 for s in strict(texts, answer=answers)) / len(rows)}


# -------------------------------------------------------------------------------------- training


def _bf16(cfg: SFTConfig) -> bool:
    """null: bf16 on CUDA devices that support it, off on CPU (as the other stages)."""
    import torch

    if cfg.bf16 is not None:
        return cfg.bf16
    return torch.cuda.is_available() and not cfg.use_cpu and torch.cuda.is_bf16_supported()


def _trl_args(cfg: SFTConfig, has_eval: bool):
    from trl import SFTConfig as TRLConfig

    return TRLConfig(
        output_dir=cfg.output_dir, seed=cfg.seed, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio, max_steps=cfg.max_steps,  # < 1: a ratio
        num_train_epochs=cfg.num_train_epochs, per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_grad_norm=cfg.max_grad_norm,
        weight_decay=cfg.weight_decay, adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2,
        logging_steps=cfg.logging_steps, save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500, save_total_limit=cfg.save_total_limit, bf16=_bf16(cfg),
        use_cpu=cfg.use_cpu, report_to="none",  # r1kit's tracker reports (metrics.jsonl + report_to)
        eval_strategy="steps" if has_eval and cfg.eval_steps else "no", eval_steps=cfg.eval_steps or None,
        max_length=cfg.max_length, assistant_only_loss=True,
        # BFD packing is padding-free: one flattened row with position ids that restart per example, which
        # transformers turns into a block-diagonal mask, so packed examples never see each other.
        packing=cfg.packing, packing_strategy="bfd",
        dataset_num_proc=None, remove_unused_columns=True,
    )


@dataclass
class _Run:
    trainer: Any
    tokenizer: Any
    tracker: Any
    balancer: Any  # r1kit.modeling.moe.ExpertBalancer, or None for a dense model
    probe_rows: list[dict]
    truncated: int
    n_train: int


def setup(cfg: SFTConfig) -> _Run:
    import torch
    from accelerate import PartialState
    from trl import SFTTrainer

    from r1kit.modeling.loading import load_for_training
    from r1kit.modeling.moe import ExpertBalancer, is_moe
    from r1kit.tracking import Tracker
    from sft.data import chat_examples, check_chat_template, shorten_thoughts

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    device = "cuda" if torch.cuda.is_available() and not cfg.use_cpu else "cpu"
    model, tokenizer = load_for_training(cfg, device)
    check_chat_template(tokenizer, f"model '{cfg.model_name_or_path}'")
    train_rows = load_examples(cfg, cfg.dataset_split, cfg.max_samples)
    if cfg.short_thought_fraction and not cfg.completion_column:
        train_rows = shorten_thoughts(train_rows, cfg.reasoning_column, cfg.short_thought_fraction, cfg.seed)
    train = chat_examples(train_rows, cfg.reasoning_column, cfg.answer_format, cfg.system_prompt, cfg.completion_column)
    heldout = load_examples(cfg, cfg.eval_split, max(cfg.eval_max_samples, cfg.eval_accuracy_examples)) \
        if cfg.eval_max_samples or cfg.eval_accuracy_examples else []
    evals = chat_examples(heldout[: cfg.eval_max_samples], cfg.reasoning_column, cfg.answer_format, cfg.system_prompt,
                          cfg.completion_column)
    truncated = count_truncated(tokenizer, train, cfg.max_length)
    if truncated:
        print(f"WARNING: {truncated} of {len(train)} training examples exceed max_length={cfg.max_length} tokens "
              "and are truncated (their ends lose the loss); raise max_length or filter them.", flush=True)
    balancer = ExpertBalancer(model, cfg.moe_bias_update_speed) if is_moe(model) else None
    tracker = Tracker(cfg.output_dir, cfg.report_to, to_dict(cfg), is_main=PartialState().is_main_process,
                      stdout_keys=STDOUT_KEYS)
    callbacks = [tracker_callback(tracker)]
    if balancer is not None:
        _watch_training_forwards(model, balancer)
        callbacks.insert(0, expert_balance_callback(balancer))  # its metrics join a log before it is written
    trainer = SFTTrainer(model=model, args=_trl_args(cfg, bool(evals)), train_dataset=_dataset(train),
                         eval_dataset=_dataset(evals) if evals else None, processing_class=tokenizer,
                         callbacks=callbacks)
    for cb in reversed(callbacks):  # ahead of the trainer's own reporters, which read the same logs dict
        trainer.callback_handler.callbacks.insert(0, trainer.callback_handler.pop_callback(cb))
    return _Run(trainer, tokenizer, tracker, balancer, heldout[: cfg.eval_accuracy_examples], truncated, len(train))


def resume_path(cfg: SFTConfig) -> Path | None:
    """The checkpoint to resume from; with 'auto' the newest one the trainer finished writing."""
    from r1kit.checkpoint import STATE_FILE, list_checkpoints, resolve_resume

    if cfg.resume_from_checkpoint != "auto":
        return resolve_resume(cfg.resume_from_checkpoint, cfg.output_dir)
    whole = [p for p in list_checkpoints(cfg.output_dir) if (p / STATE_FILE).is_file()]
    return whole[-1] if whole else None


def _heldout(run: _Run, cfg: SFTConfig, when: str) -> dict[str, float]:
    out: dict[str, float] = {}
    trainer = run.trainer
    if trainer.eval_dataset is not None:
        out[f"eval_loss_{when}"] = trainer.evaluate()["eval_loss"]
    if run.probe_rows:
        probe = greedy_probe(trainer.model, run.tokenizer, run.probe_rows, cfg)
        out |= {f"{k}_{when}": v for k, v in probe.items()}
    return out


def train(cfg: SFTConfig) -> dict[str, Any]:
    """Run cold-start SFT; returns the summary also written to `output_dir/summary.json`."""
    from r1kit.checkpoint import save_model

    run = setup(cfg)
    trainer = run.trainer
    summary: dict[str, Any] = {"model": cfg.model_name_or_path, "train_examples": run.n_train,
                               "truncated_examples": run.truncated}
    resume = resume_path(cfg)
    if resume is None:
        summary |= _heldout(run, cfg, "before")
    else:
        _restore_router_bias(trainer.model, resume)
    start = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    summary |= {"steps": result.global_step, "train_loss": result.training_loss,
                "train_time_s": round(time.time() - start, 1)}
    summary |= _heldout(run, cfg, "after")
    save_model(trainer.accelerator, trainer.model, run.tokenizer, cfg.output_dir)
    run.tracker.log(result.global_step, {k: v for k, v in summary.items() if isinstance(v, float)}, echo=False)
    run.tracker.close()
    if trainer.accelerator.is_main_process:
        (Path(cfg.output_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary, indent=1), flush=True)
    return summary


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(SFTConfig, argv, prog="r1kit sft")
    train(cfg)
    return 0


if __name__ == "__main__":
    main()
