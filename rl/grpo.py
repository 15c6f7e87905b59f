"""GRPO with verifiable rewards: r1kit's own loop, top to bottom.

Launch (one process, or several through accelerate: DDP, FSDP2, DeepSpeed ZeRO configs):

    r1kit grpo --config recipes/tiny/grpo.yaml
    accelerate launch -m rl.grpo --config recipes/tiny/grpo.yaml
    accelerate launch --multi_gpu --num_processes 2 -m rl.grpo --config recipes/tiny/grpo.yaml --use_cpu true

One step: sample G completions for each prompt (engine), score them with the recipe's rewards,
turn rewards into group-relative advantages, then take `num_iterations` optimizer steps on the
clipped surrogate (rl/losses.py picks the variant once).

Kept from the papers: group-relative advantages and the clipped ratio (DeepSeekMath), k3 KL to a
frozen reference (only loaded when beta > 0), R1's <think> format with optional prefill; from DAPO
clip-higher, token-level loss, dynamic sampling and overlong masking; Dr. GRPO's unnormalised loss;
GSPO's sequence ratio and routing replay for MoE; DeepSeek-V3's auxiliary-loss-free expert balancing.
Changed: an unscorable completion (a reward returned None) is left out of its group's statistics and
gets advantage 0; when dynamic sampling cannot fill the batch in `max_sampling_rounds`, the batch is
topped up with zero-variance groups (no policy gradient) so every process runs the same micro-batches.
Engine/trainer mismatch is corrected with truncated importance sampling, min(pi_old/pi_engine, C).
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from r1kit.checkpoint import clean_temp, load_checkpoint, resolve_resume, save_checkpoint, save_model
from r1kit.config import parse_config, to_dict
from r1kit.errors import UserError, exit_on_user_error
from rl.config import GRPOConfig
from rl.engine import Rollout, SamplingSettings, build_engine, left_pad
from rl.losses import LossFn, LossSettings, Normalizers, PolicyBatch, get_loss, group_advantages

STDOUT_KEYS = ("reward", "accuracy", "eval/accuracy", "loss", "kl", "completion_length", "dropped_groups",
               "grad_norm", "tokens_per_s")


@dataclass
class Groups:
    """Scored completions, whole groups of G consecutive rows, before tensors are built."""

    rows: list[dict] = field(default_factory=list)  # the prompt row of each completion
    prompt_ids: list[list[int]] = field(default_factory=list)
    rollout: Rollout = field(default_factory=lambda: Rollout([], [], []))
    rewards: list[float] = field(default_factory=list)  # weighted sum; NaN = unscorable
    per_func: list[list[float]] = field(default_factory=list)  # (N, K) NaN = None

    def extend(self, other: Groups) -> None:
        for name in ("rows", "prompt_ids", "rewards", "per_func"):
            getattr(self, name).extend(getattr(other, name))
        for name in ("completion_ids", "logprobs", "truncated"):
            getattr(self.rollout, name).extend(getattr(other.rollout, name))

    def take(self, idx: list[int]) -> Groups:
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        r = self.rollout
        return Groups(pick(self.rows), pick(self.prompt_ids), Rollout(pick(r.completion_ids), pick(r.logprobs),
                      pick(r.truncated)), pick(self.rewards), pick(self.per_func))


# ----------------------------------------------------------------------------------- rewards


def score(run: Run, completions: list[str], rows: list[dict], token_ids: list[list[int]]) -> tuple[list, list]:
    """Weighted reward per completion (NaN when every function returned None) and the raw (N, K) table."""
    columns = {k: [r.get(k) for r in rows] for k in rows[0]}
    table = []
    for fn in run.rewards:
        values = fn(completions, **columns, completion_token_ids=token_ids)
        table.append([math.nan if v is None else float(v) for v in values])
    per_func = [list(col) for col in zip(*table)]  # (N, K)
    weights = [fn.weight for fn in run.rewards]
    total = [math.nan if all(math.isnan(v) for v in row) else
             sum(w * v for w, v in zip(weights, row) if not math.isnan(v)) for row in per_func]
    return total, per_func


def sample_groups(run: Run, n_prompts: int) -> Groups:
    """Draw prompts, sample G completions each, score them."""
    cfg = run.cfg
    idx = run.stream.take(n_prompts)
    rows = [run.rows[i] for i in idx for _ in range(cfg.num_generations)]
    prompts = [run.prompt_ids[i] for i in idx for _ in range(cfg.num_generations)]
    rollout = run.engine.generate(prompts, run.sampling)
    texts = run.tokenizer.batch_decode(rollout.completion_ids, skip_special_tokens=True)
    rewards, per_func = score(run, texts, rows, rollout.completion_ids)
    return Groups(rows, prompts, rollout, rewards, per_func)


def _varied(rewards: list[float]) -> bool:
    scored = [r for r in rewards if not math.isnan(r)]
    return len(scored) > 1 and max(scored) > min(scored)


def collect(run: Run) -> tuple[Groups, dict[str, float]]:
    """One step's local batch. With dynamic sampling (DAPO sec. 3.2) groups whose rewards are all equal
    are set aside and more prompts are sampled, for at most `max_sampling_rounds` extra rounds."""
    cfg, G = run.cfg, run.cfg.num_generations
    need = run.local_batch // G
    kept, dropped, sampled = Groups(), Groups(), 0
    for round_ in range(cfg.max_sampling_rounds + 1):
        short = need - len(kept.rows) // G
        # Every process runs the same number of rounds, so collective forwards (FSDP) stay in step.
        if run.reduce_max(float(short)) <= 0 or (round_ > 0 and not cfg.dynamic_sampling):
            break
        if short > 0:
            new = sample_groups(run, short)
            sampled += short
            for g in range(short):
                part = new.take(list(range(g * G, (g + 1) * G)))
                (kept if _varied(part.rewards) or not cfg.dynamic_sampling else dropped).extend(part)
    n_dropped = len(dropped.rows) // G
    filler = need - len(kept.rows) // G
    kept.extend(dropped.take(list(range(filler * G))))  # zero-variance groups: no policy gradient
    return kept, {"dropped_groups": n_dropped / max(sampled, 1), "sampled_groups": float(sampled)}


# -------------------------------------------------------------------------------- tensors


@dataclass
class StepBatch:
    """The local batch as tensors. N completions, P prompt positions, T completion positions."""

    input_ids: torch.Tensor  # (N, P+T) left-padded prompt + right-padded completion
    attention_mask: torch.Tensor  # (N, P+T)
    position_ids: torch.Tensor  # (N, P+T) counted from the first real token, as in generation
    completion_mask: torch.Tensor  # (N, T) float, tokens that count in the loss
    advantages: torch.Tensor  # (N,)
    engine_logps: torch.Tensor  # (N, T)
    old_logps: torch.Tensor | None = None  # (N, T) when it differs from the current policy's
    ref_logps: torch.Tensor | None = None  # (N, T) when beta > 0

    def slice(self, i: int, j: int) -> StepBatch:
        cut = lambda t: None if t is None else t[i:j]  # noqa: E731
        return StepBatch(*[cut(getattr(self, f)) for f in self.__dataclass_fields__])


def _pad_right(rows: list[list], value, width: int, dtype) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=dtype)
    return out


def to_tensors(run: Run, groups: Groups, advantages: torch.Tensor) -> StepBatch:
    ro, dev = groups.rollout, run.device
    prompt, prompt_mask = left_pad(groups.prompt_ids, run.tokenizer.pad_token_id)
    width = max(1, max(len(c) for c in ro.completion_ids))
    comp = _pad_right(ro.completion_ids, run.tokenizer.pad_token_id, width, torch.long)
    real = _pad_right([[1] * len(c) for c in ro.completion_ids], 0, width, torch.long)
    attn = torch.cat([prompt_mask, real], 1)
    counted = real.float()
    if run.cfg.mask_truncated_completions:  # DAPO overlong filtering: a cut-off answer has no verdict
        counted[torch.tensor(ro.truncated)] = 0.0
    return StepBatch(
        input_ids=torch.cat([prompt, comp], 1).to(dev), attention_mask=attn.to(dev),
        position_ids=(attn.cumsum(1) - 1).clamp(min=0).to(dev), completion_mask=counted.to(dev),
        advantages=advantages.to(dev), engine_logps=_pad_right(ro.logprobs, 0.0, width, torch.float32).to(dev),
    )


def token_logps(model, b: StepBatch, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T) log-probs of the completion tokens and (N, T) entropies (detached) under `model`."""
    T = b.completion_mask.shape[1]
    logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                   use_cache=False, logits_to_keep=T + 1).logits[:, :-1].float() / temperature  # (N, T, V)
    targets = b.input_ids[:, -T:]
    # log p(token) = logit - logsumexp: avoids materialising a second (N, T, V) log-softmax tensor.
    lse = torch.logsumexp(logits, -1)
    logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    with torch.no_grad():
        probs = torch.softmax(logits, -1)
        entropy = lse - (probs * logits).sum(-1)
    return logps, entropy


