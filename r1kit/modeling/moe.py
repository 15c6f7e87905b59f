"""Mixture-of-experts support for every training stage (pretrain, SFT, GRPO) on DeepSeek-V3-style models.

What a training loop gets from here (all of it works on a plain, a peft-wrapped and a DDP/FSDP/accelerate-wrapped
model, because routers are found by walking `model.named_modules()`):

- `is_moe(model)`: does the model route tokens through top-k experts?
- `ExpertLoadTracker(model)`: forward hooks on every router that count how often each expert is picked, only for
  the tokens that count (`set_mask`) and only while `enabled` (training forwards, not generation or old-logprob
  passes). A gradient-checkpointing recompute is not counted twice.
- `update_expert_bias(model, counts, gamma)`: DeepSeek-V3's auxiliary-loss-free balancing (V3 report, sec. 2.1.2):
  after each optimizer step `b_i += gamma * sign(mean_load - load_i)`, so overloaded experts become less likely
  to be picked. The bias only enters the top-k *choice*, never the gate weights, so it steers load without
  changing what the model computes for a fixed routing.
- `expert_load_metrics(counts)`: max/mean load and normalised routing entropy per layer, for logging.
- `router_aux_loss(...)` / `ExpertLoadTracker(model, with_aux_loss=True).aux_loss(alpha)`: V3's complementary
  sequence-wise balance loss (eqs. 17-20), optional and meant to be tiny next to the bias update.
- `expert_balancer(model, update_speed, aux_loss_coef=, routing_replay=)`: what a loop holds, chosen once at setup:
  an `ExpertBalancer` (the tracker, the bias update `after_step()` once per optimizer step, the aux loss and
  routing replay in one object; pretraining and SFT use its balancing, GRPO all of it), or `NoExperts`, the same
  methods doing nothing, for a dense model.
- `RoutingReplay(model)`: routing replay "R2" (as in GSPO / the Qwen3 MoE RL reports): the experts the old
  policy chose for a micro-batch are recorded and forced on the new policy's forward, so the importance ratio
  compares the same expert paths; the gate weights still come from the current router, so the router still
  learns.

Typical loop wiring (one optimizer step; a dense model gets the same calls as no-ops):

    experts = expert_balancer(model, gamma, aux_loss_coef=alpha, routing_replay=True)
    experts.enabled = False                         # generation and old-policy passes are not counted
    ...
    with experts.record(mb_id):                     # old-policy logprobs, no grad
        old_logps = logprobs(model, mb)
    experts.enabled = True
    with experts.replay(mb_id):                     # backward inside too: a checkpoint recompute replays as well
        experts.set_mask(mb.completion_mask)        # (B, T): count completion tokens only
        loss = grpo_loss(logprobs(model, mb), old_logps, ...) + experts.aux_loss()
        loss.backward()
    experts.enabled = False
    optimizer.step()
    metrics |= experts.after_step()                 # all-reduced counts, so every rank moves the same biases
    experts.clear_replay()

Routers are the modules whose class name ends in `TopkRouter`/`TopKRouter` (transformers 5's DeepseekV3,
Glm4Moe, Qwen3Moe, Mixtral, ...) and return `(router_logits, topk_weights, topk_indices)`. Counting and metrics
work for all of them; the bias update, the aux loss and replay need DeepSeek-V3-style routers (sigmoid scores
plus an `e_score_correction_bias` buffer) and say so otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial

import torch
import torch.distributed as dist
from torch import Tensor, nn

# "model.layers.3.mlp.gate", "base_model.model.model.layers.3.mlp.gate", "module.model.layers.3.mlp.gate"
_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _is_router(module: nn.Module) -> bool:
    return type(module).__name__.lower().endswith("topkrouter") and hasattr(module, "top_k")


def _is_v3_router(module: nn.Module) -> bool:
    return isinstance(getattr(module, "e_score_correction_bias", None), Tensor)


def is_moe(model: nn.Module) -> bool:
    """True if any submodule is a top-k expert router (wrappers and peft are looked through)."""
    return any(_is_router(m) for m in model.modules())


def _router_items(model: nn.Module) -> list[tuple[str, int, nn.Module]]:
    """(module path, decoder layer index, router) for every router, in layer order."""
    items = []
    for name, module in model.named_modules():
        if not _is_router(module):
            continue
        match = _LAYER_RE.search(name)
        if match is None:
            raise ValueError(
                f"router {name!r} is not inside a `layers.<i>` module list; cannot tell its layer"
            )
        items.append((name, int(match.group(1)), module))
    return sorted(items, key=lambda item: item[1])


def find_routers(model: nn.Module) -> dict[int, nn.Module]:
    """Decoder layer index -> router module. Raises ValueError on a model without routers."""
    routers = {layer: module for _, layer, module in _router_items(model)}
    if not routers:
        raise ValueError(f"{type(model).__name__} has no MoE router (no module class named *TopkRouter)")
    return routers


def _require_v3_routers(routers: dict[int, nn.Module], feature: str) -> None:
    for layer, router in routers.items():
        if not _is_v3_router(router):
            raise ValueError(
                f"{feature} needs DeepSeek-V3-style routers (sigmoid scores + e_score_correction_bias); "
                f"layer {layer} has {type(router).__name__}"
            )


def _decoder_stacks(model: nn.Module) -> list[nn.Module]:
    """The modules that own the `layers` lists holding routers (e.g. `DeepseekV3Model`).

    One call of such a module is one model forward; a gradient-checkpointing recompute re-runs single decoder
    layers but never this module, which is how the tracker tells a recompute from a new forward.
    """
    prefixes = {name[: _LAYER_RE.search(name).start()] for name, _, _ in _router_items(model)}
    return [model.get_submodule(prefix) for prefix in sorted(prefixes)]


def _flat_mask(mask: Tensor | None, n_tokens: int, device: torch.device) -> Tensor | None:
    """(B, T) mask -> (B*T,) bool on `device`, checked against the router's token count."""
    if mask is None:
        return None
    if mask.numel() != n_tokens:
        raise ValueError(
            f"token mask has {mask.numel()} entries (shape {tuple(mask.shape)}) but the router saw {n_tokens} "
            "tokens; pass the (B, T) mask of the very batch the next forward runs on"
        )
    return mask.reshape(-1).to(device=device, dtype=torch.bool)


