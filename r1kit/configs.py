"""Config blocks shared by every stage, declared once.

A stage's config is a flat dataclass that inherits the blocks it needs, e.g.

    @dataclass(kw_only=True)
    class GRPOConfig(ModelConfig, DataConfig, TrainConfig, LoraConfig):
        num_generations: int = arg(8, "Completions per prompt (G).", ge=2)

so a YAML recipe stays flat (`learning_rate: 1e-6`, `model_name_or_path: ...`) and each field is
declared in exactly one place. Field names follow transformers/TRL where the meaning is the same, so
a TRL or open-r1 user can read an r1kit recipe without a glossary.

`STAGES` maps a stage name (the first part of a recipe's file name, `recipes/<setup>/<stage>*.yaml`)
to its config class, imported lazily so that importing this module never imports torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from r1kit.config import arg

# stage name -> "module:ConfigClass"; the module must be importable without side effects.
STAGES: dict[str, str] = {
    "pretrain": "sft.pretrain:PretrainConfig",
    "sft": "sft.sft:SFTConfig",
    "distill": "sft.distill:DistillConfig",
    "grpo": "rl.config:GRPOConfig",
    "eval": "evals.evaluate:EvalConfig",
}


def stage_config_class(stage: str) -> type:
    module, _, name = STAGES[stage].partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(kw_only=True)
class ModelConfig:
    model_name_or_path: str = arg(
        help="Model to start from: a local `save_pretrained` directory (e.g. from `r1kit build-tiny`) or a hub id.",
        path="model",
    )
    tokenizer_name_or_path: str | None = arg(None, "Tokenizer path or hub id; default: the model's own.", path="tokenizer")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = arg(
        "auto", "Weights dtype. auto: bfloat16 on CUDA with bf16 support, float32 otherwise."
    )
    attn_implementation: str | None = arg(None, "transformers attention backend (eager, sdpa, flash_attention_2).")
    trust_remote_code: bool = arg(False, "Allow model code from the hub (only for models you trust).")


@dataclass(kw_only=True)
class DataConfig:
    dataset_name: str = arg(
        help="A benchmark/registry name (gsm8k, math500, aime24, aime25, humaneval, mbpp, "
        "synthetic:<task>), a local JSONL file or directory, or a hub dataset id.",
        nonempty=True,
    )
    dataset_split: str = arg("train", "Split to read (train/test).")
    dataset_config: str | None = arg(None, "Hub dataset config name, if the dataset has several.")
    prompt_column: str = arg("prompt", "Column holding the problem text.")
    answer_column: str = arg("answer", "Column holding the gold answer.")
    max_samples: int | None = arg(None, "Use at most this many rows (after shuffling with `seed`).", gt=0)
    bad_rows: Literal["skip", "error"] = arg(
        "skip", "Rows with a missing/empty field: skip them with a report (file:line), or stop with an error."
    )
    system_prompt: str | None = arg(None, "System message put before every prompt.")


@dataclass(kw_only=True)
class TrainConfig:
    output_dir: str = arg(help="Where checkpoints, logs and the final model go.", nonempty=True)
    seed: int = arg(42, "Seed for data order, sampling and initialisation.")
    learning_rate: float = arg(1e-5, "Peak learning rate.", gt=0)
    lr_scheduler_type: Literal["constant", "constant_with_warmup", "linear", "cosine"] = arg(
        "cosine", "Learning-rate schedule after warmup."
    )
    warmup_ratio: float = arg(0.0, "Fraction of the steps spent warming up linearly from 0.", ge=0, le=1)
    max_steps: int = arg(-1, "Optimizer steps to run; -1 derives it from num_train_epochs.", ge=-1)
    num_train_epochs: float = arg(1.0, "Passes over the data when max_steps is -1.", gt=0)
    per_device_train_batch_size: int = arg(8, "Micro-batch size per process.", gt=0)
    gradient_accumulation_steps: int = arg(1, "Micro-batches accumulated per optimizer step.", gt=0)
    max_grad_norm: float = arg(1.0, "Clip the gradient norm to this (0 disables clipping).", ge=0)
    weight_decay: float = arg(0.0, "AdamW weight decay.", ge=0)
    adam_beta1: float = arg(0.9, "AdamW beta1.", ge=0, lt=1)
    adam_beta2: float = arg(0.999, "AdamW beta2.", ge=0, lt=1)
    logging_steps: int = arg(1, "Log metrics every N optimizer steps.", gt=0)
    save_steps: int = arg(0, "Checkpoint every N optimizer steps (0: only at the end).", ge=0)
    save_total_limit: int | None = arg(2, "Keep at most this many checkpoints (oldest removed).", gt=0)
    report_to: list[str] = arg(
        [], "Extra loggers besides stdout + JSONL.", choices=["tensorboard", "wandb", "trackio", "none"]
    )
    bf16: bool | None = arg(None, "bfloat16 autocast; null: on for CUDA devices that support it, off on CPU.")
    gradient_checkpointing: bool = arg(False, "Recompute activations in backward to save memory.")
    resume_from_checkpoint: str | None = arg(
        None, "'auto' (latest checkpoint in output_dir, if any) or a checkpoint directory."
    )
    use_cpu: bool = arg(False, "Train on CPU even when a GPU is present.")


@dataclass(kw_only=True)
class LoraConfig:
    use_peft: bool = arg(False, "Train LoRA adapters instead of all weights.")
    lora_r: int = arg(16, "LoRA rank.", gt=0)
    lora_alpha: int = arg(32, "LoRA alpha (scale = alpha / r).", gt=0)
    lora_dropout: float = arg(0.0, "Dropout on the LoRA path.", ge=0, lt=1)
    lora_target_modules: list[str] = arg(
        ["all-linear"],
        "Module names to adapt ('all-linear' = every linear layer except the LM head and MoE routers). "
        "On MoE models the dense MLPs and shared experts are adapted too (see r1kit/modeling/lora.py).",
    )
