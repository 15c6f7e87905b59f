"""The `hf` engine's absorbed-MLA sampling path (rl/mla.py) against transformers' own attention."""

from __future__ import annotations

import pytest
import torch
from tiny_models import Tok, frequent_token, prompts, sample, tiny_moe

from r1kit.generation import HFEngine, SamplingSettings
from r1kit.generation.mla import LatentCache, mla_layers


def generate(model, ps, sampling, absorbed: bool, eos: int = 1, seed: int = 0):
    return sample(model, ps, sampling, eos=eos, seed=seed, absorbed_mla=absorbed)


@pytest.mark.parametrize("sampling", [SamplingSettings(16, greedy=True), SamplingSettings(16, temperature=1.0)],
                         ids=["greedy", "sampled"])
def test_absorbed_attention_gives_transformers_tokens_and_logprobs(sampling):
    model = tiny_moe(seed=1).eval()
    assert len(mla_layers(model)) == 3
    ps = prompts()
    eos = frequent_token(model, ps, sampling, absorbed_mla=False)
    ref = generate(model, ps, sampling, absorbed=False, eos=eos)
    ours = generate(model, ps, sampling, absorbed=True, eos=eos)
    assert len({len(c) for c in ref.completion_ids}) > 1, "rows should finish at different steps"
    assert ours.completion_ids == ref.completion_ids and ours.truncated == ref.truncated
    for a, b in zip(ours.logprobs, ref.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-4)
    for attn in mla_layers(model):
        assert "forward" not in attn.__dict__, "transformers' forward must be back after sampling"


def test_absorbed_attention_reads_lora_deltas_of_kv_b_proj():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_moe(seed=2), LoraConfig(r=4, lora_alpha=8, target_modules=["kv_b_proj", "o_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: give the adapters a real effect
            torch.nn.init.normal_(p, std=0.5)
    model.eval()
    assert len(mla_layers(model)) == 3
    ps = prompts(seed=3, distinct=4, group=2)
    ref = generate(model, ps, SamplingSettings(10, greedy=True), absorbed=False, eos=-1)
    ours = generate(model, ps, SamplingSettings(10, greedy=True), absorbed=True, eos=-1)
    assert ours.completion_ids == ref.completion_ids
    with model.disable_adapter():  # without the delta the tokens differ, so the check above had teeth
        base = generate(model, ps, SamplingSettings(10, greedy=True), absorbed=True, eos=-1)
    assert base.completion_ids != ref.completion_ids


def test_models_without_mla_keep_transformers_attention():
    from transformers import AutoModelForCausalLM, LlamaConfig

    llama = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                         num_hidden_layers=2, num_attention_heads=4))
    assert mla_layers(llama) == []


def test_an_error_inside_sampling_still_restores_the_attention_forward():
    model = tiny_moe(seed=0).eval()
    eng = HFEngine(model, Tok())
    with pytest.raises(RuntimeError, match="non-finite"):
        # NaN weights make the sampler raise mid-generation
        with torch.no_grad():
            model.lm_head.weight.fill_(float("nan"))
        eng.generate(prompts(distinct=2, group=1), SamplingSettings(4, temperature=1.0))
    assert all("forward" not in attn.__dict__ for attn in mla_layers(model))


@pytest.mark.parametrize("kind", ["dora", "lora_bias"])
def test_adapters_that_are_not_a_weight_delta_keep_transformers_attention(kind):
    from peft import LoraConfig, get_peft_model

    extra = {"use_dora": True} if kind == "dora" else {"lora_bias": True}
    model = get_peft_model(tiny_moe(seed=2), LoraConfig(r=4, lora_alpha=8, target_modules=["kv_b_proj"], **extra))
    assert mla_layers(model) == []


def test_bf16_and_autocast_keep_transformers_attention():
    """The absorbed form rounds differently from the trainer's expanded keys in bf16; log-probs must stay exact."""
    model = tiny_moe(seed=0).eval()
    assert len(mla_layers(model)) == 3
    assert mla_layers(model.to(torch.bfloat16)) == []
    model = tiny_moe(seed=0).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cache, _ = HFEngine(model, Tok())._cache(2, 8, torch.device("cpu"))
    assert not isinstance(cache, LatentCache)


def test_mla_variants_with_other_parts_are_not_taken():
    """DeepSeek-V3.2-style layers (sparse indexer, no rope_interleave key) have every attribute this path
    reads; only the exact DeepSeek-V3 attention class is taken."""
    model = tiny_moe(seed=0)
    attn = mla_layers(model)[0]
    attn.__class__ = type("DeepseekV32Attention", (type(attn),), {})
    assert mla_layers(model) == []
