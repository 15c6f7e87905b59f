"""GRPO with verifiable rewards: r1kit's own loop, top to bottom.

Launch (one process, or several through accelerate: DDP, FSDP2, DeepSpeed ZeRO configs):

    r1kit grpo --config recipes/tiny/grpo.yaml
    accelerate launch -m rl.grpo --config recipes/tiny/grpo.yaml
    accelerate launch --multi_gpu --num_processes 2 -m rl.grpo --config recipes/tiny/grpo.yaml --use_cpu true
    accelerate launch --use_fsdp --fsdp_version 2 --num_processes 2 -m rl.grpo --config recipes/tiny/grpo.yaml \\
        --use_cpu true    # FSDP2, applied by r1kit itself (r1kit/modeling/fsdp.py), also on CPU

One step: sample G completions for each prompt (engine), score them with the recipe's rewards,
turn rewards into group-relative advantages, then take `num_iterations` optimizer steps on the
clipped surrogate (rl/losses.py picks the variant once). What a run holds and how it is built
(model, optimizer, engine, MoE hooks) is in rl/setup.py; prompts go through r1kit/chat.py, the
same chat-template code SFT and evals use.

Kept from the papers: group-relative advantages and the clipped ratio (DeepSeekMath), k3 KL to a
frozen reference (only loaded when beta > 0), R1's <think> format with optional prefill; from DAPO
clip-higher, token-level loss, dynamic sampling and overlong masking; Dr. GRPO's unnormalised loss;
GSPO's sequence ratio and routing replay for MoE; DeepSeek-V3's auxiliary-loss-free expert balancing.
Changed: an unscorable completion (a reward returned None) is left out of its group's statistics and
gets advantage 0; when dynamic sampling cannot fill the batch in `max_sampling_rounds`, the batch is
topped up with zero-variance groups (no policy gradient) so every process runs the same micro-batches.
Engine/trainer mismatch is corrected with truncated importance sampling, min(pi_old/pi_engine, C).
Held-out accuracy is scored by `r1kit eval`'s judge (strict), never with the training reward, and shortcut
alarms (rl/alarms.py) watch the run's own metrics for rewards earned without the task.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, replace

import torch

from r1kit.checkpoint import clean_temp, load_checkpoint, resolve_resume, save_checkpoint, save_model
from r1kit.config import parse_config
from r1kit.errors import exit_on_user_error
from r1kit.generation import Rollout, left_pad
from r1kit.modeling import fsdp
from rl.config import GRPOConfig
from rl.losses import Normalizers, PolicyBatch, group_advantages
from rl.packing import Packed, pack_groups, packed_logits
from rl.setup import Run, setup_run, teardown_run


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
        pick = lambda xs: [xs[i] for i in idx]
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


def prompts_to_sample(run: Run, short: int) -> int:
    """Prompts to sample for `short` missing groups. With dynamic sampling the draw is enlarged by the share of
    zero-variance groups seen in recent steps (plus one standard deviation of the kept count), so that most
    steps fill their batch in one generation round instead of paying a whole extra decode loop for a few
    groups (verl oversamples the same way); groups found beyond the batch are not trained on. The expected
    share is capped at one half: a policy that never earns a reward costs at most twice the rows per round."""
    if short <= 0:
        return 1  # a full process that must still join the others' forwards (sharded weights)
    p = min(run.zero_variance_rate, 0.5) if run.cfg.dynamic_sampling and not run.alarms.saturated else 0.0
    return math.ceil((short + math.sqrt(short * p * (1 - p))) / (1 - p))


def collect(run: Run) -> tuple[Groups, dict[str, float]]:
    """One step's local batch. With dynamic sampling (DAPO sec. 3.2) groups whose rewards are all equal
    are set aside and more prompts are sampled, for at most `max_sampling_rounds` extra rounds; none once no
    group has varied for `zero_variance_patience` steps (rl/alarms.py: nothing left to learn)."""
    cfg, G = run.cfg, run.cfg.num_generations
    need = run.local_batch // G
    extra_rounds = cfg.dynamic_sampling and not run.alarms.saturated  # the same on every process
    kept, dropped, sampled, zero, surplus = Groups(), Groups(), 0, 0, 0
    for round_ in range(cfg.max_sampling_rounds + 1):
        short = need - len(kept.rows) // G
        # Every process runs the same number of rounds (decided together)...
        if run.reduce_max(float(short)) <= 0 or (round_ > 0 and not extra_rounds):
            break
        if short <= 0 and not run.collective_rollout:
            continue
        # ...and under ZeRO-3 every rollout forward gathers weights from all processes, so a process that is
        # already full still samples one group (set aside: filler only) to join the others' forwards (r1kit's
        # FSDP2 gathers the weights once per rollout, so its processes decode alone).
        n = prompts_to_sample(run, short)
        new = sample_groups(run, n)
        for g in range(n):
            part = new.take(list(range(g * G, (g + 1) * G)))
            if short <= 0:
                dropped.extend(part)
                continue
            sampled += 1
            if cfg.dynamic_sampling and not _varied(part.rewards):
                zero += 1
                dropped.extend(part)
            elif len(kept.rows) // G < need:
                kept.extend(part)
            else:
                surplus += 1  # oversampling found more informative groups than the batch holds
    if cfg.dynamic_sampling and sampled:
        run.zero_variance_rate = 0.8 * run.zero_variance_rate + 0.2 * zero / sampled
    filler = need - len(kept.rows) // G
    kept.extend(dropped.take(list(range(filler * G))))  # zero-variance groups: no policy gradient
    return kept, {"dropped_groups": zero / max(sampled, 1), "sampled_groups": float(sampled),
                  "unused_groups": surplus / max(sampled, 1)}


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
    packed: Packed | None = None  # the same rows packed group by group (rl/packing.py), when used

    def rows(self, idx: slice | torch.Tensor) -> StepBatch:
        """The batch restricted to rows `idx` (a packed layout is rebuilt by whoever needs it)."""
        cut = lambda t: None if t is None else t[idx]
        return StepBatch(*[cut(getattr(self, f)) for f in self.__dataclass_fields__ if f != "packed"])

    def slice(self, i: int, j: int) -> StepBatch:
        return self.rows(slice(i, j))

    def routed_tokens(self) -> torch.Tensor:
        """The tokens whose expert choices count in the MoE load statistics: completion tokens only, (N, P+T),
        or the packed layout's own mask of them."""
        if self.packed is not None:
            return self.packed.counted
        prompt = torch.zeros_like(self.attention_mask[:, :-self.completion_mask.shape[1]])
        return torch.cat([prompt, self.attention_mask[:, prompt.shape[1]:]], 1)


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
    N, T = b.completion_mask.shape
    if b.packed is None:
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                       use_cache=False, logits_to_keep=T + 1).logits[:, :-1]  # (N, T, V)
        flat, index = logits.flatten(0, 1), torch.arange(N * T, device=logits.device).view(N, T)
    else:
        flat, index = packed_logits(model, b.packed), b.packed.index  # (M, V), (N, T) rows of it
    flat = flat.float()
    if temperature != 1.0:  # a division by 1 would still copy the (M, V) logits, forward and backward
        flat = flat / temperature
    # log p(token) = logit - logsumexp: avoids materialising a second log-softmax tensor.
    lse = torch.logsumexp(flat, -1)  # (M,)
    logps = flat[index, b.input_ids[:, -T:]] - lse[index]
    with torch.no_grad():
        entropy = (lse - (torch.softmax(flat, -1) * flat).sum(-1))[index]
    return logps, entropy