def router_aux_loss(
    router_logits: Tensor,
    topk_indices: Tensor,
    seq_shape: tuple[int, int],
    alpha: float,
    token_mask: Tensor | None = None,
) -> Tensor:
    """DeepSeek-V3 complementary sequence-wise balance loss for one MoE layer (V3 report, eqs. 17-20).

    `L = alpha * mean_over_sequences(sum_i f_i * P_i)` with, per sequence of T counted tokens,
    `f_i = N_r / (K_r * T) * #{t : expert i in top-k(t)}` and `P_i = mean_t s'_{i,t}`, where `s'` are the sigmoid
    affinities normalised over experts. Perfect balance gives `alpha`; all tokens on K experts gives
    `alpha * N_r / K_r` at most. Gradient flows to the router through `P` (the top-k choice is not differentiable).

    router_logits (B*T, E), topk_indices (B*T, K), seq_shape (B, T), token_mask (B, T) or (B*T,) or None.

    >>> even = torch.zeros(2, 2)                    # one sequence, two tokens, two equally scored experts
    >>> router_aux_loss(even, torch.tensor([[0], [1]]), (1, 2), alpha=0.5).item()  # K=1, one token each
    0.5
    >>> skewed = torch.tensor([[2.0, 0.0], [2.0, 0.0]])  # expert 0 scores higher and takes both tokens
    >>> round(router_aux_loss(skewed, torch.tensor([[0], [0]]), (1, 2), alpha=0.5).item(), 4)
    0.6379
    """
    batch, seq_len = seq_shape
    n_experts, top_k = router_logits.shape[-1], topk_indices.shape[-1]
    scores = router_logits.float().sigmoid().view(batch, seq_len, n_experts)
    affinity = scores / scores.sum(dim=-1, keepdim=True)  # s'_{i,t}, (B, T, E)
    picked = torch.zeros_like(affinity).scatter_(
        -1, topk_indices.view(batch, seq_len, top_k), 1.0
    )  # (B, T, E)
    mask = (
        torch.ones(batch, seq_len, device=scores.device)
        if token_mask is None
        else token_mask.reshape(batch, seq_len).to(device=scores.device, dtype=scores.dtype)
    )
    n_tokens = mask.sum(dim=1)  # (B,)
    has_tokens = n_tokens > 0
    denom = n_tokens.clamp(min=1).unsqueeze(-1)  # (B, 1)
    f = n_experts / top_k * (picked * mask.unsqueeze(-1)).sum(dim=1) / denom  # (B, E)
    p = (affinity * mask.unsqueeze(-1)).sum(dim=1) / denom  # (B, E)
    per_sequence = (f * p).sum(dim=-1)  # (B,)
    return alpha * per_sequence[has_tokens].mean()


