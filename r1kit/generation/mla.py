"""Absorbed multi-head latent attention (MLA) for the `hf` engine's KV-cached sampling.

transformers caches a DeepSeek-V3 layer's compressed latent (`kv_lora_rank` + `qk_rope_head_dim` numbers
per token) and, at every decode step, re-expands the *whole* cache through `kv_b_proj` into per-head keys
and values: O(L * r * H * (d_nope + d_v)) per layer and step, which made up most of a tiny DeepseekV3's
decode time here (46 ms of a 128-row step). DeepSeek's own inference folds `kv_b_proj` into the query and
the output instead ("weight absorption"): with W_UK, W_UV the key and value halves of `kv_b_proj`,

    q_h . k_h,j = (W_UK,h^T q_nope,h) . c_j + q_rope,h . k_rope,j      (c_j: the cached latent)
    sum_j p_hj v_h,j = W_UV,h (sum_j p_hj c_j)

so attention runs as one-key-head attention over the latents themselves and nothing is expanded. The
cache is preallocated (no per-step concatenation) and rows are dropped as they finish, like the engine's
DynamicCache. Only sampling uses this path; training forwards stay transformers' own code. The result
equals transformers' attention up to float rounding (tests/test_mla.py compares log-probs and tokens).
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from r1kit.generation.kv import select_rows, visible_keys

_NEEDED = ("kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "o_proj", "qk_nope_head_dim",
           "qk_rope_head_dim", "v_head_dim", "kv_lora_rank", "num_heads", "scaling", "layer_idx")  # fmt: skip


# Attention classes whose forward this module reproduces exactly. Matching by attributes alone would also take
# MLA variants with extra parts (DeepSeek-V3.2's sparse indexer, other gates or scales) and compute them wrongly.
_SUPPORTED = {"DeepseekV3Attention"}


def mla_layers(model: nn.Module) -> list[nn.Module]:
    """The model's MLA attention modules when *every* attention layer is one this path computes exactly
    (DeepSeek-V3's, float32 weights, `kv_b_proj` plain or with plain LoRA), else []."""
    found = [m for m in model.modules() if all(hasattr(m, a) for a in _NEEDED)]
    if not found or any(type(m).__name__ not in _SUPPORTED for m in found):
        return []
    # In bf16 the absorbed form rounds differently from the trainer's expanded keys and values (log-prob gaps
    # of 0.1 and more on a sharp tiny model), which would break the engine's exact log-probs: float32 only.
    if any(p.dtype != torch.float32 for m in found for p in m.parameters()):
        return []
    if any(_rotary(m) is None or _kv_b_weight(m) is None for m in found):
        return []
    if len({m.layer_idx for m in found}) != len(found):
        return []
    return found


def _rotary(attn: nn.Module):
    """The model file's own rotary function for this layer (interleaved or not, as its config says)."""
    namespace = sys.modules[type(attn).__module__]
    if not hasattr(attn.config, "rope_interleave"):
        return None
    name = "apply_rotary_pos_emb_interleave" if attn.config.rope_interleave else "apply_rotary_pos_emb"
    return getattr(namespace, name, None)


def _kv_b_weight(attn: nn.Module) -> torch.Tensor | None:
    """`kv_b_proj`'s effective weight (H*(d_nope+d_v), r), plain LoRA deltas included; None when that weight
    alone does not describe the layer (bias, DoRA, LoRA bias, other adapter types)."""
    proj = attn.kv_b_proj
    if type(proj) is nn.Linear:
        return None if proj.bias is not None else proj.weight
    base = getattr(proj, "base_layer", None)  # a peft LoRA layer wrapping the Linear
    if type(base) is not nn.Linear or base.bias is not None or not hasattr(proj, "lora_A"):
        return None
    weight = base.weight
    if not getattr(proj, "merged", False) and not getattr(proj, "disable_adapters", False):
        for name in proj.active_adapters:
            if name not in proj.lora_A:
                continue
            if getattr(proj, "use_dora", {}).get(name) or getattr(proj, "lora_bias", {}).get(name):
                return None  # DoRA rescales by a magnitude, LoRA bias adds a bias: not a weight delta
            weight = weight + proj.get_delta_weight(name)
    return weight


class LatentCache:
    """Per layer, the latents [normalised c_kv | rotated k_rope] of every position so far: (B, max_len, r + d_rope).

    Call `begin` before each forward and `advance` after it.
    """

    def __init__(self, layers: list[nn.Module], batch: int, max_len: int, dtype: torch.dtype, device):
        width = layers[0].kv_lora_rank + layers[0].qk_rope_head_dim
        self.buffers = {m.layer_idx: torch.empty(batch, max_len, width, dtype=dtype, device=device) for m in layers}
        self.length = 0
        self.mask: torch.Tensor | None = None
        self._allowed: torch.Tensor | None = None

    def begin(self, mask: torch.Tensor) -> None:
        """Before a forward: `mask` (B, length + new tokens), 1 for real keys, 0 for left padding."""
        self.mask, self._allowed = mask, None

    def advance(self, n: int) -> None:
        self.length += n
        self._allowed = None

    def allowed(self, q_len: int) -> torch.Tensor:
        """(B, q, L) bool: which keys each new query may see; shared by every layer of this forward."""
        if self._allowed is None:
            self._allowed = visible_keys(self.mask, self.length, q_len)
        return self._allowed

    def batch_select_indices(self, index: torch.Tensor) -> None:
        """Keep (or repeat) these rows. Only the filled part moves; fewer rows compact in place."""
        for key, buf in self.buffers.items():
            self.buffers[key] = select_rows(buf, index, self.length, seq_dim=1)
        self._allowed = None


def _absorbed_forward(attn: nn.Module, cache: LatentCache, w_uk: torch.Tensor, w_uv: torch.Tensor):
    rotary = _rotary(attn)

    def forward(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None, **kwargs):
        b, q_len = hidden_states.shape[:-1]
        dn, dr, r = self.qk_nope_head_dim, self.qk_rope_head_dim, self.kv_lora_rank
        if getattr(self, "q_lora_rank", None) is None:
            q = self.q_proj(hidden_states)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(hidden_states)))
        q = q.view(b, q_len, self.num_heads, dn + dr).transpose(1, 2)  # (B, H, q, dn + dr)
        q_nope, q_rot = q.split([dn, dr], dim=-1)
        kv_nope, k_rot = self.kv_a_proj_with_mqa(hidden_states).split([r, dr], dim=-1)
        kv_nope = self.kv_a_layernorm(kv_nope)  # (B, q, r)
        cos, sin = position_embeddings
        q_rot, k_rot = rotary(q_rot, k_rot.view(b, 1, q_len, dr), cos, sin)

        start, end = cache.length, cache.length + q_len
        buf = cache.buffers[self.layer_idx]
        buf[:, start:end, :r] = kv_nope
        buf[:, start:end, r:] = k_rot.view(b, q_len, dr)
        latents = buf[:, :end]  # (B, L, r + dr): one key "head" shared by all query heads
        h, allowed = self.num_heads, cache.allowed(q_len)
        if q_len > 1:
            # Prefill: expanded keys and values through SDPA, whose kernels never build the (B, H, q, L)
            # score tensor the absorbed form would (gigabytes for long prompts on a large model).
            kv = self.kv_b_proj(latents[..., :r]).view(b, end, h, dn + self.v_head_dim).transpose(1, 2)
            k_nope, value = kv.split([dn, self.v_head_dim], dim=-1)
            key = torch.cat([k_nope, latents[:, None, :, r:].expand(b, h, end, dr)], dim=-1)
            out = F.scaled_dot_product_attention(torch.cat([q_nope, q_rot], dim=-1), key, value,
                                                 attn_mask=allowed[:, None], scale=self.scaling)
            return self.o_proj(out.transpose(1, 2).reshape(b, q_len, -1)), None

        # Decode (one query per row): absorbed. Plain bmm throughout; broadcasting matmuls over the
        # head dim were 100x slower on CPU here.
        q_lat = torch.bmm(q_nope.reshape(b, h, dn).transpose(0, 1), w_uk)  # (H, B, r)
        query = torch.cat([q_lat.transpose(0, 1), q_rot.reshape(b, h, dr)], dim=-1)  # (B, H, r + dr)
        scores = torch.bmm(query, latents.transpose(1, 2)).float() * self.scaling  # (B, H, L)
        probs = scores.masked_fill(~allowed, -torch.inf).softmax(-1).to(buf.dtype)  # allowed: (B, 1, L)
        out = torch.bmm(torch.bmm(probs, latents[..., :r]).transpose(0, 1), w_uv)  # (H, B, d_v)
        return self.o_proj(out.transpose(0, 1).reshape(b, 1, -1)), None

    return types.MethodType(forward, attn)


@contextlib.contextmanager
def absorbed_attention(layers: list[nn.Module], cache: LatentCache) -> Iterator[None]:
    """Run these attention modules on `cache` with absorbed weights; transformers' forward is back on exit.

    The absorbed weights are taken once here, so the weights must not change inside the block.
    """
    try:
        for attn in layers:
            w = _kv_b_weight(attn).view(attn.num_heads, attn.qk_nope_head_dim + attn.v_head_dim, attn.kv_lora_rank)
            w_uk = w[:, :attn.qk_nope_head_dim].contiguous()  # (H, d_nope, r): q_nope @ w_uk -> latent query
            w_uv = w[:, attn.qk_nope_head_dim:].transpose(1, 2).contiguous()  # (H, r, d_v): latent out -> values
            attn.forward = _absorbed_forward(attn, cache, w_uk, w_uv)
        yield
    finally:
        for attn in layers:
            attn.__dict__.pop("forward", None)