# ------------------------------------------------------------------------------- the update


def _micro_batches(run: Run, n: int) -> list[tuple[int, int]]:
    size = run.cfg.per_device_train_batch_size
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def micro_batch(run: Run, b: StepBatch, i: int, j: int) -> StepBatch:
    """Rows i:j, packed group by group when `pack_groups` is on and the rows allow it."""
    mb = b.slice(i, j)
    # the router aux loss is per sequence: packing would mix a row's completions into one "sequence"
    if run.cfg.pack_groups and run.cfg.router_aux_loss_coef == 0:
        mb.packed = pack_groups(mb.input_ids, mb.attention_mask, mb.completion_mask.shape[1], run.cfg.num_generations,
                                run.attn_implementation, run.pack_length)
    return mb


def replays_routing(run: Run) -> bool:
    """Routing replay (R2) has work only when the scored policy can differ from the old one: with one update
    per batch and exact engine log-probs, old = current and the update's own routing is the old routing."""
    return run.cfg.routing_replay and (run.cfg.num_iterations > 1 or not run.engine.exact_logprobs)


@torch.no_grad()
def fill_old_and_ref(run: Run, b: StepBatch) -> None:
    """Old log-probs up front only when routing replay must record the old policy's expert choices (otherwise
    the first update's own forward supplies them, see `update`); reference log-probs when beta > 0."""
    need_old = replays_routing(run)
    olds, refs = [], []
    if not need_old and run.cfg.beta == 0:
        return
    for k, (i, j) in enumerate(_micro_batches(run, len(b.advantages))):
        mb = micro_batch(run, b, i, j)
        if need_old:
            with run.experts.record(k):
                olds.append(token_logps(run.model, mb, run.cfg.temperature)[0])
        if run.cfg.beta > 0:
            with run.ref_scope() as ref:
                refs.append(token_logps(ref, mb, run.cfg.temperature)[0])
    b.old_logps = torch.cat(olds) if olds else None
    b.ref_logps = torch.cat(refs) if refs else None


