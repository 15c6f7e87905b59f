"""A lean decode forward for standard dense decoders (Llama, Qwen2, Qwen3) in the `hf` engine.

A one-token forward of a small model through transformers is mostly Python: per layer the module
calls, the deprecation and output-capturing wrappers, the cache's `torch.cat` of every key and
value, and per forward a causal mask and the rotary table (profiled on build_tiny's 3-layer
student: 128 rows x 40 tokens, `torch.cat` alone ~10% of sampling). This path runs the same
computation with the model's own modules (so LoRA adapters on any projection apply as usual) on a
preallocated key/value cache written in place, one precomputed rotary table, and one key mask per
forward shared by every layer. Only sampling uses it; training forwards stay transformers' code.
The result equals transformers' forward up to float rounding (tests/test_lean.py compares tokens
and log-probs, LoRA included).

Taken only where it is exact: the causal-LM classes below, float32 weights (as for absorbed MLA,
bf16 rounding would break the engine's exact log-probs), RMSNorms of the model's own class, full
attention in every layer (no sliding window), a rotary type that does not depend on the sequence
length. Anything else keeps transformers' path.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from r1kit.generation.kv import select_rows, visible_keys

# causal LM class -> (decoder layer, attention, RMSNorm) class names this module reproduces exactly
_SUPPORTED = {
    "LlamaForCausalLM": ("LlamaDecoderLayer", "LlamaAttention", "LlamaRMSNorm"),
    "Qwen2ForCausalLM": ("Qwen2DecoderLayer", "Qwen2Attention", "Qwen2RMSNorm"),
    "Qwen3ForCausalLM": ("Qwen3DecoderLayer", "Qwen3Attention", "Qwen3RMSNorm"),
}
_STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # dynamic/longrope rescale with the length: excluded


# Fusing q/k/v and gate/up copies those weights once per generate call: worth it where per-op overhead
# dominates (small models), not worth a transient copy of most of a large model's weights.
_FUSE_MAX_BYTES = 1 << 30


def lean_model(model: nn.Module) -> nn.Module | None:
    """The causal LM inside `model` (peft tuners unwrapped) when this path computes it exactly, else None."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and peft_config.is_prompt_learning:
        return None  # prefix / prompt tuning add virtual tokens in PeftModel.forward, which this path skips
    if _has_hooks(model):
        return None  # hooks on the modules this path does not call would silently not run
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = _SUPPORTED.get(type(lm).__name__)
    inner = getattr(lm, "model", None)
    if names is None or inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return None
    layer_cls, attn_cls, norm_cls = names
    if getattr(inner.rotary_emb, "rope_type", None) not in _STATIC_ROPE:
        return None
    if any(p.dtype != torch.float32 for p in lm.parameters()):
        return None
    for layer in decoder_layers(lm):
        attn = layer.self_attn
        norms = [layer.input_layernorm, layer.post_attention_layernorm]
        norms += [attn.q_norm, attn.k_norm] if hasattr(attn, "q_norm") else []
        if (type(layer).__name__ != layer_cls or type(attn).__name__ != attn_cls
                or any(type(n).__name__ != norm_cls for n in norms)
                or getattr(attn, "sliding_window", None) is not None
                or (hasattr(attn, "q_norm") and attn.q_norm.variance_epsilon != attn.k_norm.variance_epsilon)):
            return None
    if type(inner.norm).__name__ != norm_cls or not _rotate_half_is_the_models(lm):
        return None
    return lm


def decoder_layers(lm: nn.Module) -> list[nn.Module]:
    """The layers transformers' forward runs (it slices to `num_hidden_layers`)."""
    return list(lm.model.layers[: lm.config.num_hidden_layers])


def _has_hooks(model: nn.Module) -> bool:
    from torch.nn.modules import module as torch_module

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "_hf_hook") for m in model.modules())


def _rms(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """transformers' RMSNorm in float32 (w * x / sqrt(mean(x^2) + eps)) as torch's fused kernel, no module call."""
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)


class KVCache:
    """Per layer a preallocated key and value buffer (B, H_kv, max_len, D), filled in place.

    Same interface as `rl.mla.LatentCache`: `begin(mask)` before a forward, `advance(n)` after it,
    `batch_select_indices` to drop or repeat rows.
    """

    def __init__(self, lm: nn.Module, batch: int, max_len: int, device):
        self.lm = lm  # the causal LM `lean_forward` runs on this cache
        layers = decoder_layers(lm)
        attn = layers[0].self_attn
        heads = lm.config.num_key_value_heads
        shape = (batch, heads, max_len, attn.head_dim)
        self.keys = [torch.empty(shape, device=device) for _ in layers]
        self.values = [torch.empty(shape, device=device) for _ in layers]
        # cos/sin of every position once (B=1): the same elementwise values the model computes per forward
        positions = torch.arange(max_len, device=device)[None]
        cos, sin = lm.model.rotary_emb(self.keys[0], positions)
        self.cos, self.sin = cos[0], sin[0]  # (max_len, D)
        fuse = sum(p.numel() * p.element_size() for p in lm.parameters()) <= _FUSE_MAX_BYTES
        self.layers = [_Layer(layer, fuse) for layer in layers]  # weights fused once per generate call
        self.length = 0
        self.mask: torch.Tensor | None = None

    def begin(self, mask: torch.Tensor) -> None:
        """`mask` (B, length + new tokens): 1 for real keys, 0 for left padding."""
        self.mask = mask

    def advance(self, n: int) -> None:
        self.length += n

    def allowed(self, q_len: int) -> torch.Tensor:
        """(B, 1, q, L) bool: which keys each new query may see (causal, no padding keys)."""
        return visible_keys(self.mask, self.length, q_len)[:, None]

    def batch_select_indices(self, index: torch.Tensor) -> None:
        """Keep (or repeat) these rows; only the filled part is copied."""
        for bufs in (self.keys, self.values):
            bufs[:] = [select_rows(buf, index, self.length, seq_dim=2) for buf in bufs]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _plain(*modules: nn.Module) -> bool:
    return all(type(m) is nn.Linear for m in modules)


