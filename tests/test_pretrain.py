"""`r1kit pretrain`: corpus and packing, config checks, a short run lowers held-out loss, exact resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from r1kit import synth
from r1kit.config import load_config
from r1kit.errors import UserError
from sft.pretrain import PretrainConfig, build_corpus, main, pack

torch.set_num_threads(1)  # shared CI cores: one thread avoids oversubscription stalls


def cfg_for(tiny_dir, out, **over) -> PretrainConfig:
    base = {
        "model_name_or_path": str(tiny_dir / "policy"), "output_dir": str(out), "tasks": ["arithmetic"],
        "min_difficulty": 1, "max_difficulty": 1, "num_examples": 400, "eval_examples": 60, "max_seq_len": 64,
        "per_device_train_batch_size": 8, "max_steps": 30, "learning_rate": 3e-3, "warmup_ratio": 0.1,
        "eval_accuracy_examples": 0, "logging_steps": 5, "seed": 0,
    }
    return load_config(PretrainConfig, overrides=base | over)


def argv_of(cfg: PretrainConfig, **over) -> list[str]:
    keys = ["model_name_or_path", "output_dir", "tasks", "min_difficulty", "max_difficulty", "num_examples",
            "eval_examples", "max_seq_len", "per_device_train_batch_size", "max_steps", "learning_rate",
            "warmup_ratio", "eval_accuracy_examples", "logging_steps", "seed"]
    values = {k: getattr(cfg, k) for k in keys} | over
    argv = []
    for k, v in values.items():
        argv += [f"--{k}", ",".join(v) if isinstance(v, list) else str(v)]
    return argv


def test_corpus_train_and_test_are_disjoint_and_deterministic(tiny_dir, tmp_path):
    cfg = cfg_for(tiny_dir, tmp_path, tasks=["arithmetic", "countdown"], max_difficulty=2, num_examples=300)
    train = build_corpus(cfg, "train", cfg.num_examples)
    test = build_corpus(cfg, "test", cfg.eval_examples)
    assert len(train) == 300 and len(test) == 60
    assert not set(train) & set(test)
    assert train == build_corpus(cfg, "train", cfg.num_examples)
    assert {t.split("\n")[0].startswith("Problem: Using the numbers") for t in train} == {True, False}
    assert all(t.startswith("Problem: ") and "\nAnswer: " in t for t in train)


def test_pack_keeps_documents_whole_restarts_positions_and_masks_only_padding(tiny_dir):
    tok = AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")
    texts = [synth.pretrain_text(r) for r in synth.generate("arithmetic", 7, seed=0)]
    ids, labels, positions = pack(tok, texts, 128)
    assert ids.shape[1] == 128 and ids.shape == labels.shape == positions.shape
    docs = []
    for row_ids, row_labels, row_pos in zip(ids.tolist(), labels.tolist(), positions.tolist()):
        real = [i for i, lab in zip(row_ids, row_labels) if lab != -100]
        assert row_labels[: len(real)] == real and all(i == tok.pad_token_id for i in row_ids[len(real) :])
        assert real[0] == tok.bos_token_id and real[-1] == tok.eos_token_id  # a block holds whole documents
        starts = [k for k, i in enumerate(real) if i == tok.bos_token_id]
        for start, end in zip(starts, starts[1:] + [len(real)]):
            assert row_pos[start:end] == list(range(end - start))  # positions restart per document
            docs.append(tok.decode(real[start:end]))
    assert [d.removeprefix(tok.bos_token).removesuffix(tok.eos_token) for d in docs] == texts
    assert len(ids) < len(texts)  # several documents share a block
    with pytest.raises(UserError, match="max_seq_len"):
        pack(tok, texts, 32)


@pytest.mark.parametrize("name", ["policy", "student"])
def test_packed_documents_see_only_themselves(tiny_dir, name):
    """Invariant: a document's logits inside a packed block equal its logits alone (block-diagonal mask)."""
    tok = AutoTokenizer.from_pretrained(tiny_dir / "tokenizer")
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / name).eval()
    texts = [synth.pretrain_text(r) for r in synth.generate("arithmetic", 2, seed=3)]
    ids, _, positions = pack(tok, texts, 128)
    assert len(ids) == 1
    start = int((ids[0] == tok.bos_token_id).nonzero()[1])
    second = slice(start, start + len(tok(texts[1])["input_ids"]) + 2)  # bos text eos of the second document
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0, second]
        alone = model(input_ids=ids[:, second]).logits[0]
        leaky = model(input_ids=ids).logits[0, second]
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(leaky, alone, atol=1e-2)  # without positions the first document leaks in


