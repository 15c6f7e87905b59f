"""r1kit's GRPO loop vs TRL's GRPOTrainer: seconds per step and steps to a held-out accuracy target.

Both trainers start from the same partially competent tiny policy (`benchmarks/_start_point.py`:
build_tiny's dense student, `sft.pretrain`, then `--sft_steps` TRL SFT steps; cached in --work) and
get the same prompts (train-split 2-digit addition, or with `--ops +-` addition and subtraction;
chat template, no prefill), G, prompts per step, completion length, learning rate, temperature,
loss (dapo, clip-higher 0.28) and the same registry rewards (accuracy + 0.2 format). Held-out
accuracy is greedy, on test-split problems, through one evaluator for both (`_start_point.held_out`), scored
strictly (`strict_accuracy`: one non-empty thought, then the answer in `<answer>` in final form, equal to the
gold), not with the training reward, and reported with the mean completion length; evaluation time is left
out of every timing.

Two parts:
- timing: `--timing_steps` steps each, like for like: r1kit with dynamic sampling off and one update
  per rollout batch (num_iterations 1) against TRL's defaults (no dynamic sampling, num_iterations 1);
  then r1kit's defaults (dynamic sampling on, which samples more when groups have no reward variance,
  and num_iterations 2) against TRL with num_iterations 2. Wall seconds and process CPU seconds per
  step (CPU time is the steadier figure on a shared machine).
- learning: r1kit defaults (warmup, dynamic sampling, two updates per rollout batch) vs TRL defaults
  (no warmup, no dynamic sampling, one update; gradient checkpointing off for both) for `--steps`
  steps, held-out accuracy every `--eval_every` steps; steps and training wall seconds until accuracy
  first reaches each of `--targets` (a step is one rollout batch in both trainers).

    python benchmarks/grpo_vs_trl.py --work /tmp/r1kit_bench --steps 400 --eval_every 25
    python benchmarks/grpo_vs_trl.py --work /tmp/r1kit_bench --skip timing --trainers TRL --steps 700
    python benchmarks/grpo_vs_trl.py --quick          # smoke run: 2 timing steps, 4 learning steps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _start_point import DIFFICULTY, TASK, build_start_point, held_out

from r1kit import synth
from r1kit.config import load_config
from r1kit.errors import UserError, exit_on_user_error
from rewards.registry import build_rewards
from rl import grpo
from rl.config import GRPOConfig

REWARDS = [{"name": "accuracy", "weight": 1.0}, {"name": "format", "weight": 0.2}]
LIKE = "r1kit (dynamic sampling off, mu=1)"


class Clock:
    """Wall and process-CPU seconds of the timed sections only (evaluation is excluded). Per-step
    figures are medians that leave out the first step (it starts the math verifier's worker pool and
    warms allocators): on a shared machine a median shrugs off the steps another job slowed down."""

    def __init__(self):
        self.walls: list[float] = []
        self.cpus: list[float] = []

    @property
    def wall(self) -> float:
        return sum(self.walls)

    def start(self) -> None:
        self._w, self._c = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        self.walls.append(time.perf_counter() - self._w)
        self.cpus.append(time.process_time() - self._c)

    def per_step(self) -> dict[str, float]:
        rest = slice(1, None) if len(self.walls) > 1 else slice(None)
        return {"s_per_step": statistics.median(self.walls[rest]), "cpu_s_per_step": statistics.median(self.cpus[rest]),
                "first_step_s": self.walls[0]}


class Curve:
    """Strict held-out accuracy and completion length every `every` steps; remembers when each of `targets`
    was first reached."""

    def __init__(self, held: list[dict], every: int, targets: list[float], last: int, out: Path,
                 stop_when_reached: bool = False):
        self.held, self.every, self.targets, self.last, self.out = held, every, targets, last, out
        self.stop_when_reached = stop_when_reached
        self.points: list[tuple[int, float, float]] = []  # (step, accuracy, mean completion tokens)
        self.reached: dict[float, tuple[int, float]] = {}  # target -> (step, training wall seconds)

    @property
    def stop(self) -> bool:
        """Every target reached and `--stop_when_reached`: the rest of the run would not change the table."""
        return self.stop_when_reached and len(self.reached) == len(self.targets)

    def maybe_eval(self, step: int, model, tokenizer, clock: Clock) -> None:
        if step % self.every and step != self.last:
            return
        self.out.mkdir(parents=True, exist_ok=True)  # the last evaluation's completions stay, to be read
        acc, length = held_out(model, tokenizer, self.held, dump=self.out / "held_out_completions.jsonl")
        model.train()
        self.points.append((step, round(acc, 3), round(length, 1)))
        print(f"step {step}: strict held-out accuracy {acc:.3f}, {length:.1f} tokens per completion "
              f"({clock.wall:.0f} s of training)", flush=True)
        for target in self.targets:
            if acc >= target and target not in self.reached:
                self.reached[target] = (step, round(clock.wall, 1))


def problems(a, split: str, n: int) -> list[dict]:
    """`n` problems of the benchmark task: 2-digit addition/subtraction, or with `--ops +` addition only
    (the issue's reference task), filtered from the synthetic arithmetic task so splits stay disjoint."""
    rows = synth.generate(TASK, min(5 * n // 2, 10_000) if a.ops == "+" else n, a.seed, DIFFICULTY, split=split)
    return [r for r in rows if f" {a.ops} " in r["prompt"]][:n] if a.ops == "+" else rows


def write_train_rows(a, work: Path) -> Path:
    """The training prompts as a JSONL directory, so r1kit and TRL read the very same rows."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in problems(a, "train", 2000)))
    return data


def r1kit_cfg(a, policy: Path, out: Path, **over) -> GRPOConfig:
    """r1kit's defaults plus the shared benchmark settings (warmup, dynamic sampling and two updates per
    rollout batch are defaults)."""
    return load_config(GRPOConfig, None, {
        "model_name_or_path": str(policy), "dataset_name": str(a.data),
        "output_dir": str(out), "max_samples": 2000, "num_generations": a.G,
        "per_device_train_batch_size": a.prompts * a.G, "max_completion_length": a.max_completion_length,
        "learning_rate": a.lr, "max_steps": a.steps, "rewards": REWARDS, "loss_type": "dapo",
        "epsilon_high": 0.28, "temperature": a.temperature, "use_cpu": True, "log_completions_steps": 25,
        "seed": a.seed, **over})


def overrides(pairs: list[str]) -> dict:
    """`--set KEY=VALUE` pairs; values are read as YAML (numbers, booleans, lists)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UserError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    if unknown := sorted(set(out) - known):  # caught here, not after the timing part has run
        raise UserError(f"--set: {', '.join(unknown)} is not a GRPOConfig key (see rl/config.py)")
    return out


def run_r1kit(cfg: GRPOConfig, steps: int, curve: Curve | None) -> dict:
    run = grpo.setup_run(cfg)
    clock, dropped, lengths = Clock(), [], []
    for step in range(1, steps + 1):
        clock.start()
        m = grpo.train_step(run, step)
        clock.stop()
        run.tracker.log(step, m, echo=False)  # per-step metrics in <output_dir>/metrics.jsonl, as a CLI run writes
        dropped.append(m["dropped_groups"])
        lengths.append(m["completion_length"])
        if curve:
            curve.maybe_eval(step, run.accelerator.unwrap_model(run.model), run.tokenizer, clock)
            if curve.stop:
                break
    grpo.teardown_run(run)
    return {**clock.per_step(), "dropped_groups": sum(dropped) / len(dropped), "train_wall_s": clock.wall,
            "completion_length": sum(lengths) / len(lengths)}


def run_trl(a, policy: Path, out: Path, steps: int, curve: Curve | None, num_iterations: int = 1) -> dict:
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    rows = problems(a, "train", 2000)
    data = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                        "answer": r["answer"]} for r in rows])
    # TRL counts optimizer steps: with num_iterations k it generates every k-th step, so `steps` rollout
    # batches are k * steps of its steps, and the clock sums each run of k into one rollout batch.
    args = trl.GRPOConfig(
        output_dir=str(out), max_steps=steps * num_iterations, learning_rate=a.lr, per_device_train_batch_size=a.prompts * a.G,
        num_generations=a.G, max_completion_length=a.max_completion_length, temperature=a.temperature, loss_type="dapo",
        epsilon_high=0.28, use_cpu=True, bf16=False, report_to="none", logging_steps=10**6, save_strategy="no",
        seed=a.seed, gradient_checkpointing=False, dataloader_num_workers=0, num_iterations=num_iterations)
    clock = Clock()

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            clock.start()

        def on_step_end(self, _args, state, control, model=None, **__):
            clock.stop()
            if curve and state.global_step % num_iterations == 0:  # after each rollout batch's last update
                curve.maybe_eval(state.global_step // num_iterations, model, tokenizer, clock)
                if curve.stop:  # never reset: the default flow callback sets it at max_steps
                    control.should_training_stop = True

    trainer = trl.GRPOTrainer(model=model, reward_funcs=build_rewards(REWARDS), args=args, train_dataset=data,
                              processing_class=tokenizer, callbacks=[Timer()])
    trainer.train()
    k = num_iterations
    clock.walls = [sum(clock.walls[i:i + k]) for i in range(0, len(clock.walls), k)]
    clock.cpus = [sum(clock.cpus[i:i + k]) for i in range(0, len(clock.cpus), k)]
    return {**clock.per_step(), "train_wall_s": clock.wall}


def timing(a, policy: Path, work: Path) -> dict[str, dict]:
    """The like-for-like pair twice, interleaved (A B A B), so a slow spell on a shared machine hits both;
    then r1kit's defaults and TRL at the same number of updates per rollout batch, once each."""
    n = a.timing_steps + 1
    runs = {
        LIKE: lambda i: run_r1kit(
            r1kit_cfg(a, policy, work / f"t_off{i}", dynamic_sampling=False, num_iterations=1), n, None),
        "TRL": lambda i: run_trl(a, policy, work / f"t_trl{i}", n, None),
    }
    parts: dict[str, list[dict]] = {name: [] for name in runs}
    for i in range(2):
        for name, fn in runs.items():
            torch.manual_seed(a.seed)
            parts[name].append(fn(i))
            print(name, json.dumps(parts[name][-1]), flush=True)
    out = {name: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for name, rs in parts.items()}
    mu = r1kit_cfg(a, policy, work / "t_on").num_iterations
    for name, fn in ((f"r1kit defaults (mu={mu})", lambda: run_r1kit(r1kit_cfg(a, policy, work / "t_on"), n, None)),
                     (f"TRL num_iterations={mu}", lambda: run_trl(a, policy, work / "t_trl_mu", n, None, mu))):
        torch.manual_seed(a.seed)
        out[name] = fn()
        print(name, json.dumps(out[name]), flush=True)
    return out


def learning(a, policy: Path, work: Path, held: list[dict]) -> dict[str, dict]:
    out = {}
    for name in a.trainers:
        torch.manual_seed(a.seed)
        curve = Curve(held, a.eval_every, a.targets, a.steps, work / f"l_{name.lower()}", a.stop_when_reached)
        if name == "r1kit":
            res = run_r1kit(r1kit_cfg(a, policy, work / "l_r1kit", **a.set), a.steps, curve)
        else:
            res = run_trl(a, policy, work / "l_trl", a.steps, curve, a.trl_num_iterations)
        out[name] = {**res, "curve": curve.points, "reached": {str(t): r for t, r in curve.reached.items()}}
        print(name, json.dumps(out[name]), flush=True)
    return out


def table(times: dict, learn: dict, start: tuple[float, float], targets: list[float], steps: int) -> str:
    lines = [f"start: strict held-out accuracy {start[0]:.3f}, {start[1]:.1f} tokens per completion"]
    if times:
        # each r1kit row against the TRL row with the same number of updates per rollout batch
        names = list(times)
        peer = {LIKE: "TRL", names[2]: names[3]}
        lines += ["", f"{'trainer':<42} {'s/step':>8} {'cpu s/step':>11} {'vs TRL':>7} {'dropped':>8}"]
        for name, r in times.items():
            ratio = f"{r['s_per_step'] / times[peer[name]]['s_per_step']:>7.2f}" if name in peer else f"{'':>7}"
            lines.append(f"{name:<42} {r['s_per_step']:>8.2f} {r['cpu_s_per_step']:>11.2f} "
                         f"{ratio} {r.get('dropped_groups', 0.0):>8.2f}")
    if learn:
        lines += ["", f"{'defaults':<8} {'s/step':>7}  curve (step, strict held-out greedy accuracy, completion tokens)"]
        lines += [f"{name:<8} {r['s_per_step']:>7.2f}  {r['curve']}" for name, r in learn.items()]
        lines += ["", f"{'target':>7} {'r1kit steps (train s)':>22} {'TRL steps (train s)':>20} {'steps r1kit/TRL':>16}"]
        for t in targets:
            got = [learn[n]["reached"].get(str(t)) if n in learn else None for n in ("r1kit", "TRL")]
            cells = [f"{g[0]} ({g[1]})" if g else "not reached" for g in got]
            never = f"<= {got[0][0] / steps:.2f} (TRL: not in {steps})" if got[0] else "-"
            ratio = f"{got[0][0] / got[1][0]:.2f}" if all(got) else never
            lines.append(f"{t:>7.0%} {cells[0]:>22} {cells[1]:>20} {ratio:>16}")
    return "\n".join(lines)


@exit_on_user_error
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/r1kit_grpo_vs_trl", help="start-point cache and run outputs")
    p.add_argument("--policy", help="start from this policy dir instead of building the start point")
    p.add_argument("--model", choices=["student", "policy"], default="student",
                   help="build_tiny's dense Qwen3 student, or its DeepseekV3 MoE policy (MLA, shared + routed experts)")
    p.add_argument("--sft_steps", type=int, default=600,
                   help="TRL SFT steps of the built start point (600: ~65%% strict held-out 2-digit addition)")
    p.add_argument("--steps", type=int, default=200, help="learning-run steps per trainer")
    p.add_argument("--timing_steps", type=int, default=10, help="timed steps per trainer, plus one warm-up step")
    p.add_argument("--eval_every", type=int, default=20)
    p.add_argument("--eval_samples", type=int, default=200)
    p.add_argument("--prompts", type=int, default=16, help="prompts per step")
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--ops", choices=["+-", "+"], default="+",
                   help="2-digit addition and subtraction, or addition only (the issue's reference task)")
    p.add_argument("--max_completion_length", type=int, default=64, help="a worked 2-digit answer is ~45 tokens")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--temperature", type=float, default=1.0, help="rollout temperature of both trainers")
    p.add_argument("--targets", type=float, nargs="+", default=[0.6, 0.7, 0.8],
                   help="held-out accuracies whose steps-to-reach are compared (the issue's target is 0.8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", choices=["timing", "learning"], help="run only the other part")
    p.add_argument("--trainers", nargs="+", choices=["r1kit", "TRL"], default=["r1kit", "TRL"],
                   help="learning part: which trainers to run (e.g. TRL alone for a longer run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an r1kit GRPOConfig key in the learning run (repeatable), e.g. --set scale_rewards=batch")
    p.add_argument("--trl_num_iterations", type=int, default=1,
                   help="learning part: TRL's updates per rollout batch (1 is its default; 2 matches r1kit's)")
    p.add_argument("--stop_when_reached", action="store_true",
                   help="learning part: end a trainer's run once it has reached every target (saves CPU)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 timing steps, 4 learning steps, 32 evals")
    a = p.parse_args()
    a.set = overrides(a.set)
    if a.policy and not (Path(a.policy) / "config.json").is_file():
        raise UserError(f"--policy {a.policy}: no model there (expected a directory with config.json)")
    if a.quick:
        a.steps, a.timing_steps, a.eval_every, a.eval_samples = 4, 1, 2, 32
    torch.set_num_threads(a.threads)
    work = Path(a.work)
    policy = Path(a.policy) if a.policy else build_start_point(work / "start", sft_steps=a.sft_steps, base=a.model)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a.data = write_train_rows(a, work)
    held = problems(a, "test", a.eval_samples)
    start = held_out(AutoModelForCausalLM.from_pretrained(policy), AutoTokenizer.from_pretrained(policy), held)
    times = timing(a, policy, work) if a.skip != "timing" else {}
    learn = learning(a, policy, work, held) if a.skip != "learning" else {}
    print(table(times, learn, start, a.targets, a.steps))
    (work / "results.json").write_text(json.dumps({"start": start, "timing": times, "learning": learn}, indent=1))


if __name__ == "__main__":
    main()
