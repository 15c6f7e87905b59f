"""r1kit's GRPO loop vs TRL's GRPOTrainer: seconds per step and steps to a held-out accuracy target.

Both trainers get the same policy, prompts (chat template, no prefill), G, batch, completion length,
learning rate, temperature, loss (dapo) and the same registry reward functions; held-out accuracy is
measured by the same greedy evaluator (`rl.engine.HFEngine` + the `accuracy` reward) for both.
r1kit runs with its defaults (dynamic sampling, warmup); TRL with its own defaults.

    python benchmarks/grpo_vs_trl.py --policy runs/tiny/sft --steps 400 --eval_every 25
    python benchmarks/grpo_vs_trl.py --steps 5                 # untrained tiny policy: timing only

Without --policy an untrained tiny MoE policy is built, which earns no accuracy reward: only the
step times mean anything then.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from r1kit.config import load_config
from r1kit.data import load_rows
from rewards.registry import build_rewards
from rl import grpo
from rl.config import GRPOConfig
from rl.engine import HFEngine, SamplingSettings

REWARDS = [{"name": "accuracy", "weight": 1.0}, {"name": "format", "weight": 0.2}]


def held_out_accuracy(model, tokenizer, cfg: GRPOConfig, rows: list[dict], prompts: list[list[int]]) -> float:
    engine = HFEngine(model, tokenizer)
    out = engine.generate(prompts, SamplingSettings(cfg.max_completion_length, greedy=True))
    texts = tokenizer.batch_decode(out.completion_ids, skip_special_tokens=True)
    scores = build_rewards([{"name": "accuracy"}])[0](texts, answer=[r["answer"] for r in rows])
    return sum(s is not None and s >= 1 for s in scores) / len(rows)


def run_r1kit(cfg: GRPOConfig, steps: int, eval_every: int, target: float, held) -> dict:
    run = grpo.setup_run(cfg)
    times, curve, reached = [], [], None
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        grpo.train_step(run, step)
        times.append(time.perf_counter() - t0)
        if step % eval_every == 0 or step == steps:
            acc = held_out_accuracy(run.accelerator.unwrap_model(run.model), run.tokenizer, cfg, *held)
            curve.append((step, acc))
            reached = reached or (step if acc >= target else None)
    grpo.teardown_run(run)
    return {"s_per_step": sum(times) / len(times), "curve": curve, "steps_to_target": reached}


def run_trl(cfg: GRPOConfig, steps: int, eval_every: int, target: float, held) -> dict:
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path)
    rows = load_rows(cfg)
    data = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                        "answer": r["answer"]} for r in rows])
    args = trl.GRPOConfig(
        output_dir=str(Path(cfg.output_dir) / "trl"), max_steps=steps, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.per_device_train_batch_size, num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, loss_type="dapo",
        use_cpu=True, report_to="none", logging_steps=10**6, save_strategy="no", seed=cfg.seed)
    times, curve, reached = [], [], [None]

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, model=None, **k):
            times.append(time.perf_counter() - self.t0)
            if state.global_step % eval_every == 0 or state.global_step == steps:
                acc = held_out_accuracy(model, tokenizer, cfg, *held)
                curve.append((state.global_step, acc))
                reached[0] = reached[0] or (state.global_step if acc >= target else None)

    trainer = trl.GRPOTrainer(model=model, reward_funcs=build_rewards(REWARDS), args=args, train_dataset=data,
                              processing_class=tokenizer, callbacks=[Clock()])
    trainer.train()
    return {"s_per_step": sum(times) / len(times), "curve": curve, "steps_to_target": reached[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", help="policy dir (default: build an untrained tiny MoE policy)")
    p.add_argument("--task", default="synthetic:arithmetic")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval_every", type=int, default=25)
    p.add_argument("--eval_samples", type=int, default=200)
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--max_completion_length", type=int, default=48)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--target", type=float, default=0.8)
    a = p.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="grpo_vs_trl_"))
    policy = a.policy
    if policy is None:
        from r1kit.tiny import build_tiny

        policy = str(build_tiny(work / "tiny").policy)
    cfg = load_config(GRPOConfig, None, dict(
        model_name_or_path=policy, dataset_name=a.task, output_dir=str(work / "r1kit"), max_samples=2000,
        num_generations=a.G, per_device_train_batch_size=a.prompts * a.G, max_completion_length=a.max_completion_length,
        learning_rate=a.lr, max_steps=a.steps, rewards=REWARDS, loss_type="dapo", epsilon_high=0.28,
        lr_scheduler_type="constant_with_warmup", warmup_ratio=0.05, use_cpu=True, log_completions_steps=0))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy)
    eval_rows = load_rows(load_config(GRPOConfig, None, {**{k: getattr(cfg, k) for k in (
        "model_name_or_path", "dataset_name", "output_dir")}, "dataset_split": "test", "max_samples": a.eval_samples}))
    held = (eval_rows, grpo.encode_prompts(eval_rows, tok, cfg))
    start = held_out_accuracy(__import__("transformers").AutoModelForCausalLM.from_pretrained(policy), tok, cfg, *held)
    results = {"start_accuracy": start}
    for name, fn in (("r1kit", run_r1kit), ("trl", run_trl)):
        torch.manual_seed(0)
        results[name] = fn(cfg, a.steps, a.eval_every, a.target, held)
        print(name, json.dumps(results[name]), flush=True)
    ratio = results["r1kit"]["s_per_step"] / results["trl"]["s_per_step"]
    print(f"start accuracy {start:.3f}; s/step r1kit {results['r1kit']['s_per_step']:.3f} vs TRL "
          f"{results['trl']['s_per_step']:.3f} (ratio {ratio:.2f}); steps to {a.target:.0%}: "
          f"r1kit {results['r1kit']['steps_to_target']} vs TRL {results['trl']['steps_to_target']}")


if __name__ == "__main__":
    main()
