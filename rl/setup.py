"""Everything a GRPO run holds at runtime, and how `rl/grpo.py` builds and tears it down.

`setup_run(cfg)` turns a validated GRPOConfig into a `Run`: accelerator, policy (+ LoRA, + frozen
reference when beta > 0), tokenizer, chat-templated prompts, reward functions, optimizer and
schedule, rollout engine, MoE hooks (expert-load tracking, routing replay), tracker. The loop
itself lives in `rl/grpo.py`; nothing here decides how a step trains.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from r1kit.chat import encode_prompts as _encode
from r1kit.config import to_dict
from r1kit.errors import UserError
from r1kit.generation import SamplingSettings, build_engine
from r1kit.generation.config import engine_spec
from r1kit.modeling.fsdp import is_fsdp, shard_model
from r1kit.modeling.fsdp import requested as fsdp_requested
from rl.alarms import Alarms
from rl.config import GRPOConfig
from rl.losses import LossFn, LossSettings, get_loss

if TYPE_CHECKING:  # annotations only: accelerate, transformers and tqdm load inside setup_run
    from accelerate import Accelerator
    from accelerate.scheduler import AcceleratedScheduler
    from tqdm import tqdm
    from transformers import PreTrainedTokenizerBase

    from r1kit.generation import RolloutEngine
    from r1kit.modeling.moe import ExpertBalancer, NoExperts
    from r1kit.tracking import Tracker
    from rewards.registry import RewardFn

STDOUT_KEYS = ("reward", "accuracy", "eval/accuracy", "eval/format", "eval/completion_length", "loss", "kl",
               "completion_length", "dropped_groups", "grad_norm", "tokens_per_s")
# Where the recipe's training rewards say the answer is: held-out scoring reads it from the same place.
ANSWER_PARAMS = ("answer_format", "final_answer_pattern", "final_form")
# The answer rules `rewards.judge.score_math` (r1kit eval's scorer) takes, so the only eval_reward_params.
JUDGE_PARAMS = (*ANSWER_PARAMS, "think_prefilled")


def encode_prompts(rows: list[dict], tokenizer, cfg: GRPOConfig) -> list[list[int]]:
    """Chat-template each prompt (+ system prompt, + `<think>` prefill); too long is a user error."""
    return _encode(rows, tokenizer, cfg.max_prompt_length, cfg.dataset_name, cfg.system_prompt, cfg.prefill_think)




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


@dataclass(kw_only=True)
class Run:
    """Everything a run holds at runtime (the config stays read-only)."""

    cfg: GRPOConfig
    accelerator: Accelerator
    # the policy as accelerate prepared it (DDP-wrapped on several processes) or as r1kit sharded it (FSDP2, an
    # FSDPModule), so calls that need the transformers model (its config, `disable_adapter`) go through
    # `accelerator.unwrap_model`
    model: torch.nn.Module
    ref_model: torch.nn.Module | None  # frozen, prepared reference for beta > 0 without LoRA (`ref_scope`)
    tokenizer: PreTrainedTokenizerBase
    engine: RolloutEngine
    rewards: list[RewardFn]
    # rewards.judge.score bound to the held-out task's kind and answer rules (`eval_judge`); None: no eval_steps
    eval_fn: Callable[[list[dict], list[list[str]]], list[dict]] | None
    rows: list[dict]
    prompt_ids: list[list[int]]
    eval_rows: list[dict]
    eval_prompts: list[list[int]]
    stream: PromptStream
    sampling: SamplingSettings
    loss_fn: LossFn
    loss_settings: LossSettings
    optimizer: torch.optim.Optimizer  # accelerate's AcceleratedOptimizer, plain when r1kit shards (FSDP2)
    scheduler: AcceleratedScheduler
    experts: ExpertBalancer | NoExperts  # MoE load balancing, aux loss, routing replay; no-ops on a dense policy
    tracker: Tracker
    progress: tqdm
    alarms: Alarms  # shortcut alarms (rl/alarms.py)
    max_steps: int
    start_step: int = 0
    zero_variance_rate: float = 0.0  # recent share of sampled groups without reward variance (dynamic sampling)

    @property
    def pack_length(self) -> int:
        """Packed row target: per token, attention with a dense mask costs ~L x hidden against ~hidden^2 for
        the linear layers, so rows much longer than the hidden size stop paying off (measured: 192 best for
        hidden 96, rl/packing.py)."""
        config = self.accelerator.unwrap_model(self.model).config
        return self.cfg.pack_max_length or 2 * getattr(config, "hidden_size", 2048)

    @property
    def attn_implementation(self) -> str | None:
        """The policy's attention backend: packed scoring needs one that takes a custom 4D mask."""
        return getattr(self.accelerator.unwrap_model(self.model).config, "_attn_implementation", None)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def deepspeed(self) -> bool:
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.DEEPSPEED

    @property
    def sharded(self) -> bool:
        """Weights sharded over processes (FSDP, ZeRO-3): every training forward is a collective."""
        return is_sharded(self.accelerator) or is_fsdp(self.model)

    @property
    def collective_rollout(self) -> bool:
        """Every rollout forward is a collective too (ZeRO-3); r1kit's FSDP2 gathers whole weights for it instead."""
        return self.sharded and not is_fsdp(self.model)

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

    @contextlib.contextmanager
    def ref_scope(self) -> Iterator[torch.nn.Module]:
        """The model that scores reference log-probs (beta > 0)."""
        if self.ref_model is not None:
            yield self.ref_model
        else:  # LoRA: the base model with adapters switched off is the reference, no copy needed
            with self.accelerator.unwrap_model(self.model).disable_adapter():
                yield self.model


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