# ------------------------------------------------------------------------------- the update


def _micro_batches(run: Run, n: int) -> list[tuple[int, int]]:
    size = run.cfg.per_device_train_batch_size
    return [(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def fill_old_and_ref(run: Run, b: StepBatch) -> None:
    """Old log-probs when they differ from the current policy's (mu > 1, or an inexact engine), recording
    the routing for replay; reference log-probs when beta > 0."""
    need_old = run.cfg.num_iterations > 1 or not run.engine.exact_logprobs
    olds, refs = [], []
    for k, (i, j) in enumerate(_micro_batches(run, len(b.advantages))):
        mb = b.slice(i, j)
        if need_old:
            with run.replay_ctx("record", k):
                olds.append(token_logps(run.model, mb, run.cfg.temperature)[0])
        if run.cfg.beta > 0:
            with run.ref_scope() as ref:
                refs.append(token_logps(ref, mb, run.cfg.temperature)[0])
    b.old_logps = torch.cat(olds) if olds else None
    b.ref_logps = torch.cat(refs) if refs else None


def update(run: Run, b: StepBatch, norm: Normalizers) -> dict[str, float]:
    """One optimizer step over the local batch: accumulate micro-batch gradients, clip, step."""
    sums: dict[str, float] = {"loss": 0.0, "entropy": 0.0}
    spans = _micro_batches(run, len(b.advantages))
    finite = True
    run.load_tracker_on(True)
    for k, (i, j) in enumerate(spans):
        mb = b.slice(i, j)
        sync = run.accelerator.no_sync(run.model) if k < len(spans) - 1 else run.nullcontext()
        with sync, run.replay_ctx("replay", k):
            run.set_load_mask(mb)
            logps, entropy = token_logps(run.model, mb, run.cfg.temperature)
            old = logps.detach() if mb.old_logps is None else mb.old_logps
            is_w = None
            if not run.engine.exact_logprobs:  # truncated IS: weight = min(pi_old / pi_engine, C)
                is_w = torch.exp(old - mb.engine_logps).clamp(max=run.cfg.importance_sampling_cap)
            pb = PolicyBatch(logps, old, mb.advantages, mb.completion_mask, is_w, mb.ref_logps)
            loss, stats = run.loss_fn(pb, run.loss_settings, norm)
            loss = loss + run.aux_loss() / len(spans)
            finite &= bool(torch.isfinite(loss))
            # DDP averages gradients over processes; the normalisers already count every process.
            run.accelerator.backward(loss * run.accelerator.num_processes)
        sums["loss"] += loss.item()
        sums["entropy"] += (entropy * mb.completion_mask).sum().item()
        for key, v in stats.items():
            sums[key] = sums.get(key, 0.0) + v.item()
    return {**_finish_step(run, finite), **_token_means(run, sums, norm)}


def _finish_step(run: Run, finite_loss: bool) -> dict[str, float]:
    params = [p for p in run.model.parameters() if p.requires_grad]
    max_norm = run.cfg.max_grad_norm or math.inf
    grad_norm = float(run.accelerator.clip_grad_norm_(params, max_norm))
    ok = run.reduce_max(0.0 if finite_loss and math.isfinite(grad_norm) else 1.0) == 0
    if ok:
        run.optimizer.step()
        run.scheduler.step()
    else:
        run.warn("non-finite loss or gradient: step skipped (no weights changed)")
    run.optimizer.zero_grad(set_to_none=True)
    return {"grad_norm": grad_norm, "skipped_steps": float(not ok), "lr": run.scheduler.get_last_lr()[0],
            **run.after_optimizer_step()}


def _token_means(run: Run, sums: dict[str, float], norm: Normalizers) -> dict[str, float]:
    local = {k: v for k, v in sums.items() if k != "loss"}
    tokens = max(norm.num_tokens, 1.0)
    out = {k: run.reduce_sum(v) / tokens for k, v in local.items()}
    out["loss"] = run.reduce_sum(sums["loss"])
    return out


# ------------------------------------------------------------------------------------ a step


def advantages_for(run: Run, groups: Groups) -> torch.Tensor:
    rewards = torch.tensor(groups.rewards, dtype=torch.float32)  # (N,) NaN = unscorable
    batch_std = None
    if run.cfg.scale_rewards == "batch":
        valid = rewards[~rewards.isnan()]
        n, s, sq = run.reduce_sum(valid.numel()), run.reduce_sum(valid.sum().item()), run.reduce_sum(
            valid.pow(2).sum().item())
        batch_std = torch.tensor(math.sqrt(max(sq - s * s / max(n, 1), 0.0) / max(n - 1, 1)))
    return group_advantages(rewards, run.cfg.num_generations, run.cfg.scale_rewards, batch_std)


def rollout_metrics(run: Run, groups: Groups) -> dict[str, float]:
    ro, N = groups.rollout, len(groups.rewards)
    mean = lambda xs: run.reduce_mean(sum(xs) / max(len(xs), 1))  # noqa: E731
    scored = [r for r in groups.rewards if not math.isnan(r)]
    out = {"reward": mean(scored), "unscorable": mean([math.isnan(r) for r in groups.rewards]),
           "completion_length": mean([len(c) for c in ro.completion_ids]), "truncated": mean(ro.truncated)}
    for k, fn in enumerate(run.rewards):
        col = [row[k] for row in groups.per_func if not math.isnan(row[k])]
        out[f"rewards/{fn.name}"] = mean(col)
        if fn.name == run.cfg.eval_reward:
            out["accuracy"] = mean([v >= 1.0 for v in col])
    if out["truncated"] > run.cfg.max_truncated_fraction:
        run.warn(f"{out['truncated']:.0%} of completions hit max_completion_length={run.cfg.max_completion_length}:"
                 " raise it, or lower the reward for long answers (overlong reward); the loss sees cut-off answers.")
    out["num_completions"] = float(N)
    return out


def train_step(run: Run, step: int) -> dict[str, float]:
    t0 = time.perf_counter()
    groups, metrics = collect(run)
    metrics |= rollout_metrics(run, groups)
    if run.reduce_max(float(any(math.isinf(v) for v in groups.rewards))) > 0:
        run.warn(f"step {step}: a reward function returned inf/NaN: step skipped; check the reward functions.")
        return {**metrics, "skipped_steps": 1.0}
    batch = to_tensors(run, groups, advantages_for(run, groups))
    fill_old_and_ref(run, batch)
    norm = Normalizers(num_seqs=run.reduce_sum(float(len(batch.advantages))),
                       num_tokens=run.reduce_sum(batch.completion_mask.sum().item()))
    for _ in range(run.cfg.num_iterations):
        metrics |= update(run, batch, norm)
    run.replay_clear()
    elapsed = time.perf_counter() - t0
    metrics["step_time"] = elapsed
    metrics["tokens_per_s"] = run.reduce_sum(float(batch.attention_mask.sum())) / elapsed
    if run.cfg.log_completions_steps and step % run.cfg.log_completions_steps == 0:
        run.tracker.log_samples(step, sample_rows(run, groups, batch.advantages))
    return metrics


def sample_rows(run: Run, groups: Groups, adv: torch.Tensor) -> list[dict]:
    n = min(run.cfg.num_completions_to_log, len(groups.rows))
    texts = run.tokenizer.batch_decode(groups.rollout.completion_ids[:n], skip_special_tokens=True)
    return [{"prompt": groups.rows[i]["prompt"], "completion": texts[i], "reward": groups.rewards[i],
             "advantage": adv[i].item(), **{f.name: groups.per_func[i][k] for k, f in enumerate(run.rewards)}}
            for i in range(n)]


@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """Held-out greedy accuracy: share of eval prompts whose answer scores >= 1 on `eval_reward`."""
    ids, rows = run.eval_prompts, run.eval_rows
    greedy = replace(run.sampling, greedy=True)
    rollout = run.engine.generate(ids, greedy)
    texts = run.tokenizer.batch_decode(rollout.completion_ids, skip_special_tokens=True)
    columns = {k: [r.get(k) for r in rows] for k in rows[0]}
    scores = run.eval_fn(texts, **columns, completion_token_ids=rollout.completion_ids)
    correct = run.reduce_sum(float(sum(s is not None and s >= 1.0 for s in scores)))
    return {"eval/accuracy": correct / max(run.reduce_sum(float(len(rows))), 1.0)}


def train(run: Run) -> None:
    cfg = run.cfg
    for step in range(run.start_step + 1, run.max_steps + 1):
        metrics = train_step(run, step)
        if cfg.eval_steps and (step % cfg.eval_steps == 0 or step == run.max_steps):
            metrics |= evaluate(run)
        if step % cfg.logging_steps == 0 or step == run.max_steps:
            run.tracker.log(step, metrics)
        run.progress.update(1)
        if (cfg.save_steps and step % cfg.save_steps == 0) or step == run.max_steps:
            save(run, step)
    save_model(run.accelerator, run.model, run.tokenizer, cfg.output_dir)  # the final policy, ready to load


def save(run: Run, step: int) -> None:
    save_checkpoint(run.accelerator, run.cfg.output_dir, step, model=run.model, tokenizer=run.tokenizer,
                    state={"max_steps": run.max_steps}, data_state=run.stream.state(),
                    save_total_limit=run.cfg.save_total_limit)


def resume(run: Run) -> None:
    clean_temp(run.cfg.output_dir) if run.accelerator.is_main_process else None
    path = resolve_resume(run.cfg.resume_from_checkpoint, run.cfg.output_dir)
    if path is None:
        return
    state, data_state = load_checkpoint(run.accelerator, path)
    run.start_step = state["step"]
    run.stream.load_state(data_state)
    run.progress.update(run.start_step)
    print(f"resumed from {path} at step {run.start_step}", flush=True)


# ------------------------------------------------------------------------------------ setup


class PromptStream:
    """This process's prompts in a seeded order, reshuffled each epoch; its position is checkpointed."""

    def __init__(self, n_rows: int, seed: int, rank: int, world: int):
        self.indices = list(range(rank, n_rows, world))  # disjoint shards, so processes never share a prompt
        if not self.indices:
            raise UserError(f"{n_rows} prompts cannot feed {world} processes; use more data or fewer processes.")
        self.seed, self.epoch, self.offset = seed, 0, 0
        self._order = self._shuffled()

    def _shuffled(self) -> list[int]:
        order = list(self.indices)
        random.Random(self.seed + self.epoch).shuffle(order)
        return order

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.offset == len(self._order):
                self.epoch, self.offset = self.epoch + 1, 0
                self._order = self._shuffled()
            out.append(self._order[self.offset])
            self.offset += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.offset = state["epoch"], state["offset"]
        self._order = self._shuffled()


@dataclass
class Run:
    """Everything a run holds at runtime (the config stays read-only)."""

    cfg: GRPOConfig
    accelerator: Any
    model: Any
    tokenizer: Any
    engine: Any
    rewards: list
    eval_fn: Any
    rows: list[dict]
    prompt_ids: list[list[int]]
    eval_rows: list[dict]
    eval_prompts: list[list[int]]
    stream: PromptStream
    sampling: SamplingSettings
    loss_fn: LossFn
    loss_settings: LossSettings
    optimizer: Any
    scheduler: Any
    tracker: Any
    progress: Any
    max_steps: int
    ref_model: Any = None
    load_tracker: Any = None
    replay: Any = None
    start_step: int = 0

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def local_batch(self) -> int:
        return self.cfg.per_device_train_batch_size * self.cfg.gradient_accumulation_steps

    def reduce_sum(self, x: float) -> float:
        return float(self.accelerator.reduce(torch.tensor(float(x), device=self.device), reduction="sum"))

    def reduce_mean(self, x: float) -> float:
        return self.reduce_sum(x) / self.accelerator.num_processes

    def reduce_max(self, x: float) -> float:
        t = torch.tensor(float(x), device=self.device)
        return float(self.accelerator.gather(t.unsqueeze(0)).max())

    def warn(self, msg: str) -> None:
        if self.accelerator.is_main_process:
            print(f"WARNING: {msg}", file=sys.stderr, flush=True)

    def nullcontext(self):
        return contextlib.nullcontext()

    def replay_ctx(self, mode: str, key: int):
        """R2 routing replay: record the old policy's experts, force them on the new policy's forward."""
        if self.replay is None or (mode == "replay" and self.cfg.num_iterations == 1 and self.engine.exact_logprobs):
            return contextlib.nullcontext()
        return self.replay.record(key) if mode == "record" else self.replay.replay(key)

    def replay_clear(self) -> None:
        if self.replay is not None:
            self.replay.clear()

    @contextlib.contextmanager
    def ref_scope(self):
        if self.ref_model is not None:
            yield self.ref_model
        else:  # LoRA: the base model with adapters switched off is the reference, no copy needed
            with self.accelerator.unwrap_model(self.model).disable_adapter():
                yield self.model

    def load_tracker_on(self, on: bool) -> None:
        if self.load_tracker is not None:
            self.load_tracker.enabled = on

    def set_load_mask(self, mb: StepBatch) -> None:
        if self.load_tracker is not None:  # count routing of the completion tokens only
            prompt = torch.zeros_like(mb.attention_mask[:, :-mb.completion_mask.shape[1]])
            self.load_tracker.set_mask(torch.cat([prompt, mb.attention_mask[:, prompt.shape[1]:]], 1))

    def aux_loss(self) -> torch.Tensor | float:
        if self.load_tracker is None or self.cfg.router_aux_loss_coef == 0:
            return 0.0
        return self.load_tracker.aux_loss(self.cfg.router_aux_loss_coef)

    def after_optimizer_step(self) -> dict[str, float]:
        """DeepSeek-V3 aux-loss-free balancing from this step's routing counts, plus load metrics."""
        if self.load_tracker is None:
            return {}
        from rl import moe

        t = self.load_tracker
        t.enabled = False
        t.all_reduce()  # every process applies the same bias update
        counts = t.counts()
        out = moe.expert_load_metrics(counts)
        if self.cfg.moe_bias_update_speed > 0:
            out |= moe.update_expert_bias(self.accelerator.unwrap_model(self.model), counts,
                                          self.cfg.moe_bias_update_speed)
        t.reset()
        return out


def encode_prompts(rows: list[dict], tokenizer, cfg: GRPOConfig) -> list[list[int]]:
    """Chat-template each prompt (+ system prompt, + `<think>` prefill); too long is a user error."""
    out = []
    for i, row in enumerate(rows):
        text = generation_prompt(row["prompt"], tokenizer, cfg)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) > cfg.max_prompt_length:
            raise UserError(
                f"prompt {i} of '{cfg.dataset_name}' is {len(ids)} tokens, over max_prompt_length="
                f"{cfg.max_prompt_length}: raise max_prompt_length or filter long rows out of the data."
            )
        out.append(ids)
    return out


def generation_prompt(prompt: Any, tokenizer, cfg: GRPOConfig) -> str:
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    if cfg.system_prompt:
        messages = [{"role": "system", "content": cfg.system_prompt}] + messages
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                         prefill_think=cfg.prefill_think)
    if cfg.prefill_think and not text.rstrip().endswith("<think>"):
        text += "<think>\n"  # templates that ignore `prefill_think` still get the R1 prefill
    return text


