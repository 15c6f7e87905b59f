"""LoRA adapters through peft, for dense and DeepSeek-V3-style MoE policies.

Which modules get adapters:
- `target_modules=["all-linear"]`: every `nn.Linear` except the LM head and MoE routers (a LoRA on a router would
  fight the expert-bias balancing in r1kit/modeling/moe.py, and routers are tiny anyway).
- Other entries keep peft's meaning: a module name or path suffix (`q_proj`, `mlp.down_proj`, ...). Each entry
  must match at least one `nn.Linear`, else a UserError lists the names that exist.
- Both are resolved here to exact module paths before peft sees them, and the adapted set is checked afterwards.

Why not just hand the names to peft: for models whose MoE layout transformers 5 changed (deepseek_v3 among them)
peft 0.21 treats `gate_proj`/`up_proj`/`down_proj` (and `gate`) as transformers-4 expert names and rewrites them
to `target_parameters` on the fused routed experts. The dense first layers' MLPs and the shared experts, which
are real `nn.Linear`s with exactly those names, silently get no adapter. That rewrite exists so adapters trained
on transformers 4 load on 5; r1kit builds its adapters on transformers-5 module paths, so `apply_lora` and
`load_adapter` switch it off for their own peft call (`_v5_module_paths`).

Routed experts stay frozen. transformers 5 stores them as fused 3D parameters, which peft can only adapt through
`ParamWrapper`, materialising a full-size weight delta for every expert on every forward: the memory LoRA is
meant to save. Attention, dense MLPs and shared experts (which every token passes through) carry the adapters.

With LoRA the MoE routers' `e_score_correction_bias` still moves (r1kit/modeling/moe.py), and it is not part of the adapter
weights, so `save_adapter` stores it beside the adapter (`router_bias.safetensors`) and `load_adapter` restores it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn

from r1kit.errors import UserError
from r1kit.modeling.moe import _LAYER_RE, _is_router, find_routers, is_moe

ALL_LINEAR = "all-linear"
ROUTER_BIAS_FILE = "router_bias.safetensors"


def _all_linear(model: nn.Module, linear: list[str]) -> set[str]:
    """Every Linear but the LM head and routers: modules inside a router class, or a Linear gate such as
    transformers-4 MoE's `mlp.gate` / Qwen-MoE's `shared_expert_gate`."""
    output = model.get_output_embeddings()
    excluded = {name for name, module in model.named_modules() if module is output or _is_router(module)}
    return {
        path
        for path in linear
        if not any(path == e or path.startswith(e + ".") for e in excluded)
        and not (path.rpartition(".")[2] == "gate" or path.endswith("_gate"))
    }


def resolve_target_modules(model: nn.Module, target_modules: Sequence[str]) -> list[str]:
    """Exact paths of the `nn.Linear` modules to adapt (see the module docstring for the rules)."""
    if not target_modules:
        raise UserError(
            "lora_target_modules is empty: name modules (e.g. [q_proj, o_proj]) or use [all-linear]"
        )
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    chosen: set[str] = set()
    for entry in target_modules:
        if entry == ALL_LINEAR:
            matched = _all_linear(model, linear)
        else:
            matched = {p for p in linear if p == entry or p.endswith("." + entry)}
        if not matched:
            raise UserError(_no_match_message(model, entry, linear))
        chosen |= matched
    return sorted(chosen)


def _no_match_message(model: nn.Module, entry: str, linear: list[str]) -> str:
    names = sorted({p.rpartition(".")[2] for p in linear})
    message = f"lora_target_modules entry {entry!r} matches no nn.Linear in the model; linear layers are named {names}"
    if is_moe(model):
        message += ". Routed experts are fused 3D parameters in transformers 5 and stay frozen under LoRA (see r1kit/modeling/lora.py)"
    return message


@contextlib.contextmanager
def _v5_module_paths() -> Iterator[None]:
    """Stop peft from re-targeting transformers-4 MoE names (`gate_proj` -> fused experts): our targets are
    transformers-5 module paths already. A no-op on peft versions without that rewrite."""
    try:
        from peft.utils import transformers_weight_conversion as conversion
    except ImportError:
        yield
        return
    original = conversion.convert_peft_config_for_transformers
    conversion.convert_peft_config_for_transformers = lambda *args, **kwargs: None
    try:
        yield
    finally:
        conversion.convert_peft_config_for_transformers = original


def _adapted_paths(peft_model: PeftModel) -> set[str]:
    base = peft_model.get_base_model()
    return {name for name, module in base.named_modules() if isinstance(module, LoraLayer)}


def apply_lora(
    model: nn.Module, r: int, alpha: int, dropout: float, target_modules: Sequence[str]
) -> PeftModel:
    """Wrap `model` with LoRA adapters (rank `r`, scale `alpha / r`) on the resolved targets; every other weight is
    frozen. Raises UserError for a target that matches nothing."""
    if isinstance(model, PeftModel):
        raise TypeError("model already carries peft adapters; pass the base model")
    paths = resolve_target_modules(model, target_modules)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=paths, bias="none", task_type="CAUSAL_LM"
    )
    with _v5_module_paths():
        peft_model = get_peft_model(model, config)
    adapted = _adapted_paths(peft_model)
    if adapted != set(paths):
        # Guard against peft re-targeting on its own (as its v4->v5 MoE rewrite does): fail rather than train
        # something other than what the recipe asked for.
        raise RuntimeError(
            f"peft adapted {sorted(adapted ^ set(paths))[:8]} differently from the requested targets; "
            "this peft version re-targets modules, see r1kit/modeling/lora.py"
        )
    return peft_model


def _module_kind(param_name: str) -> str:
    if ".self_attn." in param_name:
        return "attention"
    if ".shared_expert" in param_name:
        return "shared_experts"
    if ".mlp.gate." in param_name:
        return "router"
    if ".experts." in param_name:
        return "routed_experts"
    if ".mlp." in param_name:
        return "dense_mlp"
    if "embed_tokens" in param_name:
        return "embeddings"
    if "lm_head" in param_name:
        return "lm_head"
    return "other"


def lora_trainable_report(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts by module kind (`attention`, `dense_mlp`, `shared_experts`, `routed_experts`,
    `router`, `embeddings`, `lm_head`, `other`; kinds with nothing trainable are left out) plus `trainable` and
    `total`, to log once at start-up and to check what LoRA actually adapts."""
    report: dict[str, int] = {}
    total = trainable = 0
    for name, param in model.named_parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            kind = _module_kind(name)
            report[kind] = report.get(kind, 0) + param.numel()
    return report | {"trainable": trainable, "total": total}