def eval_reward_spec(cfg: GRPOConfig) -> dict[str, Any]:
    """`eval_reward` with the answer format of the recipe's own rewards (the first that declares each of
    `ANSWER_PARAMS`) and `think_prefilled` from `prefill_think`, so held-out accuracy reads answers where the
    policy is trained to write them; `eval_reward_params` overrides (only `JUDGE_PARAMS`: r1kit eval has no others).

    >>> from rl.config import GRPOConfig
    >>> cfg = GRPOConfig(model_name_or_path="m", dataset_name="d", output_dir="o", prefill_think=True,
    ...                  rewards=[{"name": "accuracy"},
    ...                  {"name": "format", "params": {"answer_format": "boxed", "think_prefilled": True}}])
    >>> eval_reward_spec(cfg)
    {'name': 'strict_accuracy', 'params': {'think_prefilled': True, 'answer_format': 'boxed'}}
    """
    from rewards.registry import build_rewards

    unknown = sorted(set(cfg.eval_reward_params) - set(JUDGE_PARAMS))
    if unknown:
        raise UserError(f"eval_reward_params: unknown key(s) {unknown}; held-out scoring (r1kit eval's judge) takes "
                        f"only {list(JUDGE_PARAMS)}.")
    params: dict[str, Any] = {"think_prefilled": cfg.prefill_think}
    for spec in cfg.rewards:
        for key, value in (spec.get("params") or {}).items():
            if key in ANSWER_PARAMS:
                params.setdefault(key, value)
    params = {**params, **cfg.eval_reward_params}
    build_rewards([{"name": cfg.eval_reward, "params": params}])  # a param of the wrong type or value: UserError
    return {"name": cfg.eval_reward, "params": params}


def eval_judge(cfg: GRPOConfig, row: dict) -> Callable[[list[dict], list[list[str]]], list[dict]]:
    """Held-out scoring by `r1kit eval`'s own judge (`rewards.judge.score`), so a greedy completion gets the
    verdict `r1kit eval` would give it: code rows (`rewards.judge.task_kind`) run their tests in the sandbox
    (`binary_code`); math is scored with the answer rules of `eval_reward_spec`, strictly unless `eval_reward`
    is `accuracy`. Called with (rows, completions per row), it returns one result dict per row."""
    from rewards.judge import score, task_kind

    if task_kind(row) == "code":
        return partial(score, "code")
    spec = eval_reward_spec(cfg)
    # answer_tag unless declared: the rewards' own default (score_math's is boxed, the R1 benchmarks' format)
    rules = {"answer_format": "answer_tag", **spec["params"]}
    judge = partial(score, "math", strict=spec["name"] == "strict_accuracy", **rules)
    check_eval_judge(judge, row)
    return judge


def check_eval_judge(judge: partial, row: dict) -> None:
    """A well-formed, correct completion in the declared format must be judged correct; otherwise held-out
    accuracy would read 0 whatever the policy learns (e.g. a `final_answer_pattern` that the answer sentence
    does not match)."""
    params = judge.keywords
    fmt, prefilled = params.get("answer_format", "answer_tag"), params.get("think_prefilled")
    gold = row["answer"]
    answer = {"answer_tag": f"<answer>{gold}</answer>", "boxed": f"\\boxed{{{gold}}}",
              "final_answer": f"The final answer is {gold}", "any": f"The final answer is {gold}"}[fmt]
    text = ("" if prefilled else "<think>\n") + f"reasoning\n</think>\n{answer}"
    if not judge([row], [[text]])[0]["correct"][0]:
        raise UserError(f"held-out scoring ({params}) judges a correct completion in the declared format wrong "
                        f"(gold {gold!r}): held-out accuracy could never count a solved problem; set "
                        "eval_reward_params to match the recipe's answer format.")


