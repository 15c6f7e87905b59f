"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for any stage that trains a transformers model.

r1kit shards the model itself rather than through accelerate: on a CPU machine accelerate turns an FSDP
config into plain data parallel, and the same code should run on CPU (gloo) and GPUs (NCCL). Sharding is
asked for by an accelerate FSDP config or `--use_fsdp` (`accelerate launch` exports
`ACCELERATE_USE_FSDP=true`), or by a stage's `fsdp: true` under torchrun.

- `shard_model`: `fully_shard` on every decoder layer (the model's `_no_split_modules` classes), then on
  the root, so one layer's weights are gathered at a time in the forward and backward. Parameters and
  gradients become DTensors sharded on dim 0; AdamW keeps its states sharded the same way.
- `gathered`: all weights whole for a rollout: one all-gather per layer, then generation runs locally on
  plain tensors (no collective per decode step, so processes decode independently and the engine's fast
  paths apply), at the memory cost of one whole model per process (what TRL's ZeRO-3 gather does).
- `clip_grad_norm_`: the global norm of sharded gradients (partial norms all-reduced), then clipping.
- `whole_state_dict`: inside `gathered`, the whole weights on every process (a vLLM engine per process takes
  them); `sharded_parameters`: the shards the optimizer steps, also while gathered.
- `full_state_dict`: the whole state dict on rank 0 (CPU) for `save_pretrained`; `save_sharded` and
  `load_sharded` write and read model + optimizer shards with torch.distributed.checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn


def requested() -> bool:
    """Whether the launcher asked for FSDP (an accelerate FSDP config or `--use_fsdp`)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The modules to shard one by one: instances of the model's `_no_split_modules` classes (transformers
    names its decoder layer there; a peft wrapper's base model is searched through)."""
    names: set[str] = set()
    for module in model.modules():
        names |= set(getattr(module, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__} names no decoder layer class in `_no_split_modules`: "
                         "FSDP would gather the whole model at once; shard it by hand.")
    return layers


def shard_model(model: nn.Module, *, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Shard `model` in place over the default process group (one mesh dimension: every process holds
    1/world of each parameter); returns it, now an `FSDPModule`. Call after `init_process_group`, before
    building the optimizer, on every process with the same weights. `param_dtype` (bf16): weights are
    gathered and computed in it while the sharded master weights, gradients reduction and AdamW stay float32."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    device = next(model.parameters()).device
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    # An MoE routes each process's tokens to different experts: a weight that got no gradient here but did on
    # another process would leave the reduce-scatters mismatched (DDP's find_unused_parameters, for FSDP2).
    model.set_reduce_scatter_unused_params(True)
    return model


def _fsdp_modules(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


_GATHERED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[nn.Module]:
    """Every weight of `model` whole inside the block (a no-op for a model that is not sharded, or inside an
    outer `gathered` of the same model): each module's parameters are the gathered tensors, its forward hooks
    find them gathered and leave them so, and they are resharded on exit. Collective on entry and exit (every
    process must enter together); in between nothing is, so processes may run different forwards."""
    modules = _fsdp_modules(model)
    if not modules or model in _GATHERED:
        yield model
        return
    _GATHERED.add(model)
    for m in modules:
        m.set_reshard_after_forward(False, recurse=False)
    handles = [m.unshard(async_op=True) for m in modules]
    for h in handles:
        if h is not None:
            h.wait()
    try:
        yield model
    finally:
        _GATHERED.discard(model)
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def sharded_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimizer steps: for a sharded model its shards (DTensors), also inside `gathered`,
    where the modules hold the gathered copies instead; `model.parameters()` for a model that is not sharded."""
    modules = _fsdp_modules(model)
    if not modules:
        return list(model.parameters())
    params: list[nn.Parameter] = []
    for m in modules:
        group = m._get_fsdp_state()._fsdp_param_group  # FSDP2 has no public accessor for a module's shards
        if group is not None:
            params += [p.sharded_param for p in group.fsdp_params]
    return params


def whole_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Inside `gathered`: the state dict (same keys, tied weights under each name, persistent buffers) with the
    gathered whole tensors, on every process and without communication. Read from the modules directly, because
    `state_dict()` runs FSDP2's pre-hooks, which reshard and return this process's DTensor shards. The tensors
    are freed when `gathered` exits: copy what must outlive it."""
    if _fsdp_modules(model) and model not in _GATHERED:
        raise RuntimeError("whole_state_dict needs the weights gathered: call it inside `with fsdp.gathered(model)`")
    state: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        prefix = f"{name}." if name else ""
        state |= {prefix + k: p for k, p in module._parameters.items() if p is not None}
        state |= {prefix + k: b for k, b in module._buffers.items()
                  if b is not None and k not in module._non_persistent_buffers_set}
    return state


def clip_grad_norm_(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` for sharded gradients: the total norm over all processes (each
    DTensor's partial norm reduced), then every local shard scaled by the same coefficient."""
    from torch.distributed.tensor import DTensor

    params = [p for p in parameters if p.grad is not None]
    total = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict, gathered to rank 0 on CPU ({} on the other ranks). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """Each process writes its shards of the weights and optimizer states to `path` (a directory every
    process can reach). Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(path))


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """Restore what `save_sharded` wrote, in place, with the same number of processes. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
