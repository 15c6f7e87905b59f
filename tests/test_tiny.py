"""`r1kit build-tiny`: tokenizer behaviour, MoE/dense architecture, save/load round-trip, generation."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from r1kit import synth
from r1kit.tiny import REASONING_TAGS, build_tiny, cli_build_tiny, param_count

torch.set_num_threads(1)

MESSAGES = [{"role": "system", "content": "Think first."}, {"role": "user", "content": "What is 47 + 38?"}]


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return AutoTokenizer.from_pretrained(tiny_dir / "policy")


def test_tokenizer_keeps_reasoning_tags_through_decode(tok):
    text = synth.format_completion({"solution": "47 + 38\n= 85", "answer": "85"})
    ids = tok(text)["input_ids"] + [tok.eos_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == text
    for tag in REASONING_TAGS:  # one token each, and not special
        assert len(tok(tag)["input_ids"]) == 1
        assert tag not in tok.all_special_tokens


def test_tokenizer_specials_and_digits(tok):
    assert {tok.bos_token, tok.eos_token, tok.pad_token} <= set(tok.all_special_tokens)
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert tok.decode(tok("<|eos|>")["input_ids"], skip_special_tokens=True) == ""
    pieces = [tok.decode([i]) for i in tok("x = 12345")["input_ids"]]
    assert [p for p in pieces if p.strip().isdigit()] == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("text", ["Janet’s ducks lay 16 eggs per day.", "∫ x² dx = x³/3 — é 中文\n\ttab", "  two  spaces "])
def test_tokenizer_round_trips_any_text(tok, text):
    assert tok.decode(tok(text)["input_ids"]) == text


def test_chat_template_roles_generation_prompt_and_prefill(tok):
    plain = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert plain == "<|bos|><|system|>\nThink first.<|eos|><|user|>\nWhat is 47 + 38?<|eos|><|assistant|>\n"
    prefilled = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True, prefill_think=True)
    assert prefilled == plain + "<think>\n"
    # The assistant-token mask (TRL's assistant_only_loss) covers exactly the reply and its eos.
    reply = "<think>\n85\n</think>\n<answer>85</answer>"
    out = tok.apply_chat_template(
        MESSAGES + [{"role": "assistant", "content": reply}],
        tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
    )
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(masked) == reply + tok.eos_token
    with pytest.raises(Exception, match="roles must be"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_policy_is_deepseek_v3_moe_with_noaux_tc_routing(tiny_dir):
    cfg = AutoConfig.from_pretrained(tiny_dir / "policy")
    assert cfg.model_type == "deepseek_v3"
    assert (cfg.kv_lora_rank, cfg.qk_rope_head_dim, cfg.first_k_dense_replace) == (512, 64, 1)
    assert (cfg.topk_method, cfg.scoring_func) == ("noaux_tc", "sigmoid")
    assert not cfg.tie_word_embeddings  # vLLM's DeepSeek model never ties: a tied checkpoint has no lm_head
    assert cfg.n_shared_experts >= 1 and cfg.n_routed_experts > cfg.num_experts_per_tok
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "policy")
    assert model.dtype == torch.float32
    layers = model.model.layers
    assert not hasattr(layers[0].mlp, "gate")  # first layer dense
    for layer in layers[1:]:
        gate = layer.mlp.gate
        assert gate.e_score_correction_bias.shape == (cfg.n_routed_experts,)
        assert hasattr(layer.mlp, "shared_experts")
        # Routing really is sigmoid top-k on (score + bias): a large bias forces its expert in.
        gate.e_score_correction_bias[3] = 10.0
        _, weights, idx = gate(torch.randn(5, cfg.hidden_size))
        assert (idx == 3).any(dim=-1).all() and idx.shape == (5, cfg.num_experts_per_tok)
        assert torch.allclose(weights.sum(-1), torch.full((5,), cfg.routed_scaling_factor))
    assert param_count(model) < 3_000_000


def test_student_is_dense_and_at_most_half_the_policy(tiny_dir):
    policy = AutoModelForCausalLM.from_pretrained(tiny_dir / "policy")
    student = AutoModelForCausalLM.from_pretrained(tiny_dir / "student")
    assert student.config.model_type in ("qwen3", "llama")
    assert 2 * param_count(student) <= param_count(policy)
    assert student.config.vocab_size == policy.config.vocab_size
    assert AutoTokenizer.from_pretrained(tiny_dir / "student").get_vocab() == AutoTokenizer.from_pretrained(
        tiny_dir / "tokenizer"
    ).get_vocab()


@pytest.mark.parametrize("name", ["policy", "student"])
def test_round_trip_save_load_weights_equal(tiny_dir, tmp_path, name):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / name)
    if name == "policy":  # non-zero router bias must survive saving (it is a buffer, not a parameter)
        for layer in model.model.layers[1:]:
            layer.mlp.gate.e_score_correction_bias.copy_(torch.linspace(-0.5, 0.5, model.config.n_routed_experts))
    model.save_pretrained(tmp_path / name)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / name)
    before, after = model.state_dict(), again.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


@pytest.mark.parametrize("name", ["policy", "student"])
def test_generate_with_kv_cache_matches_full_recompute(tiny_dir, tok, name):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / name).eval()
    with torch.no_grad():  # untrained weights give near-uniform logits; widen them so tokens vary
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    batch = tok.apply_chat_template(
        [MESSAGES, MESSAGES[1:]], add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True
    )
    kw = {"max_new_tokens": 12, "do_sample": False, "output_logits": True, "return_dict_in_generate": True}
    cached = model.generate(**batch, use_cache=True, **kw)
    full = model.generate(**batch, use_cache=False, **kw)
    assert cached.sequences.shape[1] == batch["input_ids"].shape[1] + 12
    assert torch.equal(cached.sequences, full.sequences)
    for a, b in zip(cached.logits, full.logits):  # float32 sums in another order: ~1e-4 apart
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
    assert len(set(cached.sequences[0, -12:].tolist())) > 1  # the check above compared real choices


def test_build_is_deterministic_in_seed(tmp_path, tiny_dir):
    again = build_tiny(tmp_path / "again", seed=0)
    a = AutoModelForCausalLM.from_pretrained(tiny_dir / "student").state_dict()
    b = AutoModelForCausalLM.from_pretrained(again.student).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (again.tokenizer / "tokenizer.json").read_text() == (tiny_dir / "tokenizer" / "tokenizer.json").read_text()


def test_cli_build_tiny_prints_sizes(tmp_path, capsys):
    assert cli_build_tiny(["--out", str(tmp_path / "t"), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "deepseek_v3" in out and "qwen3" in out and "parameters" in out
    assert (tmp_path / "t" / "policy" / "config.json").is_file()
    with pytest.raises(SystemExit) as e:
        cli_build_tiny(["--help"])
    assert e.value.code == 0