class ExpertLoadTracker:
    """Counts expert selections per MoE layer from the training forwards; optionally keeps the aux-loss terms.

    - `enabled` (default True): count only while True; switch it off around generation and old-logprob passes.
    - `set_mask(mask)`: a (B, T) mask (attention or completion mask) applied to the next model forward only;
      without one every token counts.
    - `counts()`: {layer: int64 tensor (n_experts,)} accumulated since the last `reset()`.
    - `all_reduce()`: sum the counts over processes (no-op unless torch.distributed is initialised).
    - `aux_loss(alpha)` (needs `with_aux_loss=True`): mean over MoE layers of `router_aux_loss` for the last
      forward; add it to the policy loss before `backward()`.
    """

    def __init__(self, model: nn.Module, *, with_aux_loss: bool = False):
        self.routers = find_routers(model)
        if with_aux_loss:
            _require_v3_routers(self.routers, "the router aux loss")
        self.enabled = True
        self.with_aux_loss = with_aux_loss
        self._pending_mask: Tensor | None = None
        self._mask: Tensor | None = None
        self._forward_id = 0
        self._counted_in: dict[int, int] = {}  # layer -> forward id it last counted
        self._aux_terms: dict[int, Tensor] = {}
        self._counts: dict[int, Tensor] = {}
        self.reset()
        self._handles = [
            stack.register_forward_pre_hook(self._on_model_forward) for stack in _decoder_stacks(model)
        ]
        self._handles += [
            router.register_forward_hook(partial(self._on_router, layer))
            for layer, router in self.routers.items()
        ]

    def set_mask(self, mask: Tensor | None) -> None:
        """Count only tokens where `mask` (B, T) is nonzero, in the next model forward."""
        self._pending_mask = mask

    def counts(self) -> dict[int, Tensor]:
        return {layer: c.clone() for layer, c in self._counts.items()}

    def reset(self) -> None:
        self._counts = {
            layer: torch.zeros(router.weight.shape[0], dtype=torch.long, device=router.weight.device)
            for layer, router in self.routers.items()
        }

    def all_reduce(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            return
        layers = sorted(self._counts)
        stacked = torch.stack(
            [self._counts[layer] for layer in layers]
        )  # (L, E): one collective for all layers
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        self._counts = dict(zip(layers, stacked.unbind(0)))

    def aux_loss(self, alpha: float) -> Tensor:
        if not self.with_aux_loss:
            raise RuntimeError(
                "build the tracker with ExpertLoadTracker(model, with_aux_loss=True) to get aux_loss"
            )
        if not self._aux_terms:
            raise RuntimeError(
                "no aux-loss terms: call aux_loss after an enabled forward run with grad enabled"
            )
        return alpha * torch.stack(list(self._aux_terms.values())).mean()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _on_model_forward(self, module: nn.Module, args: tuple) -> None:
        self._forward_id += 1
        self._mask, self._pending_mask = self._pending_mask, None
        self._aux_terms = {}

    def _on_router(self, layer: int, module: nn.Module, args: tuple, output: tuple) -> None:
        # A second call within one model forward is a gradient-checkpointing recompute: already counted.
        if not self.enabled or self._counted_in.get(layer) == self._forward_id:
            return
        self._counted_in[layer] = self._forward_id
        router_logits, _, topk_indices = output  # (N, E), (N, K), (N, K) with N = B*T
        keep = _flat_mask(self._mask, topk_indices.shape[0], topk_indices.device)  # (N,) or None
        chosen = topk_indices if keep is None else topk_indices[keep]
        counts = self._counts[layer]
        counts += torch.bincount(chosen.reshape(-1), minlength=counts.numel()).to(counts.device)
        if self.with_aux_loss and torch.is_grad_enabled():
            seq_shape = tuple(args[0].shape[:-1]) if args[0].dim() == 3 else (1, topk_indices.shape[0])
            self._aux_terms[layer] = router_aux_loss(router_logits, topk_indices, seq_shape, 1.0, keep)


def expert_load_metrics(counts: dict[int, Tensor]) -> dict[str, float]:
    """Per-layer `moe/layer{i}/max_over_mean` and `moe/layer{i}/entropy` (routing entropy / log(n_experts), so
    1.0 is perfectly uniform) plus their means over layers `moe/max_over_mean`, `moe/entropy`. Layers that saw no
    tokens are left out.

    >>> m = expert_load_metrics({1: torch.tensor([5, 5, 5, 5]), 2: torch.tensor([8, 0, 0, 0])})
    >>> m["moe/layer1/max_over_mean"], m["moe/layer1/entropy"], m["moe/layer2/max_over_mean"], m["moe/layer2/entropy"]
    (1.0, 1.0, 4.0, 0.0)
    >>> m["moe/max_over_mean"], m["moe/entropy"]
    (2.5, 0.5)
    """
    metrics: dict[str, float] = {}
    per_layer_max, per_layer_entropy = [], []
    for layer, load in sorted(counts.items()):
        load = load.detach().double().cpu()
        total = load.sum()
        if total == 0:
            continue
        p = load[load > 0] / total
        entropy = (p * p.reciprocal().log()).sum().item() / math.log(load.numel())
        max_over_mean = (load.max() / load.mean()).item()
        metrics[f"moe/layer{layer}/max_over_mean"] = max_over_mean
        metrics[f"moe/layer{layer}/entropy"] = entropy
        per_layer_max.append(max_over_mean)
        per_layer_entropy.append(entropy)
    if per_layer_max:
        metrics["moe/max_over_mean"] = sum(per_layer_max) / len(per_layer_max)
        metrics["moe/entropy"] = sum(per_layer_entropy) / len(per_layer_entropy)
    return metrics


@torch.no_grad()
def update_expert_bias(model: nn.Module, counts: dict[int, Tensor], gamma: float) -> dict[str, float]:
    """Auxiliary-loss-free balancing (DeepSeek-V3 report, sec. 2.1.2): per MoE layer, in place,
    `e_score_correction_bias += gamma * sign(mean(load) - load)`. gamma 0 leaves the bias untouched.

    `counts` are a whole optimizer step's loads (all-reduced first, so every rank applies the same update).
    Returns `expert_load_metrics(counts)` plus `moe/bias_abs_mean` (mean |bias| over layers after the update).
    """
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0 (got {gamma}); 0 disables the bias update")
    routers = find_routers(model)
    unknown = sorted(set(counts) - set(routers))
    if unknown:
        raise ValueError(
            f"counts for layers {unknown} but the model has routers only in layers {sorted(routers)}"
        )
    if gamma > 0:
        _require_v3_routers(routers, "the expert-bias update")
        for layer, load in counts.items():
            bias = routers[layer].e_score_correction_bias
            load = load.to(device=bias.device, dtype=torch.float32)
            bias.add_(gamma * torch.sign(load.mean() - load).to(bias.dtype))
    metrics = expert_load_metrics(counts)
    biases = [r.e_score_correction_bias.abs().mean() for r in routers.values() if _is_v3_router(r)]
    if biases:
        metrics["moe/bias_abs_mean"] = torch.stack(biases).mean().item()
    return metrics


class ExpertBalancer:
    """Everything a training loop does around an MoE model's routers, one object for every stage (pretraining
    and SFT's TRL callback use the balancing; GRPO also the aux loss and routing replay):

    - count the training forwards' routing (`enabled`, `set_mask`), then after each optimizer step move the
      router biases (`update_expert_bias`) and return the load metrics (`after_step`);
    - `aux_loss()`: V3's sequence-wise balance loss of the last forward times `aux_loss_coef` (0.0 when 0);
    - `record(key)` / `replay(key)`: routing replay R2 (`RoutingReplay`) with `routing_replay=True`, no-op
      contexts otherwise; `clear_replay()` once per step.

    `update_speed` is gamma (recipes call it `moe_bias_update_speed`); 0 keeps the metrics and moves nothing.
    Switch `enabled` off around evaluation and generation, so held-out tokens never steer the routers.
    `expert_balancer(model, ...)` picks this class or, for a dense model, `NoExperts` (same methods, no work).
    """

    needs_every_token = True  # the load counts and the aux loss must see every training token, zero-advantage too

    def __init__(self, model: nn.Module, update_speed: float, *, aux_loss_coef: float = 0.0,
                 routing_replay: bool = False):
        if update_speed < 0:
            raise ValueError(f"moe_bias_update_speed must be >= 0 (got {update_speed})")
        self.model = model
        self.update_speed = update_speed
        self.aux_loss_coef = aux_loss_coef
        self.tracker = ExpertLoadTracker(model, with_aux_loss=aux_loss_coef > 0)
        # replay's router hooks run before the tracker's (prepend), so the tracker counts the experts used
        self.routing = RoutingReplay(model) if routing_replay else None

    @property
    def enabled(self) -> bool:
        return self.tracker.enabled

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self.tracker.enabled = on

    def set_mask(self, mask: Tensor | None) -> None:
        """Count only the tokens where `mask` (B, T) is nonzero in the next forward (e.g. assistant tokens)."""
        self.tracker.set_mask(mask)

    def aux_loss(self) -> Tensor | float:
        """`aux_loss_coef` x the router aux loss of the last enabled forward, to add to the loss before backward."""
        return 0.0 if self.aux_loss_coef == 0 else self.tracker.aux_loss(self.aux_loss_coef)

    def after_step(self) -> dict[str, float]:
        """All-reduce this step's counts (every process applies the same update), update, reset."""
        self.tracker.all_reduce()
        metrics = update_expert_bias(self.model, self.tracker.counts(), self.update_speed)
        self.tracker.reset()
        return metrics

    def record(self, key: Hashable) -> AbstractContextManager[None]:
        """Old-policy forward: keep each router's expert choice under `key` (with routing replay on)."""
        return nullcontext() if self.routing is None else self.routing.record(key)

    def replay(self, key: Hashable) -> AbstractContextManager[None]:
        """New-policy forward (and backward): route as recorded under `key` (with routing replay on)."""
        return nullcontext() if self.routing is None else self.routing.replay(key)

    def clear_replay(self) -> None:
        if self.routing is not None:
            self.routing.clear()

    def remove(self) -> None:
        self.tracker.remove()
        if self.routing is not None:
            self.routing.remove()


class NoExperts:
    """`ExpertBalancer`'s methods for a dense model: nothing is routed, so nothing to count, balance or replay."""

    needs_every_token = False
    enabled = False  # assignable like ExpertBalancer.enabled; nothing reads it

    def set_mask(self, mask: Tensor | None) -> None:
        pass

    def aux_loss(self) -> float:
        return 0.0

    def after_step(self) -> dict[str, float]:
        return {}

    def record(self, key: Hashable) -> AbstractContextManager[None]:
        return nullcontext()

    def replay(self, key: Hashable) -> AbstractContextManager[None]:
        return nullcontext()

    def clear_replay(self) -> None:
        pass

    def remove(self) -> None:
        pass


def expert_balancer(model: nn.Module, update_speed: float, *, aux_loss_coef: float = 0.0,
                    routing_replay: bool = False) -> ExpertBalancer | NoExperts:
    """The MoE hooks a training loop holds, chosen once at setup: `ExpertBalancer` for a model with routers,
    `NoExperts` for a dense one, so the loop calls the same methods either way."""
    if not is_moe(model):
        return NoExperts()
    return ExpertBalancer(model, update_speed, aux_loss_coef=aux_loss_coef, routing_replay=routing_replay)


def _index_dtype(n_experts: int) -> torch.dtype:
    """Smallest integer dtype holding an expert id: replay keeps one (B*T, K) tensor per layer per micro-batch."""
    if n_experts <= 256:
        return torch.uint8
    return torch.int16 if n_experts <= 2**15 else torch.int32


def _replayed_weights(router: nn.Module, router_logits: Tensor, topk_indices: Tensor) -> Tensor:
    """Gate weights of the given experts from the current router scores, exactly as DeepseekV3TopkRouter
    computes them for its own choice (sigmoid, optional renormalisation, routed scaling)."""
    weights = router_logits.sigmoid().gather(1, topk_indices)  # (N, K)
    if router.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * router.routed_scaling_factor


class RoutingReplay:
    """Record the old policy's expert choices per micro-batch and force them on the new policy's forward (R2).

    `with rr.record(key): old-policy forward` stores each router's top-k indices under `key`;
    `with rr.replay(key): new-policy forward (+ backward)` makes every router return the recorded indices, with
    gate weights recomputed from the current router scores for those experts (so the router keeps its gradient).
    A forward may run several times inside `replay` (gradient-checkpointing recompute): each run replays the same
    record, so keep `loss.backward()` inside the `replay` block when checkpointing is on.
    Records live on the router's device in the smallest integer dtype; `clear()` drops them (once per step).
    """

    def __init__(self, model: nn.Module):
        self.routers = find_routers(model)
        _require_v3_routers(self.routers, "routing replay")
        self._records: dict[Hashable, dict[int, Tensor]] = {}
        self._mode: str | None = None
        self._key: Hashable | None = None
        # prepend: any other hook (e.g. ExpertLoadTracker) must see the replayed experts, i.e. the ones used.
        self._handles = [
            router.register_forward_hook(partial(self._on_router, layer), prepend=True)
            for layer, router in self.routers.items()
        ]

    @contextmanager
    def record(self, key: Hashable) -> Iterator[None]:
        self._records[key] = {}
        with self._active("record", key):
            yield

    @contextmanager
    def replay(self, key: Hashable) -> Iterator[None]:
        if key not in self._records:
            raise KeyError(
                f"no routing recorded for {key!r}; run the old-policy forward inside rr.record({key!r})"
            )
        with self._active("replay", key):
            yield

    def clear(self) -> None:
        self._records.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @contextmanager
    def _active(self, mode: str, key: Hashable) -> Iterator[None]:
        if self._mode is not None:
            raise RuntimeError(
                f"routing replay is already in {self._mode}({self._key!r}); blocks cannot nest"
            )
        self._mode, self._key = mode, key
        try:
            yield
        finally:
            self._mode, self._key = None, None

    def _on_router(self, layer: int, module: nn.Module, args: tuple, output: tuple) -> tuple | None:
        if self._mode is None:
            return None
        router_logits, _, topk_indices = output  # (N, E), (N, K), (N, K)
        if self._mode == "record":
            self._records[self._key][layer] = topk_indices.detach().to(_index_dtype(router_logits.shape[-1]))
            return None
        recorded = self._records[self._key].get(layer)
        if recorded is None:
            raise RuntimeError(f"layer {layer} was not run while recording {self._key!r}")
        if recorded.shape != topk_indices.shape:
            raise RuntimeError(
                f"layer {layer}: recorded routing for {self._key!r} covers {tuple(recorded.shape)} (tokens, k) but "
                f"this forward has {tuple(topk_indices.shape)}; replay needs the same micro-batch as the record"
            )
        indices = recorded.to(device=topk_indices.device, dtype=topk_indices.dtype)
        return router_logits, _replayed_weights(module, router_logits, indices), indices
