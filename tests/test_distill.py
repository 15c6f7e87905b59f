"""sft/distill.py: verification filter, decontamination, resumable teacher sampling, bad input, logit mode."""

from __future__ import annotations

import json

import pytest

from r1kit.config import load_config
from r1kit.data import load_benchmark
from r1kit.errors import UserError
from sft.distill import (
    DistillConfig,
    benchmark_ngrams,
    decontaminate,
    generate,
    load_pair,
    prompt_id,
    read_generations,
    run,
    select,
    verification_rewards,
    verify,
)

pytestmark = pytest.mark.usefixtures("few_threads")


def make_cfg(tiny_dir, out, **over) -> DistillConfig:
    base = dict(model_name_or_path=str(tiny_dir / "student"), teacher_name_or_path=str(tiny_dir / "policy"),
                dataset_name="synthetic:arithmetic", max_samples=6, output_dir=str(out), num_samples=2,
                max_new_tokens=8, eval_accuracy_examples=0, train_student=False, use_cpu=True, seed=0)
    return load_config(DistillConfig, None, {**base, **over})


def record(pid: str, i: int, completion: str, answer: str = "42", tokens: int | None = None) -> dict:
    return {"prompt_id": pid, "sample_index": i, "prompt": f"problem {pid}", "answer": answer,
            "completion": completion, "completion_tokens": tokens or len(completion.split()), "teacher": "t"}


GOOD = "<think>\n40 + 2\n= 42\n</think>\n<answer>42</answer>"
PLANTED = [  # (record, verified)
    (record("a", 0, GOOD), True),
    (record("a", 1, "<think>\n40 + 2 is 42, so\n</think>\n<answer>42</answer>", tokens=30), True),  # longer
    (record("a", 2, GOOD), True),  # duplicate of sample 0
    (record("a", 3, "<answer>42</answer>"), False),  # right answer, no thought
    (record("a", 4, "<think>\n40 + 2\n</think>\n<answer>40 + 2</answer>"), False),  # not a final answer
    (record("a", 5, "<think>\nx\n</think>\n<answer>41</answer>"), False),  # wrong
    (record("a", 6, GOOD + " or 43"), False),  # text after the answer
    (record("b", 0, "<think>\n9 - 2\n= 7\n</think>\n<answer>7</answer>", answer="7", tokens=500), True),  # long
    (record("c", 0, "<think>\n1 + 1\n</think>\n<answer>2</answer>", answer="2"), True),
]


def test_verification_keeps_exactly_the_verified_samples(tiny_dir, tmp_path):
    cfg = make_cfg(tiny_dir, tmp_path, max_kept_per_prompt=0, dedupe=False, shortest_correct=False)
    checked = verify([r for r, _ in PLANTED], verification_rewards(cfg))
    assert [r["verified"] for r in checked] == [ok for _, ok in PLANTED]
    assert all(r["rewards"]["strict_accuracy"] == float(ok) for r, (_, ok) in zip(checked, PLANTED))
    kept = select(checked, cfg)
    assert [(r["prompt_id"], r["sample_index"]) for r in kept] == [
        (r["prompt_id"], r["sample_index"]) for r, ok in PLANTED if ok]


@pytest.mark.parametrize("options,expected", [
    ({"max_kept_per_prompt": 1}, [("a", 0), ("b", 0), ("c", 0)]),  # shortest first
    ({"max_kept_per_prompt": 0}, [("a", 0), ("a", 1), ("b", 0), ("c", 0)]),  # dedupe drops a/2
    ({"max_kept_per_prompt": 0, "dedupe": False}, [("a", 0), ("a", 2), ("a", 1), ("b", 0), ("c", 0)]),
    ({"max_kept_per_prompt": 1, "shortest_correct": False, "max_completion_tokens": 100},
     [("a", 0), ("c", 0)]),  # length cap drops b
])
def test_selection_options(tiny_dir, tmp_path, options, expected):
    cfg = make_cfg(tiny_dir, tmp_path, **options)
    kept = select(verify([r for r, _ in PLANTED], verification_rewards(cfg)), cfg)
    assert [(r["prompt_id"], r["sample_index"]) for r in kept] == expected