def check_format_reachable(rewards: list, prefilled: bool) -> None:
    """Fail fast when a format reward cannot be earned: e.g. the template prefills `<think>` but the
    reward still wants the completion to open it, so every completion would score 0 forever."""
    ideal = ["<think>\nreasoning\n</think>\n<answer>1</answer>", "<think>\nreasoning\n</think>\n\\boxed{1}"]
    emitted = [t.removeprefix("<think>\n") if prefilled else t for t in ideal]
    for fn in rewards:
        if fn.name in ("format", "tag_count") and max(fn(emitted)) < 1.0:
            hint = "set params: {think_prefilled: true}" if prefilled else "check its params"
            raise UserError(
                f"reward '{fn.name}' gives a well-formed completion {max(fn(emitted))} under this chat template"
                f" (prefill_think={prefilled}), so it can never be earned: {hint}."
            )


def load_policy(cfg: GRPOConfig, device: torch.device):
    from transformers import AutoModelForCausalLM

    dtype = {"auto": torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32,
             "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    kw = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kw["attn_implementation"] = cfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **kw)
    ref = None
    if cfg.beta > 0 and not cfg.use_peft:
        ref = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, **kw).eval().requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.use_peft:
        from rl.lora import apply_lora

        model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    return model, ref


def schedule(cfg: GRPOConfig, optimizer, total: int):
    from transformers import get_scheduler

    return get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total),
                         num_training_steps=total)