def test_config_errors_name_the_key(tiny_dir, tmp_path):
    with pytest.raises(UserError, match="min_difficulty"):
        cfg_for(tiny_dir, tmp_path, min_difficulty=3, max_difficulty=2)
    with pytest.raises(UserError, match="'algebra'"):
        cfg_for(tiny_dir, tmp_path, tasks=["algebra"])
    with pytest.raises(UserError, match="max_seq_len"):
        cfg_for(tiny_dir, tmp_path, max_seq_len=4)


def test_main_exits_2_on_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--model_name_or_path", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "model_name_or_path" in capsys.readouterr().err


def test_pretraining_the_moe_policy_lowers_heldout_loss(tiny_dir, tmp_path):
    out = tmp_path / "run"
    cfg = cfg_for(tiny_dir, out, eval_accuracy_examples=4, moe_bias_update_speed=0.01)
    assert main(argv_of(cfg, moe_bias_update_speed=0.01)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 30
    assert summary["eval_loss_after"] < summary["eval_loss_before"] - 1.0, summary
    assert 0.0 <= summary["accuracy/arithmetic_d1"] <= 1.0
    # loss curve logged; the MoE routers were balanced (their biases moved) and metrics say how well
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [r["loss"] for r in log if "loss" in r]
    assert len(curve) == 6 and curve[-1] < curve[0]
    assert all("moe/max_over_mean" in r for r in log if "loss" in r)
    # the final model loads by path like a hub model and differs from the untrained one
    trained = AutoModelForCausalLM.from_pretrained(out)
    untrained = AutoModelForCausalLM.from_pretrained(tiny_dir / "policy")
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(tiny_dir / "policy").get_vocab()
    bias = trained.model.layers[1].mlp.gate.e_score_correction_bias
    assert bias.abs().max() > 0
    w = "model.layers.0.self_attn.kv_b_proj.weight"
    assert not torch.equal(trained.state_dict()[w], untrained.state_dict()[w])
    assert not list(out.glob(".tmp*"))


def test_resuming_from_a_checkpoint_reproduces_the_uninterrupted_run(tiny_dir, tmp_path):
    """Invariant: stop at step 4 and resume == run 8 steps straight (weights, optimizer and data order)."""
    common = {"model_name_or_path": str(tiny_dir / "student"), "max_steps": 8, "num_examples": 200, "eval_examples": 20,
                  "moe_bias_update_speed": 0.0}
    straight = cfg_for(tiny_dir, tmp_path / "straight", save_steps=4, **common)
    assert main(argv_of(straight, save_steps=4)) == 0
    assert (tmp_path / "straight" / "checkpoint-4" / "trainer_state.json").is_file()

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "straight" / "checkpoint-4", resumed_dir / "checkpoint-4")
    resumed = cfg_for(tiny_dir, resumed_dir, **common)
    assert main(argv_of(resumed, resume_from_checkpoint="auto")) == 0

    a = AutoModelForCausalLM.from_pretrained(tmp_path / "straight").state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed_dir).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    after = [json.loads(x)["eval_loss_after"] for x in
             [(tmp_path / "straight" / "summary.json").read_text(), (resumed_dir / "summary.json").read_text()]]
    assert after[0] == pytest.approx(after[1], abs=1e-6)