def update(run: Run, b: StepBatch, norm: Normalizers) -> dict[str, float]:
    """One optimizer step over the local batch: accumulate micro-batch gradients, clip, step.

    The first of the mu updates runs on the policy that is "old", so its detached log-probs are the old
    log-probs; they are kept for the later updates instead of paying a separate no-grad forward."""
    sums: dict[str, float] = {"loss": 0.0, "entropy": 0.0}
    spans = _micro_batches(run, len(b.advantages))
    finite = True
    keep_old = b.old_logps is None and run.cfg.num_iterations > 1
    olds = []
    # nullcontext(k) is a no-op context: the routing was recorded only when replays_routing (fill_old_and_ref)
    replay = run.experts.replay if replays_routing(run) else contextlib.nullcontext
    run.experts.enabled = True  # only this update's forwards count towards expert load
    for k, (i, j) in enumerate(spans):
        mb = micro_batch(run, b, i, j)
        sync = run.accelerator.no_sync(run.model) if k < len(spans) - 1 else contextlib.nullcontext()
        with sync, replay(k):
            run.experts.set_mask(mb.routed_tokens())
            logps, entropy = token_logps(run.model, mb, run.cfg.temperature)
            old = logps.detach() if mb.old_logps is None else mb.old_logps
            if keep_old:
                olds.append(old)
            is_w = None
            if not run.engine.exact_logprobs:  # truncated IS: weight = min(pi_old / pi_engine, C)
                is_w = torch.exp(old - mb.engine_logps).clamp(max=run.cfg.importance_sampling_cap)
            pb = PolicyBatch(logps, old, mb.advantages, mb.completion_mask, is_w, mb.ref_logps)
            loss, stats = run.loss_fn(pb, run.loss_settings, norm)
            loss = loss + run.experts.aux_loss() / len(spans)
            finite &= bool(torch.isfinite(loss))
            # DDP averages gradients over processes; the normalisers already count every process.
            run.accelerator.backward(loss * run.accelerator.num_processes)
        sums["loss"] += loss.item()
        sums["entropy"] += (entropy * mb.completion_mask).sum().item()
        sums["entropy_tokens"] = sums.get("entropy_tokens", 0.0) + mb.completion_mask.sum().item()
        for key, v in stats.items():
            sums[key] = sums.get(key, 0.0) + v.item()
    run.experts.enabled = False
    if keep_old:
        b.old_logps = torch.cat(olds)
    return {**_finish_step(run, finite), **_token_means(run, sums, norm)}


