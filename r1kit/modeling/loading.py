"""Loading models and tokenizers the same way in every stage.

- dtype: `auto` is bfloat16 on a CUDA device that supports it, float32 otherwise.
- local path or hub id: a name whose first folder exists here (`runs/tiny/policy` when `runs/` exists),
  or that starts with `/`, `.` or `~`, is a local path. It must hold a saved model; if it does not load
  that is a UserError naming the path, never a silent retry on the hub under the same name.
- a directory written with LoRA (`adapter_config.json`) loads its base model, then the adapter and the
  MoE router biases saved beside it (`r1kit.modeling.lora.load_adapter`).
- `use_peft` on a stage config wraps the model in fresh LoRA adapters (`r1kit.modeling.lora.apply_lora`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from r1kit.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """`auto` -> bfloat16 on CUDA with bf16 support, float32 elsewhere; other names map directly.

    >>> resolve_dtype("auto", "cpu"), resolve_dtype("bfloat16", "cpu")
    (torch.float32, torch.bfloat16)
    """
    if name == "auto":
        cuda = torch.device(device).type == "cuda"
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    return DTYPES[name]


def local_path(name: str) -> Path | None:
    """The local directory `name` means, or None for a hub id.

    >>> local_path("/no/such/model"), local_path("Org/some-model") is None
    (PosixPath('/no/such/model'), True)
    """
    path = Path(name).expanduser()
    if path.is_absolute() or name.startswith((".", "~")) or path.exists() or Path(path.parts[0]).exists():
        return path
    return None


_MODEL_FILES = ("config.json", "adapter_config.json")
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def _check_local(path: Path, what: str, markers: tuple[str, ...] = _MODEL_FILES) -> None:
    if not path.is_dir():
        raise UserError(f"{what} '{path}' is a local path (its first folder exists here) but is not a directory "
                        "that holds a saved model. Fix the path, or run the stage that writes it first.")
    if not any((path / name).is_file() for name in markers):
        raise UserError(f"{what} '{path}' holds none of {list(markers)}, so it is not a saved {what.split()[-1]} "
                        "(an interrupted save never leaves one). Point it at a `save_pretrained` directory.")


def load_tokenizer(name_or_path: str):
    """`AutoTokenizer.from_pretrained`, with local paths never looked up on the hub."""
    from transformers import AutoTokenizer

    path = local_path(name_or_path)
    if path is None:
        return AutoTokenizer.from_pretrained(name_or_path)
    _check_local(path, "tokenizer", _TOKENIZER_FILES)
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"tokenizer '{path}' does not load: {e}") from None


def load_model(name_or_path: str, *, dtype: str = "auto", device: torch.device | str = "cpu",
               attn_implementation: str | None = None, trust_remote_code: bool = False,
               is_trainable: bool = False):
    """A causal LM by hub id or local path; a LoRA directory comes back as its base + adapter (+ router biases)."""
    from transformers import AutoModelForCausalLM

    kw: dict[str, Any] = {"dtype": resolve_dtype(dtype, device), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    path = local_path(name_or_path)
    if path is None:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **kw)
    _check_local(path, "model")
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        return _load_adapter_dir(path, kw, is_trainable)
    try:
        return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kw)
    except (OSError, ValueError) as e:
        raise UserError(f"model '{path}' does not load: {e}") from None


def _load_adapter_dir(path: Path, kw: dict[str, Any], is_trainable: bool):
    from transformers import AutoModelForCausalLM

    from r1kit.modeling.lora import load_adapter

    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise UserError(f"adapter '{path}' does not name its base model (base_model_name_or_path); "
                        "load the base yourself and call r1kit.modeling.lora.load_adapter.")
    base_path = local_path(base)
    if base_path is not None:
        _check_local(base_path, f"base model of adapter '{path}'")
    model = AutoModelForCausalLM.from_pretrained(base_path or base, local_files_only=base_path is not None, **kw)
    return load_adapter(model, path, is_trainable=is_trainable)


def load_for_training(cfg, device: torch.device | str):
    """(model, tokenizer) from a stage config's ModelConfig fields, with gradient checkpointing and fresh
    LoRA adapters when the config asks for them (LoraConfig.use_peft)."""
    from r1kit.configs import LoraConfig

    model = load_model(cfg.model_name_or_path, dtype=cfg.dtype, device=device,
                       attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code)
    tokenizer = load_tokenizer(cfg.tokenizer_name_or_path or cfg.model_name_or_path)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if isinstance(cfg, LoraConfig) and cfg.use_peft:
        from r1kit.modeling.lora import apply_lora

        model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    return model, tokenizer
