"""Reward registry: recipes name rewards, with parameters and weights.

A reward is registered with ``@register("name")``. Its tunable parameters are its keyword-only
arguments (after ``*``); every other keyword it receives is a dataset column or a trainer column such as
``completion_token_ids``. A recipe lists rewards like::

    rewards:
      - {name: accuracy, weight: 1.0}
      - {name: format, weight: 0.2, params: {answer_format: boxed, think_prefilled: true}}

`build_rewards` turns that list into callables and rejects unknown names, keys and parameters with a
`UserError` that lists what is available. Values are checked by kind: a number must be finite, and
params are range-checked by name across rewards (`_POSITIVE_PARAMS`, `_NON_NEGATIVE_PARAMS`; a
``*_pattern`` must be a valid regular expression), so a bad value fails when the recipe loads rather than
silently scoring (a negative deadline, a NaN weight).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from r1kit.errors import UserError

RewardFunc = Callable[..., list]

# Modules whose import registers rewards. rewards.code is optional: it needs nothing extra to import,
# but a trimmed install may leave the sandbox out.
_REWARD_MODULES = (
    "rewards.math",
    "rewards.format",
    "rewards.length",
    "rewards.language",
    "rewards.repetition",
    "rewards.countdown",
)
_OPTIONAL_REWARD_MODULES = ("rewards.code",)
_SPEC_KEYS = {"name", "weight", "params"}
# Params with the same meaning wherever they appear: a time limit, a tolerance.
_POSITIVE_PARAMS = frozenset({"deadline_s", "timeout"})
_NON_NEGATIVE_PARAMS = frozenset({"rel_tol"})

_REGISTRY: dict[str, RewardFunc] = {}
# Per reward, the params whose value must be one of a few strings (e.g. `answer_format`).
_CHOICES: dict[str, dict[str, tuple[str, ...]]] = {}


def register(name: str, *, choices: dict[str, tuple[str, ...]] | None = None) -> Callable[[RewardFunc], RewardFunc]:
    """Record a reward function under the recipe name ``name``; returns the function unchanged.
    ``choices`` maps a param to its allowed values, checked when a recipe's rewards are built."""

    def decorator(fn: RewardFunc) -> RewardFunc:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != fn.__qualname__:
            raise ValueError(
                f"reward name {name!r} is taken by {existing.__module__}.{existing.__qualname__}"
            )
        _REGISTRY[name] = fn
        _CHOICES[name] = dict(choices or {})
        return fn

    return decorator


def _import_reward_modules() -> None:
    for module in _REWARD_MODULES:
        importlib.import_module(module)
    for module in _OPTIONAL_REWARD_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def available_rewards() -> list[str]:
    """Names a recipe may use, sorted."""
    _import_reward_modules()
    return sorted(_REGISTRY)


def tunable_params(fn: RewardFunc) -> dict[str, inspect.Parameter]:
    """The keyword-only parameters of a reward function (what ``params:`` may set)."""
    return {
        p.name: p
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


@dataclass(frozen=True)
class RewardFn:
    """A registered reward with its parameters bound and its weight attached."""

    name: str
    weight: float
    fn: RewardFunc
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def __name__(self) -> str:  # trainers (TRL) log rewards under their function name
        return self.name

    def __call__(self, completions: list, **columns: Any) -> list[float | None]:
        return self.fn(completions, **columns, **self.params)


def _check_value(reward: str, param: inspect.Parameter, value: Any) -> None:
    """A recipe value must have its default's type (an int is a float, a list a tuple) and be one of
    the param's `register` choices, if it has any."""
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return
    expected = type(default)
    numeric_ok = expected is float and isinstance(value, int) and not isinstance(value, bool)
    sequence_ok = expected is tuple and isinstance(value, list)
    if not (numeric_ok or sequence_ok) and (
        not isinstance(value, expected) or (expected is not bool and isinstance(value, bool))
    ):
        raise UserError(
            f"reward {reward!r}: param {param.name!r} must be {expected.__name__} "
            f"(default {default!r}), got {value!r}"
        )
    allowed = _CHOICES.get(reward, {}).get(param.name)
    if allowed is not None and value not in allowed:
        raise UserError(f"reward {reward!r}: param {param.name!r} must be one of {list(allowed)}, got {value!r}")
    _check_range(reward, param.name, value)


def _check_range(reward: str, name: str, value: Any) -> None:
    where = f"reward {reward!r}: param {name!r}"
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where} must be a finite number, got {value!r}")
    if name in _POSITIVE_PARAMS and value <= 0:
        raise UserError(f"{where} must be > 0 (seconds), got {value!r}")
    if name in _NON_NEGATIVE_PARAMS and value < 0:
        raise UserError(f"{where} must be >= 0, got {value!r}")
    if name.endswith("_pattern") and isinstance(value, str):
        try:
            re.compile(value)
        except re.error as e:
            raise UserError(f"{where} is not a valid regular expression ({e}), got {value!r}") from None


def _bind(name: str, fn: RewardFunc, params: dict[str, Any]) -> dict[str, Any]:
    allowed = tunable_params(fn)
    for key, value in params.items():
        if key not in allowed:
            raise UserError(
                f"reward {name!r} has no param {key!r}; allowed params: {sorted(allowed) or 'none'}"
            )
        _check_value(name, allowed[key], value)
    missing = [
        p for p, spec in allowed.items() if spec.default is inspect.Parameter.empty and p not in params
    ]
    if missing:
        raise UserError(f"reward {name!r} needs params {missing}; set them under params:")
    return {k: tuple(v) if isinstance(allowed[k].default, tuple) else v for k, v in params.items()}


def _build_one(spec: Any) -> RewardFn:
    if not isinstance(spec, dict) or "name" not in spec:
        raise UserError(f"each reward spec must be a mapping with a 'name' key, got {spec!r}")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise UserError(
            f"reward spec {spec['name']!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}"
        )
    name = spec["name"]
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown reward {name!r}{hint}; available rewards: {sorted(_REGISTRY)}")
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise UserError(f"reward {name!r}: weight must be a finite number, got {weight!r}")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise UserError(f"reward {name!r}: params must be a mapping, got {params!r}")
    fn = _REGISTRY[name]
    return RewardFn(name=name, weight=float(weight), fn=fn, params=_bind(name, fn, params))


def build_rewards(specs: list[dict[str, Any]]) -> list[RewardFn]:
    """Recipe reward specs -> bound reward callables, validated.

    >>> [(r.name, r.weight) for r in build_rewards([{"name": "format", "weight": 0.5}])]
    [('format', 0.5)]
    >>> build_rewards([{"name": "acuracy"}])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    r1kit.errors.UserError: unknown reward 'acuracy' (did you mean 'accuracy'?); available rewards: [...]
    """
    _import_reward_modules()
    return [_build_one(spec) for spec in specs]


__all__ = ["RewardFn", "available_rewards", "build_rewards", "register", "tunable_params"]
