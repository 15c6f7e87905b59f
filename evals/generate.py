"""Benchmark generation through the shared engine (`r1kit.generation`: hf, or vllm when installed).

A checkpoint directory (a full model or a LoRA adapter with its base named in `adapter_config.json`) or a
hub id is loaded by `r1kit.modeling.load_model`; prompts are built by `r1kit.chat` exactly as GRPO and SFT
build them (chat template, optional system prompt and `<think>` prefill), so a model is scored on the
prompt format it was trained on.

Resumable per item: each finished batch of items is appended to `generations/<benchmark>.jsonl` (one line
per item, the score-only format plus token counts) and flushed; a rerun skips the ids already there and
samples the rest with the seeds the first run would have used (same `batch_size`), so an interrupted and
resumed evaluation equals an uninterrupted one. The
generation settings are saved beside it and a rerun with different ones is refused, so one file never
mixes samples of two protocols. A line cut short by a crash is dropped and its item generated again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1kit.errors import UserError

_SETTINGS_KEYS = ("prompt_template", "system_prompt", "prefill_think", "num_samples", "temperature", "top_p",
                  "top_k", "max_new_tokens", "seed", "engine", "dtype", "split")  # fmt: skip


@dataclass
class ModelGenerator:
    """A loaded model with its tokenizer and engine."""

    name: str
    model: Any
    tokenizer: Any
    engine: Any

    def close(self) -> None:
        close = getattr(self.engine, "close", None)
        if callable(close):
            close()


def _tokenizer_source(name: str) -> str:
    # A LoRA adapter saved without its tokenizer uses its base model's.
    path = Path(name)
    if (path / "adapter_config.json").is_file() and not (path / "tokenizer_config.json").is_file():
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if base:
            return base
    return name


def open_model(name: str, cfg) -> ModelGenerator:
    """Load `name` for sampling on the best device here (CUDA when present) and build the engine."""
    import torch

    from r1kit.generation import EngineSpec, build_engine
    from r1kit.modeling.loading import load_model, load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(name, dtype=cfg.dtype, device=device).to(device)
    model.eval()
    tokenizer = load_tokenizer(_tokenizer_source(name))
    engine = build_engine(EngineSpec(name=cfg.engine), model, tokenizer)
    return ModelGenerator(name, model, tokenizer, engine)


def generation_settings(cfg, model: str) -> dict:
    return {"model": model, **{k: getattr(cfg, k) for k in _SETTINGS_KEYS}}


def _read_done(path: Path, n: int) -> dict[str, dict]:
    """Items already generated; a torn last line (a crash mid-write) is dropped from the file."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    done: dict[str, dict] = {}
    for lineno, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if lineno != len(lines):
                raise UserError(f"{path}:{lineno}: not valid JSON; delete the file to generate again.") from None
            path.write_text("".join(x + "\n" for x in lines[:-1]), encoding="utf-8")
            break
        if len(row["completions"]) != n:
            raise UserError(f"{path}:{lineno}: {len(row['completions'])} completions, expected num_samples={n}.")
        done[str(row["id"])] = row
    return done


def _check_settings(path: Path, settings: dict) -> None:
    saved_path = path.with_suffix(".settings.json")
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text())
        changed = sorted(k for k in settings if saved.get(k) != settings[k])
        if changed:
            raise UserError(f"{path} was generated with other settings ({', '.join(changed)}: "
                            f"{[saved.get(k) for k in changed]} -> {[settings[k] for k in changed]}). "
                            "Use another output_dir, or delete the file to generate again.")  # fmt: skip
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(json.dumps(settings, indent=2) + "\n")


def check_context(gen: ModelGenerator, cfg, prompts: list[list[int]], task_name: str) -> None:
    """A prompt plus `max_new_tokens` must fit the model's positions: past them a model generates noise."""
    config = getattr(gen.model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    longest = max(len(p) for p in prompts)
    if limit is not None and longest + cfg.max_new_tokens > limit:
        raise UserError(f"{task_name}: the longest prompt ({longest} tokens) plus max_new_tokens={cfg.max_new_tokens} "
                        f"exceeds {gen.name}'s max_position_embeddings={limit}; lower max_new_tokens to "
                        f"{limit - longest} or less.")


def _encode(gen: ModelGenerator, cfg, rows: list[dict]) -> list[list[int]]:
    from r1kit.chat import encode_prompt

    return [encode_prompt(r["message"], gen.tokenizer, cfg.system_prompt, cfg.prefill_think) for r in rows]


def _sample(gen: ModelGenerator, cfg, rows: list[dict], seed: int) -> list[dict]:
    """One engine call for `rows`: num_samples completions each, decoded, with token counts."""
    from r1kit.generation import SamplingSettings

    prompts = _encode(gen, cfg, rows)
    sampling = SamplingSettings(max_new_tokens=cfg.max_new_tokens, temperature=max(cfg.temperature, 1e-5),
                                top_p=cfg.top_p, top_k=cfg.top_k, greedy=cfg.temperature == 0,
                                n=cfg.num_samples, seed=seed)  # fmt: skip
    rollout = gen.engine.generate(prompts, sampling)
    texts = gen.tokenizer.batch_decode(rollout.completion_ids, skip_special_tokens=True)
    n = cfg.num_samples
    return [{"id": r["id"], "completions": texts[i * n : (i + 1) * n],
             "truncated": [bool(t) for t in rollout.truncated[i * n : (i + 1) * n]],
             "num_tokens": [len(c) for c in rollout.completion_ids[i * n : (i + 1) * n]]}
            for i, r in enumerate(rows)]  # fmt: skip


def generate_task(gen: ModelGenerator, cfg, task, rows: list[dict], path: Path) -> dict[str, dict]:
    """id -> generation for every row, generating only the items `path` does not hold yet."""
    from tqdm.auto import tqdm

    check_context(gen, cfg, _encode(gen, cfg, rows), task.name)
    _check_settings(path, generation_settings(cfg, gen.name))
    done = _read_done(path, cfg.num_samples)
    per_call = max(1, cfg.batch_size // cfg.num_samples)
    # Engine calls cover fixed, aligned chunks of the benchmark, each seeded by its start: a chunk that a
    # crash left half-written is sampled again whole, so its missing items get the samples they would have had.
    chunks = [rows[s : s + per_call] for s in range(0, len(rows), per_call)]
    bar = tqdm(total=len(rows), initial=sum(r["id"] in done for r in rows), desc=f"{Path(gen.name).name} {task.name}",
               unit="item", dynamic_ncols=True)  # fmt: skip
    with open(path, "a", encoding="utf-8") as f:
        for k, chunk in enumerate(chunks):
            missing = {r["id"] for r in chunk if r["id"] not in done}
            if not missing:
                continue
            for line in _sample(gen, cfg, chunk, seed=cfg.seed + k * per_call):
                if line["id"] in missing:
                    f.write(json.dumps(line, ensure_ascii=False) + "\n")
                    done[line["id"]] = line
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(missing))
    bar.close()
    return done
