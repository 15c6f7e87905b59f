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