def _finish_step(run: Run, finite_loss: bool) -> dict[str, float]:
    params = [p for p in run.model.parameters() if p.requires_grad]
    max_norm = run.cfg.max_grad_norm or math.inf
    clip = fsdp.clip_grad_norm_ if fsdp.is_fsdp(run.model) else run.accelerator.clip_grad_norm_  # sharded grads
    grad_norm = float(clip(params, max_norm))
    ok = run.reduce_max(0.0 if finite_loss and math.isfinite(grad_norm) else 1.0) == 0
    if ok:
        run.optimizer.step()
        run.scheduler.step()
    else:
        run.warn("non-finite loss or gradient: step skipped (no weights changed)")
    run.optimizer.zero_grad(set_to_none=True)
    return {"grad_norm": grad_norm, "skipped_steps": float(not ok), "lr": run.scheduler.get_last_lr()[0],
            **run.experts.after_step()}  # DeepSeek-V3 aux-loss-free balancing from this step's routing


def _token_means(run: Run, sums: dict[str, float], norm: Normalizers) -> dict[str, float]:
    local = {k: v for k, v in sums.items() if k not in ("loss", "entropy", "entropy_tokens")}
    tokens = max(norm.num_tokens, 1.0)
    out = {k: run.reduce_sum(v) / tokens for k, v in local.items()}
    out["loss"] = run.reduce_sum(sums["loss"])
    # entropy over the tokens that were scored (groups without advantage may have been skipped)
    out["entropy"] = run.reduce_sum(sums["entropy"]) / max(run.reduce_sum(sums.get("entropy_tokens", 0.0)), 1.0)
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


def with_advantage(run: Run, b: StepBatch) -> StepBatch:
    """Drop the groups whose advantages are all 0: with beta == 0 their loss and gradient are exactly 0
    (the normalisers were counted before, over every row), so scoring them is wasted work. Kept when other
    processes need the same micro-batches (sharded weights; DeepSpeed, which reduces at every backward),
    or when the MoE load statistics and router aux loss must see every token. One group always stays, so
    DDP still joins the gradient all-reduce."""
    if run.cfg.beta > 0 or run.sharded or run.deepspeed or run.experts.needs_every_token:
        return b
    keep = (b.advantages.view(-1, run.cfg.num_generations) != 0).any(1)  # (groups,)
    if keep.all():
        return b
    keep[0] |= not keep.any()
    return b.rows(keep.repeat_interleave(run.cfg.num_generations).nonzero().squeeze(1))


def rollout_metrics(run: Run, groups: Groups) -> dict[str, float]:
    ro, N = groups.rollout, len(groups.rewards)
    mean = lambda xs: run.reduce_mean(sum(xs) / max(len(xs), 1))
    scored = [r for r in groups.rewards if not math.isnan(r)]
    out = {"reward": mean(scored), "unscorable": mean([math.isnan(r) for r in groups.rewards]),
           "completion_length": mean([len(c) for c in ro.completion_ids]), "truncated": mean(ro.truncated)}
    for k, fn in enumerate(run.rewards):
        col = [row[k] for row in groups.per_func if not math.isnan(row[k])]
        out[f"rewards/{fn.name}"] = mean(col)
        if fn.name in (run.cfg.eval_reward, "accuracy") and "accuracy" not in out:
            out["accuracy"] = mean([v >= 1.0 for v in col])
    if out["truncated"] > run.cfg.max_truncated_fraction:
        run.warn(f"{out['truncated']:.0%} of completions hit max_completion_length={run.cfg.max_completion_length}:"
                 " raise it, or lower the reward for long answers (overlong reward); the loss sees cut-off answers.")
    out["num_completions"] = float(N)
    return out


def check_alarms(run: Run, step: int, metrics: dict[str, float], advantages: torch.Tensor) -> dict[str, float]:
    """Shortcut alarms (rl/alarms.py) on this step's global metrics: printed loudly, flagged in the metrics."""
    any_varied = run.reduce_max(float(bool((advantages != 0).any()))) > 0
    fired = run.alarms.observe(step, metrics, [fn.name for fn in run.rewards], any_varied)
    for name, msg in fired.items():
        run.warn(f"step {step}: SHORTCUT ALARM {name}: {msg}")
    return {f"alarm/{name}": 1.0 for name in fired}


