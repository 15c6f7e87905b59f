"""Rollout engines: turn prompt token ids into sampled completions with per-token log-probs.

The trainer only sees the `RolloutEngine` protocol, so a vLLM engine (its own issue) plugs in by
adding a class and one line in `ENGINES`. An engine reports `exact_logprobs`: True when its
log-probs come from the very weights and numerics the trainer uses (the `hf` engine), so with
one update per batch the trainer can take old = current log-probs (ratio 1) instead of an extra
forward pass; a vLLM engine sets it False and the trainer corrects the mismatch with truncated
importance sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Rollout:
    """N completions; lists are aligned, one entry per completion."""

    completion_ids: list[list[int]]  # sampled tokens, up to and including EOS
    logprobs: list[list[float]]  # engine log-probs of those tokens (at the sampling temperature)
    truncated: list[bool]  # hit max_new_tokens without EOS


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False


class RolloutEngine(Protocol):
    exact_logprobs: bool

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Rollout:
        """One completion per prompt (repeat a prompt G times for a group)."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from the policy's current weights."""


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), each (N, max_len), padded on the left so generation continues every row at the end."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


class HFEngine:
    """Batched `model.generate` with a KV cache on the training model itself (no weight copy)."""

    exact_logprobs = True

    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int | None = None):
        self.model = model
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        self.batch_size = batch_size

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.model = model  # same object as the trainer's: nothing to copy

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Rollout:
        step = self.batch_size or len(prompts)
        parts = [self._generate_chunk(prompts[i:i + step], sampling) for i in range(0, len(prompts), step)]
        return Rollout(*[sum((getattr(p, f) for p in parts), []) for f in ("completion_ids", "logprobs", "truncated")])

    def _generate_chunk(self, prompts: list[list[int]], sampling: SamplingSettings) -> Rollout:
        ids, mask = left_pad(prompts, self.pad_id)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling; also turns gradient checkpointing off
        out = self.model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=sampling.max_new_tokens,
            do_sample=not sampling.greedy, temperature=sampling.temperature if not sampling.greedy else None,
            top_p=sampling.top_p if not sampling.greedy else None, top_k=sampling.top_k or None,
            pad_token_id=self.pad_id, eos_token_id=self.eos_id, return_dict_in_generate=True,
            output_logits=True, use_cache=True,
        )
        self.model.train(was_training)
        new = out.sequences[:, ids.shape[1]:]  # (N, L)
        # Raw logits / T: the same distribution the trainer scores, before top-p/top-k truncation.
        logits = torch.stack(out.logits, dim=1).float() / sampling.temperature  # (N, L, V)
        logps = torch.log_softmax(logits, -1).gather(-1, new.unsqueeze(-1)).squeeze(-1)  # (N, L)
        return self._trim(new, logps, sampling.max_new_tokens)

    def _trim(self, new: torch.Tensor, logps: torch.Tensor, limit: int) -> Rollout:
        """Cut each row after its first EOS; a row without EOS within `limit` tokens is truncated."""
        ids_out, lp_out, trunc = [], [], []
        for row, lp in zip(new.tolist(), logps.tolist()):
            end = row.index(self.eos_id) + 1 if self.eos_id in row else len(row)
            ids_out.append(row[:end])
            lp_out.append(lp[:end])
            trunc.append(self.eos_id not in row[:end] and end >= limit)
        return Rollout(ids_out, lp_out, trunc)


def build_engine(name: str, model: torch.nn.Module, tokenizer) -> RolloutEngine:
    """The engine named by the recipe's `engine` key."""
    if name == "hf":
        return HFEngine(model, tokenizer)
    from r1kit.errors import UserError

    raise UserError(f"engine '{name}' is not available in this version of r1kit; use engine: hf.")
