"""Generation shared by RL rollouts, distillation's teacher sampling and evaluation (see docs/generation.md).

    from r1kit.generation import EngineSpec, SamplingSettings, build_engine

Names load lazily, so `r1kit.generation.config` (recipe keys) imports without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Rollout": "engine", "SamplingSettings": "engine", "RolloutEngine": "engine", "EngineSpec": "engine",
    "build_engine": "engine", "left_pad": "engine", "stop_end": "engine",
    "HFEngine": "hf", "sample_token": "hf",
    "VLLMEngine": "vllm",
    "EngineConfig": "config",
}  # fmt: skip
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'r1kit.generation' has no attribute '{name}'")
    return getattr(importlib.import_module(f"r1kit.generation.{_EXPORTS[name]}"), name)