class _Layer:
    """One decoder layer's sampling-time weights: q/k/v and gate/up fused into one matmul each where the
    projections are plain `nn.Linear` (adapters keep their own module calls), Qwen3's q/k norm weights
    stacked per head so queries and keys are normalised and rotated together."""

    def __init__(self, layer: nn.Module, fuse: bool):
        attn, mlp = layer.self_attn, layer.mlp
        self.layer, self.attn, self.mlp = layer, attn, mlp
        self.heads = attn.q_proj.out_features // attn.head_dim
        self.kv_heads = attn.k_proj.out_features // attn.head_dim
        self.qkv_weight = self.qkv_bias = None
        if fuse and _plain(attn.q_proj, attn.k_proj, attn.v_proj):
            projs = (attn.q_proj, attn.k_proj, attn.v_proj)
            self.qkv_weight = torch.cat([p.weight for p in projs])
            if attn.q_proj.bias is not None:
                self.qkv_bias = torch.cat([p.bias for p in projs])
        self.qk_norm = None
        if hasattr(attn, "q_norm"):
            self.qk_norm = torch.cat([attn.q_norm.weight.expand(self.heads, -1),
                                      attn.k_norm.weight.expand(self.kv_heads, -1)])  # (H + H_kv, D)
        self.gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]) if fuse and _plain(
            mlp.gate_proj, mlp.up_proj) and mlp.gate_proj.bias is None and mlp.up_proj.bias is None else None

    def qkv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, q, H + 2 H_kv, D): query heads, key heads, value heads."""
        a = self.attn
        if self.qkv_weight is not None:
            out = F.linear(x, self.qkv_weight, self.qkv_bias)
        else:
            out = torch.cat([a.q_proj(x), a.k_proj(x), a.v_proj(x)], -1)
        return out.view(*x.shape[:-1], -1, a.head_dim)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mlp
        if self.gate_up is None:
            return m(x)
        gate, up = F.linear(x, self.gate_up).chunk(2, -1)
        return m.down_proj(m.act_fn(gate) * up)


def lean_forward(lm: nn.Module, ids: torch.Tensor, pos: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """(B, V) logits of the last position for `ids` (B, q) at positions `pos` (B, q); fills the cache."""
    inner = lm.model
    b, q_len = ids.shape
    start, end = cache.length, cache.length + q_len
    cos, sin = cache.cos[pos][:, None], cache.sin[pos][:, None]  # (B, 1, q, D)
    allowed = cache.allowed(q_len)
    h = inner.embed_tokens(ids)
    for i, lay in enumerate(cache.layers):
        attn = lay.attn
        qkv = lay.qkv(_rms(lay.layer.input_layernorm, h))  # (B, q, H + 2 H_kv, D)
        qk, value = qkv[:, :, :lay.heads + lay.kv_heads], qkv[:, :, lay.heads + lay.kv_heads:]
        if lay.qk_norm is not None:  # Qwen3: RMSNorm over each head's dims, queries and keys at once
            qk = F.rms_norm(qk, qk.shape[-1:], None, attn.q_norm.variance_epsilon) * lay.qk_norm
        qk = qk.transpose(1, 2)  # (B, H + H_kv, q, D)
        qk = qk * cos + _rotate_half(qk) * sin
        query = qk[:, :lay.heads]
        cache.keys[i][:, :, start:end] = qk[:, lay.heads:]
        cache.values[i][:, :, start:end] = value.transpose(1, 2)
        keys, values = cache.keys[i][:, :, :end], cache.values[i][:, :, :end]
        if q_len == 1:
            out = _decode_attention(query, keys, values, allowed, attn.scaling)
        else:
            out = F.scaled_dot_product_attention(query, keys, values, attn_mask=allowed, scale=attn.scaling,
                                                 enable_gqa=lay.heads != lay.kv_heads)
        h = h + attn.o_proj(out.transpose(1, 2).reshape(b, q_len, -1))
        h = h + lay.feed_forward(_rms(lay.layer.post_attention_layernorm, h))
    return lm.lm_head(_rms(inner.norm, h[:, -1]))


def _decode_attention(query, keys, values, allowed, scale: float) -> torch.Tensor:
    """One query per row: (B, H, 1, D) over (B, H_kv, L, D) keys, the query heads of a key head batched
    together. Plain bmm + softmax: 20-35% faster than SDPA's masked CPU kernel for this shape here."""
    b, h, _, d = query.shape
    kv_heads, length = keys.shape[1], keys.shape[2]
    q = query.reshape(b * kv_heads, h // kv_heads, d)  # a key head's query heads are consecutive
    scores = torch.bmm(q, keys.reshape(b * kv_heads, length, d).transpose(1, 2)) * scale  # (B*Hkv, g, L)
    probs = scores.view(b, kv_heads, -1, length).masked_fill(~allowed, -torch.inf).softmax(-1)
    out = torch.bmm(probs.view(b * kv_heads, -1, length), values.reshape(b * kv_heads, length, d))
    return out.view(b, h, 1, d)


def _rotate_half_is_the_models(lm: nn.Module) -> bool:
    """The model file's `rotate_half` is the one used here (guards against a future variant)."""
    module = sys.modules[type(lm).__module__]
    fn = getattr(module, "rotate_half", None)
    if fn is None:
        return False
    x = torch.arange(8.0).view(1, 8)
    return torch.equal(fn(x), _rotate_half(x))
