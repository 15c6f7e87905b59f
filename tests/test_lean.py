"""The `hf` engine's lean decode path for dense decoders (rl/lean.py) against transformers' own forward."""

from __future__ import annotations

import pytest
import torch
from tiny_models import Tok, frequent_token, prompts, sample

from r1kit.generation import HFEngine, SamplingSettings
from r1kit.generation.lean import KVCache, lean_model


def dense(kind: str, seed: int = 0, **over) -> torch.nn.Module:
    """A 2-layer Llama / Qwen2 (q/k/v biases) / Qwen3 (q/k norms), grouped-query attention (4 heads, 2 kv heads)."""
    import transformers

    torch.manual_seed(seed)
    config_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                  "qwen3": transformers.Qwen3Config}[kind]
    kw = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "head_dim": 16}
    model = transformers.AutoModelForCausalLM.from_config(config_cls(**{**kw, **over}))
    for p in model.parameters():  # the hub init (std 0.02) gives near-uniform logits: make choices sharp
        torch.nn.init.normal_(p, std=0.3) if p.dim() > 1 else torch.nn.init.normal_(p, mean=1.0, std=0.2)
    return model.float().eval()


def generate(model, ps, sampling, lean: bool, eos: int = 1, seed: int = 0):
    return sample(model, ps, sampling, eos=eos, seed=seed, lean=lean)


def assert_same(ours, ref):
    assert ours.completion_ids == ref.completion_ids and ours.truncated == ref.truncated
    for a, b in zip(ours.logprobs, ref.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
@pytest.mark.parametrize("sampling", [SamplingSettings(16, greedy=True), SamplingSettings(16, temperature=1.0)],
                         ids=["greedy", "sampled"])
def test_lean_forward_gives_transformers_tokens_and_logprobs(kind, sampling):
    model = dense(kind, seed=1, **({"attention_bias": True} if kind == "qwen2" else {}))
    assert lean_model(model) is model
    ps = prompts(distinct=5)
    eos = frequent_token(model, ps, sampling, lean=False)
    ref = generate(model, ps, sampling, lean=False, eos=eos)
    ours = generate(model, ps, sampling, lean=True, eos=eos)
    assert len({len(c) for c in ref.completion_ids}) > 1, "rows should finish at different steps"
    assert len(set(map(tuple, ref.completion_ids))) > 3, "the completions should differ from each other"
    assert_same(ours, ref)


def test_the_engine_takes_the_lean_path_for_a_supported_model():
    model = dense("qwen3")
    cache, _ = HFEngine(model, Tok())._cache(2, 8, torch.device("cpu"))
    assert isinstance(cache, KVCache)
    cache, _ = HFEngine(model, Tok(), lean=False)._cache(2, 8, torch.device("cpu"))
    assert not isinstance(cache, KVCache)


def test_lean_forward_reads_lora_adapters_on_every_projection():
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(dense("qwen3", seed=2), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: give the adapters a real effect
            torch.nn.init.normal_(p, std=0.5)
    model.eval()
    assert lean_model(model) is not None
    ps = prompts(seed=3, distinct=4, group=2)
    ref = generate(model, ps, SamplingSettings(10, greedy=True), lean=False, eos=-1)
    ours = generate(model, ps, SamplingSettings(10, greedy=True), lean=True, eos=-1)
    assert_same(ours, ref)
    with model.disable_adapter():  # without the adapters the tokens differ, so the check above had teeth
        base = generate(model, ps, SamplingSettings(10, greedy=True), lean=True, eos=-1)
    assert base.completion_ids != ref.completion_ids


def test_lean_forward_keeps_the_single_prompt_and_single_token_cases():
    model = dense("llama", seed=4)
    for ps, n in [([[7]], 1), ([[9, 8, 7, 6]], 12), ([[5, 6], [5, 6, 7, 8, 9]], 1)]:
        sampling = SamplingSettings(n, greedy=True)
        assert_same(generate(model, ps, sampling, lean=True, eos=-1), generate(model, ps, sampling, lean=False, eos=-1))


@pytest.mark.parametrize("change", ["bf16", "sliding_window", "dynamic_rope", "other_norm", "other_model",
                                    "forward_hook", "pre_hook", "prefix_tuning"])
def test_models_the_lean_path_would_compute_differently_keep_transformers_forward(change):
    import transformers

    if change == "bf16":
        model = dense("qwen3").to(torch.bfloat16)
    elif change == "sliding_window":
        model = dense("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=0)
    elif change == "dynamic_rope":
        model = dense("llama", rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    elif change == "other_norm":
        model = dense("qwen3")
        norm = model.model.layers[1].post_attention_layernorm
        norm.__class__ = type("GemmaStyleRMSNorm", (type(norm),), {})
    elif change == "forward_hook":  # a hook on a module the lean path does not call would silently not run
        model = dense("llama")
        model.model.layers[0].self_attn.q_proj.register_forward_hook(lambda m, i, out: out * 0.5)
    elif change == "pre_hook":
        model = dense("qwen3")
        model.model.layers[1].register_forward_pre_hook(lambda m, args: None)
    elif change == "prefix_tuning":  # virtual tokens are added by PeftModel.forward, outside the layers
        from peft import PrefixTuningConfig, get_peft_model

        model = get_peft_model(dense("llama"), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    else:
        model = transformers.AutoModelForCausalLM.from_config(transformers.GPT2Config(
            vocab_size=64, n_embd=32, n_layer=1, n_head=2))
    assert lean_model(model) is None
    with torch.inference_mode():
        cache, _ = HFEngine(model, Tok())._cache(2, 8, torch.device("cpu"))
    assert not isinstance(cache, KVCache)


def test_autocast_keeps_transformers_forward():
    model = dense("qwen3")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cache, _ = HFEngine(model, Tok())._cache(2, 8, torch.device("cpu"))
    assert not isinstance(cache, KVCache)


def test_lean_forward_runs_only_the_layers_the_config_names():
    """transformers runs `layers[:num_hidden_layers]` (layer-dropping experiments shorten the config)."""
    model = dense("qwen3", seed=5, num_hidden_layers=3)
    model.config.num_hidden_layers = 2
    ps = prompts(seed=6, distinct=3, group=2)
    sampling = SamplingSettings(8, greedy=True)
    assert_same(generate(model, ps, sampling, lean=True, eos=-1), generate(model, ps, sampling, lean=False, eos=-1))


def test_large_models_are_not_fused_and_give_the_same_tokens(monkeypatch):
    """Above the size bound the q/k/v and gate/up weights are not copied into fused matmuls."""
    model = dense("qwen2", seed=7)
    monkeypatch.setattr("r1kit.generation.lean._FUSE_MAX_BYTES", 0)
    cache = KVCache(model, 2, 8, torch.device("cpu"))
    assert all(layer.qkv_weight is None and layer.gate_up is None for layer in cache.layers)
    ps = prompts(seed=8, distinct=3, group=2)
    sampling = SamplingSettings(8, greedy=True)
    assert_same(generate(model, ps, sampling, lean=True, eos=-1), generate(model, ps, sampling, lean=False, eos=-1))


def test_an_empty_prompt_is_an_error_not_an_arbitrary_completion():
    with pytest.raises(ValueError, match="empty"):
        HFEngine(dense("llama"), Tok()).generate([[5, 6], []], SamplingSettings(4, greedy=True))
