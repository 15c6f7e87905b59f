"""r1kit/modeling/lora.py: LoRA on a tiny DeepseekV3 MoE (dense layer 0, shared + routed experts) and a tiny dense Llama."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_moe
from transformers import AutoModelForCausalLM, LlamaConfig

from r1kit.errors import UserError
from r1kit.modeling.lora import (
    apply_lora,
    load_adapter,
    lora_trainable_report,
    merge_and_save,
    merged_state_dict,
    resolve_target_modules,
    save_adapter,
)
from r1kit.modeling.moe import find_routers, update_expert_bias


pytestmark = pytest.mark.usefixtures("few_threads")


def tiny_llama(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return AutoModelForCausalLM.from_config(config).float()


def tokens(seed: int = 0, b: int = 4, t: int = 12) -> torch.Tensor:
    return torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(seed))


def train_steps(model, n: int = 3) -> None:
    """A few AdamW steps on next-token loss over the trainable (adapter) weights."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(n):
        ids = tokens(step)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def adapted(peft_model) -> set[str]:
    return {
        n.removesuffix(".lora_A.default.weight")
        for n, _ in peft_model.get_base_model().named_parameters()
        if n.endswith(".lora_A.default.weight")
    }


# ---------------------------------------------------------------- targets


def test_all_linear_on_moe_covers_dense_mlp_shared_experts_and_attention_only():
    peft_model = apply_lora(tiny_moe(), r=4, alpha=8, dropout=0.0, target_modules=["all-linear"])
    got = adapted(peft_model)
    attention = ["q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]
    expected = {f"model.layers.{i}.self_attn.{p}" for i in range(3) for p in attention}
    expected |= {f"model.layers.0.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")}
    expected |= {
        f"model.layers.{i}.mlp.shared_experts.{p}"
        for i in (1, 2)
        for p in ("gate_proj", "up_proj", "down_proj")
    }
    assert got == expected  # no lm_head, no router, no fused routed experts
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    report = lora_trainable_report(peft_model)
    assert set(report) == {"attention", "dense_mlp", "shared_experts", "trainable", "total"}
    assert report["trainable"] == sum(p.numel() for n, p in peft_model.named_parameters() if ".lora_" in n)
    # dense layer 0: gate/up (64->128) and down (128->64) at r=4: A and B per projection
    assert report["dense_mlp"] == 2 * 4 * (64 + 128) + 4 * (128 + 64)


def test_mlp_names_reach_dense_layers_and_shared_experts_despite_peft_moe_rewrite():
    # Stock peft 0.21 turns these three names into target_parameters on the fused routed experts.
    peft_model = apply_lora(
        tiny_moe(), r=2, alpha=4, dropout=0.0, target_modules=["gate_proj", "up_proj", "down_proj"]
    )
    got = adapted(peft_model)
    assert "model.layers.0.mlp.down_proj" in got
    assert "model.layers.2.mlp.shared_experts.gate_proj" in got
    assert len(got) == 9 and not any("self_attn" in p for p in got)
    assert not peft_model.peft_config["default"].target_parameters
    experts = peft_model.get_base_model().model.layers[1].mlp.experts
    assert type(experts).__name__ == "DeepseekV3Experts" and not experts.gate_up_proj.requires_grad


def test_targets_on_dense_model_and_bad_targets():
    assert resolve_target_modules(tiny_llama(), ["all-linear"]) == sorted(
        f"model.layers.{i}.{p}"
        for i in range(2)
        for p in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        )
    )
    assert resolve_target_modules(tiny_llama(), ["q_proj"]) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj",
    ]
    with pytest.raises(UserError, match=r"'qkv' matches no nn.Linear.*'q_proj'"):
        resolve_target_modules(tiny_llama(), ["q_proj", "qkv"])
    with pytest.raises(UserError, match="Routed experts are fused"):
        resolve_target_modules(tiny_moe(), ["gate_up_proj"])
    with pytest.raises(UserError, match="empty"):
        resolve_target_modules(tiny_moe(), [])