@torch.no_grad()
def merged_state_dict(peft_model: PeftModel) -> dict[str, torch.Tensor]:
    """The base model's state dict with every active adapter folded in (`W + scale * B @ A`), under the plain
    model's key names. The peft model is left untouched, so training can go on (e.g. after syncing weights to
    vLLM or writing a merged checkpoint)."""
    base = peft_model.get_base_model()
    merged = {
        key.replace(".base_layer.", "."): tensor
        for key, tensor in base.state_dict().items()
        if ".lora_" not in key
    }
    for name, layer in base.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        if layer.merged:
            raise RuntimeError(
                f"{name} has its adapter merged into the base weight already; unmerge it first"
            )
        weight = layer.get_base_layer().weight
        delta = sum(layer.get_delta_weight(adapter) for adapter in layer.active_adapters)
        merged[f"{name}.weight"] = (weight + delta).to(weight.dtype)
    return merged


def merge_and_save(peft_model: PeftModel, tokenizer, out_dir: str | Path) -> Path:
    """Write a plain transformers checkpoint (adapters merged) + tokenizer to `out_dir`, loadable with
    `AutoModelForCausalLM.from_pretrained` and by vLLM. The peft model stays usable."""
    out_dir = Path(out_dir)
    peft_model.get_base_model().save_pretrained(out_dir, state_dict=merged_state_dict(peft_model))
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


def router_biases(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{decoder layer index (str): e_score_correction_bias} from a (peft or plain) model's state dict."""
    return {
        _LAYER_RE.search(key).group(1): tensor.detach().cpu().contiguous()
        for key, tensor in state_dict.items()
        if key.endswith(".e_score_correction_bias")
    }


def save_adapter(peft_model: PeftModel, out_dir: str | Path, tokenizer=None,
                 state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the adapter (peft format), the MoE routers' correction biases if any, and the tokenizer.

    `state_dict`: the full (gathered) state dict under FSDP, where the module's own tensors are shards.
    Use `r1kit.checkpoint.save_model` for an atomic, collective save from a training loop.
    """
    out_dir = Path(out_dir)
    state_dict = peft_model.state_dict() if state_dict is None else state_dict
    peft_model.save_pretrained(out_dir, state_dict=state_dict)
    biases = router_biases(state_dict)
    if biases:
        save_file(biases, out_dir / ROUTER_BIAS_FILE)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


@torch.no_grad()
def load_adapter(model: nn.Module, adapter_dir: str | Path, is_trainable: bool = False) -> PeftModel:
    """Load an adapter written by `save_adapter` onto a fresh base model (restoring the router biases)."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise UserError(
            f"{adapter_dir} holds no adapter_config.json; point it at a directory written by save_adapter"
        )
    with _v5_module_paths():
        peft_model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=is_trainable)
    # peft saves long target lists as shortest unique suffixes, so compare with the saved weights' module paths.
    saved = {
        key.removeprefix("base_model.model.").rpartition(".lora_")[0]
        for key in load_file(adapter_dir / "adapter_model.safetensors")
        if ".lora_" in key
    }
    if _adapted_paths(peft_model) != saved:
        raise RuntimeError(
            f"adapter from {adapter_dir} landed on other modules than it was saved from; see r1kit/modeling/lora.py"
        )
    bias_file = adapter_dir / ROUTER_BIAS_FILE
    if bias_file.is_file():
        routers = find_routers(peft_model)
        for layer, bias in load_file(bias_file).items():
            routers[int(layer)].e_score_correction_bias.copy_(bias)
    return peft_model