def train_step(run: Run, step: int) -> dict[str, float]:
    t0 = time.perf_counter()
    with fsdp.gathered(run.model):  # FSDP2: whole weights once for all sampling rounds, which then run alone
        groups, metrics = collect(run)
    metrics |= rollout_metrics(run, groups)
    if run.reduce_max(float(any(math.isinf(v) for v in groups.rewards))) > 0:
        run.warn(f"step {step}: a reward function returned inf/NaN: step skipped; check the reward functions.")
        return {**metrics, "skipped_steps": 1.0}
    advantages = advantages_for(run, groups)
    metrics |= check_alarms(run, step, metrics, advantages)
    full = to_tensors(run, groups, advantages)
    norm = Normalizers(num_seqs=run.reduce_sum(float(len(full.advantages))),
                       num_tokens=run.reduce_sum(full.completion_mask.sum().item()))
    batch = with_advantage(run, full)
    fill_old_and_ref(run, batch)
    for _ in range(run.cfg.num_iterations):
        metrics |= update(run, batch, norm)
    run.experts.clear_replay()
    elapsed = time.perf_counter() - t0
    metrics["step_time"] = elapsed
    metrics["tokens_per_s"] = run.reduce_sum(float(full.attention_mask.sum())) / elapsed
    if run.cfg.log_completions_steps and step % run.cfg.log_completions_steps == 0:
        run.tracker.log_samples(step, sample_rows(run, groups, advantages))
    return metrics


def sample_rows(run: Run, groups: Groups, adv: torch.Tensor) -> list[dict]:
    n = min(run.cfg.num_completions_to_log, len(groups.rows))
    texts = run.tokenizer.batch_decode(groups.rollout.completion_ids[:n], skip_special_tokens=True)
    return [{"prompt": groups.rows[i]["prompt"], "completion": texts[i], "reward": groups.rewards[i],
             "advantage": adv[i].item(), **{f.name: groups.per_func[i][k] for k, f in enumerate(run.rewards)}}
            for i in range(n)]


@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """Held-out greedy pass@1, judged by `r1kit eval`'s own scorer (`rewards.judge`, bound in `setup.eval_judge`:
    strict by default, the sandbox for code), the share of well-formatted completions, and their mean length
    in tokens (a collapse to short completions shows here next to the accuracy)."""
    ids, rows = run.eval_prompts, run.eval_rows
    greedy = replace(run.sampling, greedy=True)
    rollout = run.engine.generate(ids, greedy)
    texts = run.tokenizer.batch_decode(rollout.completion_ids, skip_special_tokens=True)
    items = run.eval_fn(rows, [[t] for t in texts]) if rows else []
    correct = run.reduce_sum(float(sum(item["correct"][0] for item in items)))
    formatted = run.reduce_sum(float(sum(item["formatted"][0] for item in items)))
    n = max(run.reduce_sum(float(len(rows))), 1.0)
    tokens = run.reduce_sum(float(sum(len(c) for c in rollout.completion_ids)))
    return {"eval/accuracy": correct / n, "eval/format": formatted / n, "eval/completion_length": tokens / n}


def train(run: Run) -> None:
    cfg = run.cfg
    if cfg.eval_steps and run.start_step == 0:  # the starting point, so the held-out curve shows the whole gain
        run.tracker.log(0, evaluate(run))
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
                    state={"max_steps": run.max_steps},
                    data_state={**run.stream.state(), "zero_variance_rate": run.zero_variance_rate},
                    save_total_limit=run.cfg.save_total_limit, optimizer=run.optimizer)


def resume(run: Run) -> None:
    clean_temp(run.cfg.output_dir) if run.accelerator.is_main_process else None
    path = resolve_resume(run.cfg.resume_from_checkpoint, run.cfg.output_dir)
    if path is None:
        return
    state, data_state = load_checkpoint(run.accelerator, path, model=run.model, optimizer=run.optimizer)
    run.start_step = state["step"]
    run.stream.load_state(data_state)
    run.zero_variance_rate = data_state.get("zero_variance_rate", 0.0)
    run.progress.update(run.start_step)
    print(f"resumed from {path} at step {run.start_step}", flush=True)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(GRPOConfig, argv, prog="r1kit grpo")
    run = setup_run(cfg)
    resume(run)
    train(run)
    teardown_run(run)


if __name__ == "__main__":
    main()