def _moe_hooks(cfg: GRPOConfig, model) -> tuple[Any, Any]:
    from rl import moe

    if not moe.is_moe(model):
        return None, None
    tracker = moe.ExpertLoadTracker(model, with_aux_loss=cfg.router_aux_loss_coef > 0)
    tracker.enabled = False
    return tracker, moe.RoutingReplay(model) if cfg.routing_replay else None


def setup_run(cfg: GRPOConfig) -> Run:
    from accelerate import Accelerator
    from rewards.registry import build_rewards
    from transformers import AutoTokenizer
    from tqdm import tqdm

    from r1kit.data import load_rows
    from r1kit.tracking import Tracker

    bf16 = cfg.bf16 if cfg.bf16 is not None else (torch.cuda.is_available() and not cfg.use_cpu
                                                     and torch.cuda.is_bf16_supported())
    acc = Accelerator(cpu=cfg.use_cpu, mixed_precision="bf16" if bf16 else "no")
    torch.manual_seed(cfg.seed + acc.process_index)  # different samples per process, reproducible per run
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_name_or_path or cfg.model_name_or_path)
    rewards = build_rewards(cfg.rewards)
    check_format_reachable(rewards, cfg.prefill_think)
    rows = load_rows(cfg)
    prompt_ids = encode_prompts(rows, tokenizer, cfg)
    eval_rows, eval_prompts, eval_fn = [], [], None
    if cfg.eval_steps:
        eval_cfg = replace(cfg, dataset_split=cfg.eval_split, max_samples=cfg.eval_max_samples)
        eval_rows = load_rows(eval_cfg)[acc.process_index::acc.num_processes]
        eval_prompts = encode_prompts(eval_rows, tokenizer, cfg)
        eval_fn = build_rewards([{"name": cfg.eval_reward}])[0]
    model, ref = load_policy(cfg, acc.device)
    tracker_hooks, replay = _moe_hooks(cfg, model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    prompts_per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps // cfg.num_generations
    max_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(
        len(rows) * cfg.num_train_epochs / (prompts_per_step * acc.num_processes))
    scheduler = schedule(cfg, optimizer, max_steps * cfg.num_iterations)
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    ref = acc.prepare_model(ref, evaluation_mode=True) if ref is not None else None
    engine = build_engine(cfg.engine, acc.unwrap_model(model), tokenizer)
    settings = LossSettings(cfg.epsilon, cfg.clip_high, cfg.beta, cfg.max_completion_length)
    sampling = SamplingSettings(cfg.max_completion_length, cfg.temperature, cfg.top_p, cfg.top_k)
    tracker = Tracker(cfg.output_dir, cfg.report_to, to_dict(cfg), is_main=acc.is_main_process,
                      stdout_keys=STDOUT_KEYS)
    progress = tqdm(total=max_steps, desc="grpo", unit="step", disable=not acc.is_main_process, file=sys.stderr)
    return Run(cfg, acc, model, tokenizer, engine, rewards, eval_fn, rows, prompt_ids, eval_rows, eval_prompts,
               PromptStream(len(rows), cfg.seed, acc.process_index, acc.num_processes), sampling,
               get_loss(cfg.loss_type), settings, optimizer, scheduler, tracker, progress, max_steps, ref,
               tracker_hooks, replay)


def teardown_run(run: Run) -> None:
    run.progress.close()
    run.tracker.close()
    if run.load_tracker is not None:
        run.load_tracker.remove()
    if run.replay is not None:
        run.replay.remove()
    run.accelerator.end_training()


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(GRPOConfig, argv, prog="r1kit grpo")
    run = setup_run(cfg)
    resume(run)
    train(run)
    teardown_run(run)


if __name__ == "__main__":
    main()