def warn_reward_setup(cfg: GRPOConfig, rows: list[dict], main: bool) -> None:
    """Print `rewards.check_reward_setup`'s warnings at start: a format no reward reads, the final-form rule
    off on a numeric task, a reward at odds with `prefill_think` (setups that build but score silently wrong)."""
    from rewards import check_reward_setup

    gold = [r.get("answer") for r in rows[:64]]
    for msg in check_reward_setup(cfg.rewards, gold, prefill_think=cfg.prefill_think):
        if main:
            print(f"WARNING: reward setup: {msg}", file=sys.stderr, flush=True)


def load_policy(cfg: GRPOConfig, device: torch.device):
    """The policy (gradient checkpointing and LoRA as configured) and, for beta > 0 without LoRA, a frozen copy."""
    from r1kit.modeling.loading import load_for_training, load_model

    model, _ = load_for_training(cfg, device)
    ref = None
    if cfg.beta > 0 and not cfg.use_peft:
        ref = load_model(cfg.model_name_or_path, dtype=cfg.dtype, device=device,
                         attn_implementation=cfg.attn_implementation, trust_remote_code=cfg.trust_remote_code)
        ref = ref.eval().requires_grad_(False)
    return model, ref


def schedule(cfg: GRPOConfig, optimizer, total: int, num_processes: int = 1):
    """The lr schedule over `total` optimizer steps. accelerate steps a prepared scheduler once per process per
    optimizer step (it assumes the dataloader batch grew with the process count), so the schedule is laid out
    over `num_processes` times as many steps: every process count sees the same lr at each optimizer step."""
    from transformers import get_scheduler

    return get_scheduler(cfg.lr_scheduler_type, optimizer,
                         num_warmup_steps=int(cfg.warmup_ratio * total) * num_processes,
                         num_training_steps=total * num_processes)


def expert_hooks(cfg: GRPOConfig, model: torch.nn.Module) -> ExpertBalancer | NoExperts:
    """MoE balancing, router aux loss and routing replay as configured, or no-ops for a dense policy. Counting
    starts off: only the update's forwards count (rl/grpo.py `update`), never sampling, old or reference passes."""
    from r1kit.modeling.moe import expert_balancer

    experts = expert_balancer(model, cfg.moe_bias_update_speed, aux_loss_coef=cfg.router_aux_loss_coef,
                              routing_replay=cfg.routing_replay)
    experts.enabled = False
    return experts


def is_sharded(acc) -> bool:
    from accelerate.utils import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:
        return acc.state.deepspeed_plugin.zero_stage == 3
    return acc.distributed_type == DistributedType.FSDP


def _all_done(acc, model: torch.nn.Module):
    """With weights sharded during the rollout (ZeRO-3) the engine decodes until every process is done (each
    forward is collective); r1kit's FSDP2 policy is gathered whole for the rollout, so it decodes alone."""
    if not is_sharded(acc) or is_fsdp(model):
        return None
    return lambda done: float(acc.reduce(torch.tensor(float(not done), device=acc.device), "sum")) == 0.0


def shard_policy(model: torch.nn.Module, ref: torch.nn.Module | None, bf16: bool, num_processes: int) -> tuple:
    """FSDP2 on the policy (and the frozen reference) by r1kit itself (`r1kit.modeling.fsdp`): accelerate turns
    an FSDP config into DDP on CPU, and one code path then serves CPU (gloo) and GPUs. bf16: weights gathered
    and computed in bf16, float32 shards, gradient reduction and AdamW."""
    if num_processes < 2:
        raise UserError("fsdp shards over several processes, but this run has one: launch it with "
                        "`accelerate launch --use_fsdp --num_processes N -m rl.grpo ...` or set fsdp: false.")
    dtype = torch.bfloat16 if bf16 else None
    return shard_model(model, param_dtype=dtype), None if ref is None else shard_model(ref, param_dtype=dtype)


