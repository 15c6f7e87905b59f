"""Tiny in-memory models for unit tests (r1kit.tiny builds the saved, tokenizer-backed ones)."""

from __future__ import annotations

import torch

N_EXPERTS, TOP_K = 8, 2


def tiny_moe(seed: int = 0) -> torch.nn.Module:
    """A 3-layer DeepseekV3 (dense first layer, 1 shared + 8 routed experts, top-2, noaux_tc/sigmoid)."""
    # transformers is imported here, not at module level, so spawned worker processes start fast.
    from transformers import AutoModelForCausalLM, DeepseekV3Config

    torch.manual_seed(seed)
    config = DeepseekV3Config(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        first_k_dense_replace=1,
        n_routed_experts=N_EXPERTS,
        num_experts_per_tok=TOP_K,
        n_shared_experts=1,
        kv_lora_rank=512,
        q_lora_rank=None,
        qk_rope_head_dim=64,
        qk_nope_head_dim=32,
        v_head_dim=32,
        topk_method="noaux_tc",
        scoring_func="sigmoid",
        n_group=1,
        topk_group=1,
        max_position_embeddings=128,
    )
    return AutoModelForCausalLM.from_config(config).float()


# ------------------------------------------------------------- engine helpers (rl/mla.py, rl/lean.py tests)


class Tok:
    """The two ids the `hf` engine reads from a tokenizer."""

    pad_token_id, eos_token_id = 0, 1


def prompts(seed: int = 0, distinct: int = 6, group: int = 3) -> list[list[int]]:
    """Different lengths (left padding) and repeated prompts (prefill once, copy cache rows)."""
    g = torch.Generator().manual_seed(seed)
    base = [torch.randint(5, 250, (int(n),), generator=g).tolist() for n in torch.randint(2, 20, (distinct,), generator=g)]
    return [p for p in base for _ in range(group)]


def sample(model, ps, sampling, eos: int = 1, seed: int = 0, **engine_kw):
    """`HFEngine(model, **engine_kw).generate` with `eos` as the end token, seeded."""
    from r1kit.generation import HFEngine

    eng = HFEngine(model, Tok(), **engine_kw)
    eng.eos_id = eos
    torch.manual_seed(seed)
    return eng.generate(ps, sampling)


def frequent_token(model, ps, sampling, **engine_kw) -> int:
    """A token the model emits often, used as EOS so rows finish at different steps (rows get dropped)."""
    out = sample(model, ps, sampling, eos=-1, **engine_kw)
    return torch.tensor([t for c in out.completion_ids for t in c[2:]]).mode().values.item()


def teacher_forced(model, ps: list[list[int]], completions: list[list[int]]) -> list[list[float]]:
    """Log-probs (T = 1) of each completion's tokens under `model`, one forward per row."""
    out = []
    with torch.no_grad():
        for p, c in zip(ps, completions):
            logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
            out.append([logp[len(p) + i - 1, t].item() for i, t in enumerate(c)])
    return out


def max_gap(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
