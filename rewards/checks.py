"""Start-of-run warnings about a reward list that would score silently wrong.

`build_rewards` rejects what cannot work (unknown names, params, types, answer formats) with a
`UserError`. Some lists build fine and still train the wrong thing: a format reward that pays for
``\\boxed{}`` while the accuracy reward reads ``<answer>`` tags (the policy is paid for a shape no reward
reads), or the final-form rule turned off on a numeric task (``66 - 20`` then scores as 46, the shortcut
a GRPO run found). `check_reward_setup` names those, for the trainer to print at start.
"""

from __future__ import annotations

from typing import Any

from rewards.math.normalize import parse_number
from rewards.registry import RewardFn, build_rewards, tunable_params

# Rewards that read an answer in a fixed format (the others take `answer_format`).
_FIXED_READERS = {"cosine_length": "any", "countdown": "answer_tag"}
# Rewards whose score depends on where the thought starts (for strict answer formats the thought is
# required either way, so `think_prefilled` changes nothing for them).
_SHAPE_REWARDS = ("format", "tag_count", "strict_accuracy")
# Formats each reading format also reads: `any` tries tags, boxes and final-answer statements.
_READS = {"any": {"answer_tag", "boxed", "final_answer", "any"}}


def _answer_format(reward: RewardFn) -> str | None:
    if reward.name in _FIXED_READERS:
        return _FIXED_READERS[reward.name]
    if "answer_format" in reward.params or reward.name in ("accuracy", "strict_accuracy", "format", "tag_count"):
        return reward.params.get("answer_format", "answer_tag")
    return None


def _readers(rewards: list[RewardFn]) -> list[RewardFn]:
    return [r for r in rewards if r.name in ("accuracy", "strict_accuracy", *_FIXED_READERS)]


def _format_warnings(rewards: list[RewardFn]) -> list[str]:
    readers = _readers(rewards)
    read = set().union(*(_READS.get(_answer_format(r), {_answer_format(r)}) for r in readers)) if readers else set()
    warnings = []
    for shape in (r for r in rewards if r.name in ("format", "tag_count")):
        fmt = _answer_format(shape)
        if not readers:
            warnings.append(f"reward {shape.name!r} pays for the {fmt!r} answer format, but no reward reads the "
                            "answer (add accuracy): the policy is paid for a shape, never for being right")
        elif fmt not in read:
            names = ", ".join(f"{r.name} ({_answer_format(r)})" for r in readers)
            warnings.append(f"reward {shape.name!r} pays for the {fmt!r} answer format, but no reward can read it: "
                            f"{names}; set the same answer_format on both")
    return warnings


def _final_form_warnings(rewards: list[RewardFn], sample_gold: list[str]) -> list[str]:
    golds = [str(g) for g in sample_gold if g is not None and str(g).strip()]
    numeric = sum(parse_number(g, any_unit=True) is not None for g in golds)
    if not golds or numeric < len(golds) / 2:
        return []
    return [
        f"reward {r.name!r} has final_form: false, but {numeric}/{len(golds)} sample answers are numbers: an "
        "expression such as `66 - 20` then scores as 46 (the echo shortcut); keep final_form on unless the task "
        "is symbolic"
        for r in rewards
        if r.params.get("final_form") is False
    ]


def _depends_on_prefill(reward: RewardFn) -> bool:
    takes_it = "think_prefilled" in tunable_params(reward.fn)
    return takes_it and (reward.name in _SHAPE_REWARDS or _answer_format(reward) == "any")


def _prefill_warnings(rewards: list[RewardFn], prefill_think: bool) -> list[str]:
    return [
        f"reward {r.name!r} has think_prefilled: {str(r.params.get('think_prefilled', False)).lower()} but the "
        f"prompt {'opens' if prefill_think else 'does not open'} the thought (prefill_think: "
        f"{str(prefill_think).lower()}); set think_prefilled: {str(prefill_think).lower()}"
        for r in rewards
        if _depends_on_prefill(r) and r.params.get("think_prefilled", False) != prefill_think
    ]


def check_reward_setup(specs: list[dict[str, Any]], sample_gold: list[str], *,
                       prefill_think: bool | None = None) -> list[str]:
    """Warnings (one sentence each, empty when the setup is sound) about recipe reward ``specs`` for
    a dataset whose gold answers start with ``sample_gold``: a format no reward can read, the
    final-form rule off on a numeric task, and (when ``prefill_think`` is given) a reward that
    disagrees with the chat template about where the thought starts. Pure: it prints nothing.

    >>> check_reward_setup([{"name": "accuracy"}, {"name": "format", "params": {"answer_format": "boxed"}}], ["4"])
    ["reward 'format' pays for the 'boxed' answer format, but no reward can read it: accuracy (answer_tag); set the same answer_format on both"]
    >>> check_reward_setup([{"name": "accuracy"}, {"name": "format"}], ["4", "12"])
    []
    """
    rewards = build_rewards(specs)
    warnings = _format_warnings(rewards) + _final_form_warnings(rewards, sample_gold)
    if prefill_think is not None:
        warnings += _prefill_warnings(rewards, prefill_think)
    return warnings


__all__ = ["check_reward_setup"]