def setup_run(cfg: GRPOConfig) -> Run:
    from accelerate import Accelerator
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from r1kit.data import load_rows
    from r1kit.tracking import Tracker
    from rewards.registry import build_rewards

    bf16 = cfg.bf16 if cfg.bf16 is not None else (torch.cuda.is_available() and not cfg.use_cpu
                                                     and torch.cuda.is_bf16_supported())
    acc = Accelerator(cpu=cfg.use_cpu, mixed_precision="bf16" if bf16 else "no")
    torch.manual_seed(cfg.seed + acc.process_index)  # different samples per process, reproducible per run
    tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer_name_or_path or cfg.model_name_or_path)
    rewards = build_rewards(cfg.rewards)
    check_format_reachable(rewards, cfg.prefill_think)
    rows = load_rows(cfg)
    warn_reward_setup(cfg, rows, acc.is_main_process)
    prompt_ids = encode_prompts(rows, tokenizer, cfg)
    eval_rows, eval_prompts, judge = [], [], None
    if cfg.eval_steps:
        eval_cfg = replace(cfg, dataset_split=cfg.eval_split, max_samples=cfg.eval_max_samples)
        all_eval_rows = load_rows(eval_cfg)
        judge = eval_judge(cfg, all_eval_rows[0])
        eval_rows = all_eval_rows[acc.process_index::acc.num_processes]
        eval_prompts = encode_prompts(eval_rows, tokenizer, cfg)
    model, ref = load_policy(cfg, acc.device)
    if cfg.fsdp or fsdp_requested():  # before the optimizer: fully_shard replaces the parameters
        model, ref = shard_policy(model, ref, bf16, acc.num_processes)
        if acc.is_main_process:  # said aloud: accelerate alone would have run DDP here without a word
            print(f"fsdp: policy sharded over {acc.num_processes} processes (FSDP2, fully_shard per decoder layer)",
                  file=sys.stderr, flush=True)
    experts = expert_hooks(cfg, model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    prompts_per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps // cfg.num_generations
    max_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(
        len(rows) * cfg.num_train_epochs / (prompts_per_step * acc.num_processes))
    scheduler = schedule(cfg, optimizer, max_steps * cfg.num_iterations, acc.num_processes)
    if is_fsdp(model):  # sharded by r1kit: accelerate only steps the schedule (checkpoints: r1kit/checkpoint.py)
        scheduler = acc.prepare(scheduler)
    else:
        model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
        ref = acc.prepare_model(ref, evaluation_mode=True) if ref is not None else None
    engine = build_engine(engine_spec(cfg, cfg.max_prompt_length + cfg.max_completion_length), acc.unwrap_model(model),
                          tokenizer, all_done=_all_done(acc, model))
    settings = LossSettings(cfg.epsilon, cfg.clip_high, cfg.beta, cfg.max_completion_length)
    sampling = SamplingSettings(cfg.max_completion_length, cfg.temperature, cfg.top_p, cfg.top_k)
    tracker = Tracker(cfg.output_dir, cfg.report_to, to_dict(cfg), is_main=acc.is_main_process,
                      stdout_keys=STDOUT_KEYS)
    progress = tqdm(total=max_steps, desc="grpo", unit="step", disable=not acc.is_main_process, file=sys.stderr)
    stream = PromptStream(len(rows), cfg.seed, acc.process_index, acc.num_processes)
    return Run(cfg=cfg, accelerator=acc, model=model, ref_model=ref, tokenizer=tokenizer, engine=engine,
               rewards=rewards, eval_fn=judge, rows=rows, prompt_ids=prompt_ids, eval_rows=eval_rows,
               eval_prompts=eval_prompts, stream=stream, sampling=sampling, loss_fn=get_loss(cfg.loss_type),
               loss_settings=settings, optimizer=optimizer, scheduler=scheduler, experts=experts, tracker=tracker,
               progress=progress, alarms=Alarms(cfg.min_completion_length_alarm, cfg.zero_variance_patience),
               max_steps=max_steps)


def teardown_run(run: Run) -> None:
    if close := getattr(run.engine, "close", None):  # vLLM: its groups live in the process group ended below
        close()
    run.progress.close()
    run.tracker.close()
    run.experts.remove()
    if run.accelerator.num_processes > 1:
        _drain_collectives(run.accelerator)
    run.accelerator.end_training()


def _drain_collectives(acc) -> None:
    """Let gloo's worker threads release the last collectives' tensors while Python can still run them.

    A gloo work object is destroyed on its worker thread just after it completes; if Python already dropped
    the tensor, that destructor needs the GIL. Reached during interpreter shutdown, it makes the thread exit
    mid-destructor and the process aborts (SIGABRT, "terminate called without an active exception") after a
    successful run, about 1 run in 12 here. A barrier puts every earlier collective behind us, and a short
    GIL-free sleep hands those threads the GIL.
    """
    acc.wait_for_everyone()
    time.sleep(0.05)
