"""The `hf` engine: KV-cached sampling on the training model itself, in one batch.

Exact: its log-probs come from the trainer's own weights and numerics (`exact_logprobs`). An FSDP2 policy
(`r1kit.modeling.fsdp`) is gathered whole for each `generate` call. Fast paths where they are exact (float32,
not sharded during the rollout, no autocast): absorbed MLA attention on a latent cache for
DeepSeek-V3-style models (r1kit/generation/mla.py), a lean forward on a preallocated KV cache for
Llama/Qwen2/Qwen3 (r1kit/generation/lean.py); anything else runs transformers' forward with its
DynamicCache.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable

import torch

from r1kit.generation.engine import Rollout, SamplingSettings, left_pad, stop_end
from r1kit.generation.lean import KVCache, lean_forward, lean_model
from r1kit.generation.mla import LatentCache, absorbed_attention, mla_layers
from r1kit.modeling.fsdp import gathered


class HFEngine:
    """KV-cached sampling on the training model itself (no weight copy), in one batch.

    A lean loop instead of `model.generate`: one prefill forward that keeps only the last position's
    logits, then one-token forwards on the model's own KV cache; the sampled token's log-prob is
    taken on the fly ((N,) per step, never an (N, L, V) stack of logits), and the loop stops as soon
    as every row has emitted EOS. `all_done` lets models sharded during the rollout (ZeRO-3) keep decoding until *every*
    process is done, since each forward is a collective there.
    """

    exact_logprobs = True

    def __init__(self, model: torch.nn.Module, tokenizer, all_done: Callable[[bool], bool] | None = None,
                 absorbed_mla: bool = True, lean: bool = True):
        self.model = model
        self.absorbed_mla = absorbed_mla  # False: transformers' attention even where `rl.mla` applies
        self.lean = lean  # False: transformers' forward even where `rl.lean` applies
        self.tokenizer = tokenizer  # decodes completions only when `stop` strings are set
        self.pad_id = tokenizer.pad_token_id
        self.eos_id = tokenizer.eos_token_id
        self.sharded = all_done is not None
        # transformers 5.x renames `past_key_values` to `cache` (the old name warns until 5.40); 4.x knows only the old
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.all_done = all_done or (lambda done: done)

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.model = model  # same object as the trainer's: nothing to copy

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Rollout:
        if empty := [i for i, p in enumerate(prompts) if not len(p)]:
            raise ValueError(f"prompts {empty[:5]} are empty: every prompt needs at least one token (e.g. BOS)")
        # inference_mode skips autograd's bookkeeping (~9% of a tiny model's decode step); weights sharded during
        # the rollout (ZeRO-3) gather parameters in every forward, which must stay ordinary tensors: no_grad there.
        # r1kit's FSDP2 gathers every weight once for the whole rollout instead, then decoding is local.
        with gathered(self.model), torch.no_grad() if self.sharded else torch.inference_mode():
            return self._generate(prompts, sampling)

    def _generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> Rollout:
        prompts = [p for p in prompts for _ in range(sampling.n)]
        # A group repeats its prompt G times: prefill each distinct prompt once, then copy its cache rows.
        distinct: dict[tuple[int, ...], int] = {}
        inverse = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
        ids, mask = left_pad([list(p) for p in distinct], self.pad_id)  # (U, P)
        device = next(self.model.parameters()).device
        ids, mask, inverse = ids.to(device), mask.to(device), torch.tensor(inverse, device=device)
        cache, attention = self._cache(len(distinct), ids.shape[1] + sampling.max_new_tokens, device)
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling; also turns gradient checkpointing off
        try:
            with attention:
                out_ids, out_logps = self._decode(ids, mask, inverse, cache, sampling)
        finally:
            self.model.train(was_training)
        return self._trim(out_ids, out_logps, sampling)

    def _cache(self, batch: int, max_len: int, device: torch.device):
        """The KV cache for one generate call, and the context its forwards run in.

        MLA models (DeepSeek-V3 style, float32) get a latent cache with absorbed attention (`rl.mla`), standard
        dense decoders (Llama, Qwen2/3, float32) the lean forward on a preallocated cache (`rl.lean`); weights
        sharded during the rollout (ZeRO-3) are only whole inside their layer's forward, and autocast would round
        differently from the trainer, so those keep transformers' path.
        """
        from transformers import DynamicCache

        # accelerate's mixed precision wraps forward in autocast (it keeps `_original_forward`): bf16 math there
        autocast = torch.is_autocast_enabled(device.type) or hasattr(self.model, "_original_forward")
        plain = not (self.sharded or autocast)
        layers = mla_layers(self.model) if self.absorbed_mla and plain else []
        if layers:
            weight = layers[0].kv_a_proj_with_mqa.weight
            cache = LatentCache(layers, batch, max_len, weight.dtype, weight.device)
            return cache, absorbed_attention(layers, cache)
        lm = lean_model(self.model) if self.lean and plain else None
        if lm is not None:
            return KVCache(lm, batch, max_len, device), contextlib.nullcontext()
        return DynamicCache(config=self.model.config), contextlib.nullcontext()

    def _decode(self, ids, mask, inverse, cache, sampling: SamplingSettings) -> tuple[torch.Tensor, torch.Tensor]:
        device = ids.device
        n = len(inverse)
        # Positions count from each row's first real token, as the trainer's forward does.
        pos = (mask.cumsum(1) - 1).clamp(min=0)  # (U, P)
        logits = self._forward(ids, mask, pos, cache)[inverse]  # (A, V), A = rows still decoding
        if ids.shape[0] < n:
            cache.batch_select_indices(inverse)
        mask, pos = mask[inverse], pos[inverse]  # (N, P)
        rows = torch.arange(n, device=device)  # (A,) batch index of each decoding row
        eos = -1 if sampling.ignore_eos else self.eos_id
        gen = None if sampling.seed is None else torch.Generator(device).manual_seed(sampling.seed)
        done = torch.zeros(n, dtype=torch.bool, device=device)  # (A,)
        out_ids = torch.full((n, sampling.max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        out_logps = torch.zeros(out_ids.shape, device=device)  # (N, L)
        for t in range(sampling.max_new_tokens):
            tok, lp = sample_token(logits, sampling, gen)  # (A,), (A,)
            tok = tok.masked_fill(done, self.pad_id)
            out_ids[rows, t], out_logps[rows, t] = tok, lp
            done |= tok == eos
            if t == sampling.max_new_tokens - 1 or self.all_done(bool(done.all())):
                break
            if done.any():  # drop finished rows from the batch and the cache: later steps pay for live rows only
                keep = (~done).nonzero().squeeze(1)
                keep = keep if keep.numel() else keep.new_zeros(1)  # sharded: one row keeps joining the forwards
                cache.batch_select_indices(keep)
                rows, done, tok, mask, pos = rows[keep], done[keep], tok[keep], mask[keep], pos[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            pos = pos[:, -1:] + 1  # (A, 1)
            logits = self._forward(tok.unsqueeze(1), mask, pos, cache)
        return out_ids[:, :t + 1], out_logps[:, :t + 1]

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache) -> torch.Tensor:
        """(N, V) logits of the last position; the cache grows by ids.shape[1] positions."""
        if isinstance(cache, KVCache):
            cache.begin(mask)
            logits = lean_forward(cache.lm, ids, pos, cache)
            cache.advance(ids.shape[1])
            return logits.float()
        if isinstance(cache, LatentCache):
            cache.begin(mask)  # the absorbed layers mask keys themselves
            out = self.model(input_ids=ids, position_ids=pos, use_cache=False, logits_to_keep=1)
            cache.advance(ids.shape[1])
        else:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                             logits_to_keep=1, **{self._cache_kwarg: cache})
        return out.logits[:, -1].float()

    def _trim(self, new: torch.Tensor, logps: torch.Tensor, s: SamplingSettings) -> Rollout:
        """Cut each row after its first EOS or stop string; a row with neither within `max_new_tokens` is
        truncated."""
        eos = -1 if s.ignore_eos else self.eos_id
        ids_out, lp_out, trunc = [], [], []
        for row, lp in zip(new.tolist(), logps.tolist()):
            end = row.index(eos) + 1 if eos in row else len(row)
            stop = stop_end(row[:end], self.tokenizer.decode, s.stop) if s.stop else None
            ids_out.append(row[:stop or end])
            lp_out.append(lp[:stop or end])
            trunc.append(stop is None and eos not in row[:end] and end >= s.max_new_tokens)
        return Rollout(ids_out, lp_out, trunc)


def sample_token(logits: torch.Tensor, s: SamplingSettings,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token (N,) and its log-prob (N,) under logits / T, the distribution the trainer scores
    (before top-p/top-k truncation, which only restricts which tokens can be drawn).

    >>> tok, lp = sample_token(torch.tensor([[0.0, 2.0]]), SamplingSettings(1, greedy=True))
    >>> tok.tolist(), round(lp.item(), 4)
    ([1], -0.1269)
    """
    logp = torch.log_softmax(logits / s.temperature, -1)  # (N, V)
    if s.greedy:
        tok = logp.argmax(-1)
    else:
        # Inverse CDF: one uniform per row, u in (0, 1], and the first token whose cumulative mass reaches
        # it (a zero-probability token never does). The same distribution as torch.multinomial, which
        # costs ~4x more per decode step on CPU here; float64 so tokens below float32's resolution near
        # 1 (~6e-8) keep their probability in a 150k vocabulary.
        cdf = torch.exp(_truncate(logp, s).double()).cumsum(-1)  # (N, V)
        total = cdf[:, -1:]
        if not bool(torch.isfinite(total).all()):
            raise RuntimeError("non-finite logits while sampling (the policy produced NaN/inf)")
        u = (1.0 - torch.rand(cdf.shape[0], 1, device=cdf.device, dtype=torch.float64, generator=generator)) * total
        tok = torch.searchsorted(cdf, u).squeeze(1).clamp(max=cdf.shape[1] - 1)
    return tok, logp.gather(-1, tok.unsqueeze(1)).squeeze(1)


def _truncate(logp: torch.Tensor, s: SamplingSettings) -> torch.Tensor:
    """Top-k, then top-p (nucleus): tokens outside get -inf; the most likely token always stays."""
    if s.top_k and s.top_k < logp.shape[-1]:
        kth = logp.topk(s.top_k, -1).values[:, -1:]
        logp = logp.masked_fill(logp < kth, -torch.inf)
    if s.top_p < 1.0:
        sorted_lp, order = logp.sort(-1, descending=True)
        before = torch.exp(sorted_lp).cumsum(-1) - torch.exp(sorted_lp)  # mass of strictly likelier tokens
        drop = torch.zeros_like(logp, dtype=torch.bool).scatter(-1, order, before >= s.top_p)
        logp = logp.masked_fill(drop, -torch.inf)
    return logp
