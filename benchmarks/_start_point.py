"""A partially competent tiny policy to start GRPO from: build_tiny, then a short TRL SFT.

GRPO only sharpens what the policy can already sometimes do: from a random tiny policy every
reward is 0 and nothing is learned. R1 starts RL from a cold-start SFT checkpoint; here that is a
short `trl.SFTTrainer` run (TRL is r1kit's SFT engine) on train-split synthetic problems rendered
with the chat template and `synth.format_completion` (`<think>…</think><answer>…</answer>`), loss
on the completion only, stopped early so RL has room to show.

The default base is build_tiny's dense student, not the MoE policy: measured here, the MoE policy
after 300 SFT steps (batch 32) still ignored the prompt's operands (1% held-out), while the student
copies and decomposes them after 150 steps and reaches 13% held-out greedy accuracy after 1000 steps
of 16 (about 4-5 minutes on 2 cores; 0.5% after 150, 1.5% after 400).

With `sft.pretrain` first (the default), strict held-out greedy accuracy after N SFT steps of 16 (tiny geometry
of 864ca7c, seed 0, 200 test problems; measured 2026-12-06): 300 steps 0.27 on 2-digit +/-; 400 steps 0.50 on
addition only; 600 steps 0.47 on +/- and 0.64-0.66 on addition; 800 steps 0.77 on addition. The default, 600,
starts GRPO where it has room to show and the start already earns the format (~40-token worked answers).

`recipes/tiny/grpo.yaml`, the learning test and `benchmarks/grpo_vs_trl.py` call `build_start_point(out_dir)`;
the result is cached in `out_dir` (a finished policy is reused, never rebuilt). About 10 CPU minutes:

    python benchmarks/_start_point.py --out runs/tiny/start --threads 1   # prints its held-out accuracy
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from r1kit import synth

REPO = Path(__file__).resolve().parents[1]
TASK, DIFFICULTY = "arithmetic", 1  # held-out 2-digit addition/subtraction, the GRPO benchmark task
DONE_FILE = "start_point.json"


def sft_rows(n: int, seed: int) -> list[dict]:
    """Prompt/completion chat pairs: TRL's prompt-completion format trains on the completion only."""
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "completion": [{"role": "assistant", "content": synth.format_completion(r)}]}
            for r in synth.generate(TASK, n, seed, DIFFICULTY, split="train")]


def sft(policy: Path, out: Path, steps: int, seed: int, lr: float, batch: int) -> None:
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    args = trl.SFTConfig(
        output_dir=str(out / "trl_sft"), max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
        lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20), use_cpu=True, bf16=False,
        report_to="none", save_strategy="no", logging_steps=max(1, steps // 5), seed=seed, max_length=128,
        gradient_checkpointing=False,  # TRL turns it on by default: pure recompute cost on a tiny model
        dataloader_num_workers=0)
    # 2-digit +/- has ~11k distinct train problems: longer runs take more than one pass over 10k.
    data = datasets.Dataset.from_list(sft_rows(min(steps * batch, 10_000), seed))
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.train()
    trainer.model.save_pretrained(out / "policy")
    tokenizer.save_pretrained(out / "policy")


def pretrain(base: Path, out: Path, seed: int) -> Path:
    """`sft.pretrain` with the student recipe (plain-text worked problems, train split): the base that
    copies and combines operands, as the README demo builds it."""
    import torch

    from sft import pretrain as stage

    # the caller's thread count: 2 threads on a CPU that other jobs share spin in OpenMP barriers (measured 3-4 s
    # per pretrain step instead of 0.2 s under a load of 9 on 2 cores)
    stage.main(["--config", str(REPO / "recipes/tiny/pretrain_student.yaml"), "--model_name_or_path", str(base),
                "--output_dir", str(out / "pretrain"), "--seed", str(seed), "--torch_threads", str(torch.get_num_threads()),
                "--eval_accuracy_examples", "0"])
    return out / "pretrain"


def build_start_point(out_dir: str | Path, seed: int = 0, sft_steps: int = 600, lr: float = 7e-4,
                      base: str = "student", batch: int = 16, pretrained: bool = True) -> Path:
    """`out_dir/policy`: build_tiny's `base` model ("policy": the MoE, "student": the dense Qwen3), pretrained
    with `sft.pretrain` when `pretrained`, then `sft_steps` TRL SFT steps of `batch` examples; cached."""
    import torch

    from r1kit.tiny import build_tiny

    out = Path(out_dir)
    done = out / DONE_FILE
    want = {"seed": seed, "sft_steps": sft_steps, "lr": lr, "base": base, "batch": batch, "pretrained": pretrained}
    if done.is_file() and json.loads(done.read_text()) == want:
        return out / "policy"
    torch.manual_seed(seed)
    tiny = build_tiny(out / "tiny", seed=seed)
    start = pretrain(getattr(tiny, base), out, seed) if pretrained else getattr(tiny, base)
    sft(start, out, sft_steps, seed, lr, batch)
    done.write_text(json.dumps(want))  # written last: a crashed build is rebuilt, not reused
    return out / "policy"


def held_out(model, tokenizer, rows: list[dict], max_new_tokens: int = 64, samples: int = 0,
             dump: Path | None = None) -> tuple[float, float]:
    """(accuracy, mean completion tokens) on `rows`: the share of greedy completions (chat template, no prefill)
    that `strict_accuracy` scores 1 (one non-empty thought, then the answer in `<answer>` in final form, equal to
    the gold; never the training reward, so a shortcut cannot read as solved); with `samples` > 0, the share
    of that many temperature-1 samples per row. `dump`: a JSONL file that receives every completion and its score."""
    from r1kit.chat import encode_prompt
    from r1kit.generation import HFEngine, SamplingSettings
    from rewards.registry import build_rewards

    rows = [r for r in rows for _ in range(max(samples, 1))]
    prompts = [encode_prompt(r["prompt"], tokenizer) for r in rows]
    out = HFEngine(model, tokenizer).generate(prompts, SamplingSettings(max_new_tokens, greedy=samples == 0))
    texts = tokenizer.batch_decode(out.completion_ids, skip_special_tokens=True)
    scores = build_rewards([{"name": "strict_accuracy"}])[0](texts, answer=[r["answer"] for r in rows])
    solved = sum(s is not None and s >= 1 for s in scores) / len(rows)
    if dump is not None:
        dump.write_text("".join(json.dumps({"prompt": r["prompt"], "answer": r["answer"], "completion": t, "strict": s})
                                + "\n" for r, t, s in zip(rows, texts, scores)))
    return solved, sum(len(c) for c in out.completion_ids) / len(rows)


def main() -> None:
    import time

    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sft_steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=7e-4)
    p.add_argument("--no_pretrain", dest="pretrained", action="store_false", help="SFT straight from build_tiny")
    p.add_argument("--base", choices=["policy", "student"], default="student")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--eval_samples", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 on a CPU shared with other jobs)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    policy = build_start_point(a.out, a.seed, a.sft_steps, a.lr, a.base, a.batch, a.pretrained)
    built = time.perf_counter() - t0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    acc, length = held_out(AutoModelForCausalLM.from_pretrained(policy), AutoTokenizer.from_pretrained(policy),
                           synth.generate(TASK, a.eval_samples, 0, DIFFICULTY, split="test"))
    print(f"start point {policy}: strict held-out accuracy {acc:.3f} ({a.eval_samples} test problems, "
          f"{length:.1f} tokens per completion), built in {built:.0f} s")


if __name__ == "__main__":
    main()