# ---------------------------------------------------------------- training touches only adapters


def test_optimizer_steps_change_only_adapter_weights():
    peft_model = apply_lora(tiny_moe(), r=4, alpha=8, dropout=0.0, target_modules=["all-linear"])
    base_before = {k: v.clone() for k, v in peft_model.state_dict().items() if ".lora_" not in k}
    lora_before = {k: v.clone() for k, v in peft_model.state_dict().items() if ".lora_" in k}
    train_steps(peft_model)
    after = peft_model.state_dict()
    for key, value in base_before.items():
        assert torch.equal(after[key], value), f"base weight {key} changed"
    changed = [k for k, v in lora_before.items() if not torch.equal(after[k], v)]
    assert len(changed) == len(lora_before)  # every A and B moved (B starts at zero)


# ---------------------------------------------------------------- merge and save


def test_merged_model_logits_equal_adapter_logits(tmp_path):
    peft_model = apply_lora(tiny_moe(), r=4, alpha=8, dropout=0.0, target_modules=["all-linear"])
    train_steps(peft_model)
    ids = tokens(9)
    with torch.no_grad():
        adapter_logits = peft_model(ids).logits
        base_logits = peft_model.get_base_model()(ids).logits
        with peft_model.disable_adapter():
            no_adapter_logits = peft_model(ids).logits
    assert not torch.allclose(adapter_logits, no_adapter_logits, atol=1e-3)  # precondition: adapters matter
    merge_and_save(peft_model, None, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").float().eval()
    assert not any("lora" in k for k in merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapter_logits, atol=1e-5, rtol=1e-5)
        # merging did not touch the training model
        torch.testing.assert_close(peft_model(ids).logits, base_logits, atol=0, rtol=0)


def test_merged_state_dict_keys_match_plain_model():
    peft_model = apply_lora(tiny_moe(), r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "down_proj"])
    assert set(merged_state_dict(peft_model)) == set(tiny_moe().state_dict())


def test_adapter_round_trip_restores_adapters_and_router_bias(tmp_path):
    peft_model = apply_lora(tiny_moe(), r=4, alpha=8, dropout=0.0, target_modules=["all-linear"])
    train_steps(peft_model, n=2)
    update_expert_bias(peft_model, {1: torch.arange(8), 2: torch.arange(8).flip(0)}, gamma=0.1)
    ids = tokens(11)
    with torch.no_grad():
        expected = peft_model(ids).logits
    save_adapter(peft_model, tmp_path / "adapter")
    loaded = load_adapter(tiny_moe(), tmp_path / "adapter").eval()
    assert adapted(loaded) == adapted(peft_model)
    for layer, router in find_routers(loaded).items():
        assert torch.equal(
            router.e_score_correction_bias, find_routers(peft_model)[layer].e_score_correction_bias
        )
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, expected, atol=0, rtol=0)
    with pytest.raises(UserError, match="adapter_config.json"):
        load_adapter(tiny_moe(), tmp_path)


def test_all_linear_on_r1kit_tiny_policy(tiny_dir, tmp_path):
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "policy").float()
    peft_model = apply_lora(policy, r=4, alpha=8, dropout=0.0, target_modules=["all-linear"])
    report = lora_trainable_report(peft_model)
    assert report["attention"] > 0 and report["dense_mlp"] > 0 and report["shared_experts"] > 0
    assert "routed_experts" not in report and "router" not in report and "lm_head" not in report
    with torch.no_grad():
        for module in peft_model.modules():
            if hasattr(module, "lora_B"):
                module.lora_B["default"].weight.normal_(
                    0, 0.05
                )  # a trained-looking adapter, no training needed
    ids = torch.randint(0, policy.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(1))
    merge_and_save(peft_model, None, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").float().eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft_model.eval()(ids).logits, atol=1e-5, rtol=1e-5)