def test_extra_rewards_with_a_minimum_also_gate(tiny_dir, tmp_path):
    cfg = make_cfg(tiny_dir, tmp_path, rewards=[{"name": "strict_accuracy"},
                                                  {"name": "overlong_penalty", "min": 0.0,
                                                   "params": {"max_completion_len": 20, "cache_len": 10}}])
    checked = verify([dict(r, completion_token_ids=[0] * r["completion_tokens"]) for r, _ in PLANTED],
                     verification_rewards(cfg))
    assert [r["verified"] for r in checked] == [ok and r["completion_tokens"] <= 10 for r, ok in PLANTED]


def test_decontamination_catches_a_planted_benchmark_problem(data_dir):
    n = 8
    gsm = load_benchmark("gsm8k", "test")[17]["prompt"]
    rows = [{"prompt": p, "prompt_id": prompt_id(p)} for p in
            ["What is 17 + 25?", "Solve for x: 3x + 2 = 11.", "Note: " + gsm.replace("\n", " ") + " Answer briefly."]]
    kept, report = decontaminate(rows, benchmark_ngrams(n), n)
    assert kept == rows[:2]
    assert report["dropped"] == 1 and report["by_benchmark"] == {"gsm8k": 1}


class CountingEngine:
    """The real engine, counting the prompts it is asked to sample."""

    def __init__(self, engine):
        self.engine, self.prompts = engine, 0

    def generate(self, prompts, sampling):
        self.prompts += len(prompts)
        return self.engine.generate(prompts, sampling)


def test_resumed_generation_does_not_redo_finished_prompts(tiny_dir, tmp_path):
    from r1kit.generation import HFEngine

    cfg = make_cfg(tiny_dir, tmp_path, generation_batch_size=2)
    teacher, tok, _ = load_pair(cfg)
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1), "prompt_id": prompt_id(f"What is {i} + 1?")}
            for i in range(5)]
    path = tmp_path / "generations.jsonl"
    first = CountingEngine(HFEngine(teacher, tok))
    generate(cfg, first, tok, rows[:3], path)  # a run stopped after three prompts ...
    with path.open("a") as f:
        f.write('{"prompt_id": "cut-off mid-li')  # ... and killed while writing
    again = CountingEngine(HFEngine(teacher, tok))
    records = generate(cfg, again, tok, rows, path)
    assert first.prompts == 3 and again.prompts == 2
    assert len(records) == 5 * cfg.num_samples == len(read_generations(path))
    assert sorted((r["prompt_id"], r["sample_index"]) for r in records) == sorted(
        (r["prompt_id"], i) for r in rows for i in range(cfg.num_samples))
    assert generate(cfg, again, tok, rows, path) and again.prompts == 2  # nothing left to do


def test_bad_input_is_a_user_error_at_start(tiny_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    other = tmp_path / "other_tok"
    tok = AutoTokenizer.from_pretrained(tiny_dir / "policy")
    tok.add_tokens(["<extra>"])
    tok.save_pretrained(other)
    with pytest.raises(UserError, match="tokenizer must equal the teacher"):
        load_pair(make_cfg(tiny_dir, tmp_path, mode="logits", tokenizer_name_or_path=str(other)))
    plain = tmp_path / "plain"
    tok = AutoTokenizer.from_pretrained(tiny_dir / "policy")
    tok.chat_template = None
    tok.save_pretrained(plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    for f in (tiny_dir / "policy").iterdir():
        if f.name.endswith((".json", ".safetensors")) and "token" not in f.name:
            (plain / f.name).write_bytes(f.read_bytes())
    with pytest.raises(UserError, match="chat template"):
        load_pair(make_cfg(tiny_dir, tmp_path, teacher_name_or_path=str(plain)))
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    argv = ["--model_name_or_path", str(tiny_dir / "student"), "--teacher_name_or_path", str(tiny_dir / "policy"),
            "--dataset_name", str(data), "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"]
    from sft.distill import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "prompt" in capsys.readouterr().err


def test_logit_mode_trains_and_saves_the_student(tiny_dir, tmp_path):
    cfg = make_cfg(tiny_dir, tmp_path, mode="logits", model_name_or_path=str(tiny_dir / "policy"), max_steps=2,
                   per_device_train_batch_size=2, learning_rate=1e-3, decontaminate=False, logging_steps=1)
    summary = run(cfg)
    assert summary["logit_distill_steps"] == 2 and (tmp_path / "student" / "config.json").is_file()
    kl = [json.loads(line)["reverse_kl"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
          if "reverse_kl" in line]
    assert len(kl) == 2 and all(k >= 0 for k in kl)
