"""The generation interface shared by RL rollouts, distillation's teacher sampling and evaluation.

An engine turns prompt token ids into completions with the per-token log-probs of the tokens it drew:

    engine = build_engine(EngineSpec("hf"), model, tokenizer)
    rollout = engine.generate(prompt_ids, SamplingSettings(256, temperature=0.7, n=8, seed=0))

`hf` (r1kit/generation/hf.py) samples on the caller's own model object; `vllm`
(r1kit/generation/vllm.py) runs vLLM in this process (colocated) or talks to a `vllm serve` server,
and follows the trainer's weights through `sync_weights`. An engine reports `exact_logprobs`: True
when its log-probs come from the very weights and numerics the trainer uses (`hf`), so with one update
per batch the trainer can take old = current log-probs (ratio 1); vLLM sets it False and the trainer
corrects the mismatch with truncated importance sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch


@dataclass
class Rollout:
    """N completions; lists are aligned, one entry per completion."""

    completion_ids: list[list[int]]  # sampled tokens, up to and including EOS (or the stop string's last token)
    logprobs: list[list[float]]  # engine log-probs of those tokens (at the sampling temperature)
    truncated: list[bool]  # hit max_new_tokens without EOS or a stop string


@dataclass(frozen=True)
class SamplingSettings:
    """What to sample. `generate(prompts, s)` returns len(prompts) * n completions, each prompt's n together."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k
    greedy: bool = False
    n: int = 1
    stop: tuple[str, ...] = ()  # a completion ends with the token that completes one of these strings
    seed: int | None = None  # None: the process's torch RNG (hf) or vLLM's own
    ignore_eos: bool = False  # fixed-length rows (benchmarks)


class RolloutEngine(Protocol):
    exact_logprobs: bool

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Rollout:
        """`sampling.n` completions per prompt (or repeat a prompt G times for a group)."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from `model`'s current weights (called after optimizer steps)."""


@dataclass(frozen=True)
class EngineSpec:
    """Which engine to build and, for vLLM, how (a stage config's engine keys, collected)."""

    name: Literal["hf", "vllm"] = "hf"
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_url: str = "http://localhost:8000"
    vllm_sync: Literal["auto", "load_weights", "restart"] = "auto"
    vllm_sync_every: int = 1
    vllm_dtype: str = "auto"
    vllm_gpu_memory_utilization: float | None = None
    vllm_enable_sleep_mode: bool = False
    vllm_max_model_len: int | None = None


def build_engine(spec: EngineSpec | str, model: torch.nn.Module, tokenizer,
                 all_done: Callable[[bool], bool] | None = None) -> RolloutEngine:
    """The engine a recipe names. `model` is the trainer's (unwrapped) model: `hf` samples on it, `vllm`
    starts from its weights and follows them through `sync_weights`."""
    spec = EngineSpec(spec) if isinstance(spec, str) else spec
    if spec.name == "hf":
        from r1kit.generation.hf import HFEngine

        return HFEngine(model, tokenizer, all_done)
    if spec.name == "vllm":
        from r1kit.errors import UserError
        from r1kit.generation.vllm import VLLMEngine

        if all_done is not None:  # weights sharded during the rollout: ZeRO-3 (r1kit's FSDP2 gathers them)
            raise UserError("engine: vllm does not take ZeRO-3 sharded policies yet (each weight push would need "
                            "the weights gathered from every process); use DDP, FSDP2 (accelerate launch --use_fsdp "
                            "--fsdp_version 2), ZeRO-2, or engine: hf.")

        return VLLMEngine.for_model(model, tokenizer, spec)
    from r1kit.errors import UserError

    raise UserError(f"engine '{spec.name}' is unknown; use engine: hf or engine: vllm.")


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), each (N, max_len), padded on the left so generation continues every row at the end."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def stop_end(ids: list[int], decode: Callable[[list[int]], str], stop: tuple[str, ...]) -> int | None:
    """Length of the shortest prefix of `ids` whose text contains a stop string, or None.

    Tokens after the stop do not change the ones before it, so cutting there equals stopping there.
    >>> stop_end([1, 2, 3, 4], lambda t: "".join("ab\\nc"[i - 1] for i in t), ("\\n",))
    3
    >>> stop_end([1, 2], lambda t: "xy"[:len(t)], ("z",)) is None
    True
    """
    if not stop or not any(s in decode(ids) for s in stop):
        return None
    lo, hi = 1, len(ids)  # the text of a longer prefix contains a shorter one's: binary search
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in decode(ids[:mid]) for s in stop):
            hi = mid
        else:
            lo = mid + 1
    return lo
