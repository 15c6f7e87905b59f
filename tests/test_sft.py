"""sft/data.py and sft/sft.py: rendering, assistant-only labels, packing without cross-example attention, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from r1kit.config import load_config
from r1kit.errors import UserError
from rewards.registry import build_rewards
from sft.data import completion_after_prefill, render_completion, shorten_thoughts
from sft.sft import SFTConfig, main, setup

pytestmark = pytest.mark.usefixtures("few_threads")


def make_cfg(tiny_dir, out, **over) -> SFTConfig:
    base = dict(model_name_or_path=str(tiny_dir / "policy"), dataset_name="synthetic:arithmetic",
                output_dir=str(out), max_samples=12, eval_max_samples=0, eval_accuracy_examples=0,
                per_device_train_batch_size=4, max_steps=2, max_length=128, use_cpu=True, seed=0)
    return load_config(SFTConfig, None, {**base, **over})


@pytest.mark.parametrize("answer_format", ["answer_tag", "boxed"])
@pytest.mark.parametrize("prefill", [False, True])
@pytest.mark.parametrize("reasoning,answer", [("17 + 25\n= 42", "42"), ("3/4 - 1/4\n= 1/2", "1/2"), ("x = 5", "-3")])
def test_rendered_examples_earn_the_format_and_strict_accuracy_rewards(answer_format, prefill, reasoning, answer):
    params = {"answer_format": answer_format, "think_prefilled": prefill}
    fmt, strict = build_rewards([{"name": "format", "params": params}, {"name": "strict_accuracy", "params": params}])
    emitted = completion_after_prefill(render_completion(reasoning, answer, answer_format), prefill)
    assert fmt([emitted]) == [1.0]
    assert strict([emitted], answer=[answer]) == [1.0]
    assert strict([emitted], answer=["999"]) == [0.0]


def _batch(run) -> dict:
    return next(iter(run.trainer.get_train_dataloader()))


@pytest.mark.parametrize("packing", [False, True])
def test_only_assistant_tokens_carry_loss(tiny_dir, tmp_path, packing):
    run = setup(make_cfg(tiny_dir, tmp_path, packing=packing))
    batch, tok = _batch(run), run.tokenizer
    labelled = tok.decode(batch["labels"][batch["labels"] != -100])
    assistant_turns = tok.decode(batch["input_ids"][batch["labels"] != -100])
    assert labelled == assistant_turns
    # every labelled stretch is an assistant completion plus its closing eos, and nothing else
    text = tok.decode(batch["input_ids"].flatten())
    completions = [turn.split(tok.eos_token)[0] for turn in text.split("<|assistant|>\n")[1:]]
    assert completions and labelled == "".join(c + tok.eos_token for c in completions)
    assert all(c.startswith("<think>") and c.endswith("</answer>") for c in completions)


def test_packed_examples_never_attend_to_each_other(tiny_dir, tmp_path):
    run = setup(make_cfg(tiny_dir, tmp_path, packing=True))
    batch = _batch(run)
    assert "attention_mask" not in batch or batch["attention_mask"].all()
    ids, pos = batch["input_ids"], batch["position_ids"]  # (1, N): the batch flattened, positions restart
    starts = (pos[0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
    assert len(starts) > 2, "the batch should pack several examples"
    model = run.trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]  # (N, V)
        for a, b in zip(starts[:-1], starts[1:]):
            alone = model(input_ids=ids[:, a:b], use_cache=False).logits[0]  # (b - a, V)
            torch.testing.assert_close(packed[a:b], alone, atol=1e-4, rtol=1e-4)


def test_truncated_examples_are_counted(tiny_dir, tmp_path, capsys):
    run = setup(make_cfg(tiny_dir, tmp_path, max_length=24, packing=False))
    assert 0 < run.truncated <= 12
    assert f"{run.truncated} of 12 training examples exceed max_length=24" in capsys.readouterr().out


def test_missing_reasoning_column_or_chat_template_is_a_user_error_at_start(tiny_dir, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(4)))
    with pytest.raises(UserError, match="solution"):
        setup(make_cfg(tiny_dir, tmp_path / "a", dataset_name=str(data)))
    argv = ["--model_name_or_path", str(tiny_dir / "policy"), "--dataset_name", str(data),
            "--output_dir", str(tmp_path / "b"), "--use_cpu", "true"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "solution" in capsys.readouterr().err

    plain = tmp_path / "plain"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir / "policy")
    tok.chat_template = None
    tok.save_pretrained(plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(UserError, match="chat template"):
        setup(make_cfg(tiny_dir, tmp_path / "c", tokenizer_name_or_path=str(plain)))


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_short_thoughts_keep_the_first_line_for_about_the_asked_share(fraction):
    rows = [{"prompt": f"What is {i} + 1?", "solution": f"{i} + 1\n= {i + 1}", "answer": str(i + 1)} for i in range(400)]
    short = shorten_thoughts(rows, "solution", fraction, seed=1)
    cut = [s for s, r in zip(short, rows) if s["solution"] != r["solution"]]
    assert abs(len(cut) / len(rows) - fraction) < 0.06
    assert all(s["solution"] == s["prompt"][8:-1] and "=" not in s["solution"] for s in cut)
    assert all(r["solution"].count("\n") == 1 for r in rows)  # the input rows are not modified
    assert shorten_thoughts(rows, "solution", fraction, seed=1) == short  # seeded, stable


def test_short_thought_fraction_out_of_range_is_a_user_error(tiny_dir, tmp_path):
    with pytest.raises(UserError, match="short_thought_fraction"):
        make_cfg(tiny_dir, tmp_path, short_thought_fraction=1.5)
