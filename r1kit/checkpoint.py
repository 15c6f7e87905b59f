"""Atomic checkpoints any training stage can write and resume from.

A checkpoint `output_dir/checkpoint-<step>/` holds:
- `model/`: HF-format model + tokenizer (`from_pretrained` works on it; for LoRA the adapter and the MoE
  router biases, which `r1kit.modeling.loading.load_model` restores),
- `state/`: `accelerator.save_state` output (model weights, optimizer, scheduler, every process's
  RNG states; sharded correctly under FSDP/DeepSpeed),
- `trainer_state.json`: step and any stage counters, plus one data position per process.

It is written to `.tmp-checkpoint-<step>` and renamed when complete, so a run killed at any moment
(SIGKILL included) leaves either a whole checkpoint or none; `resume_from_checkpoint: auto` picks
the newest whole one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from r1kit.errors import UserError

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first (temp dirs are never listed)."""
    d = Path(output_dir)
    if not d.is_dir():
        return []
    found = [(int(m[1]), p) for p in d.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(value: str | None, output_dir: str | Path) -> Path | None:
    """Checkpoint to resume from: None, 'auto' (newest in output_dir, or None) or a directory."""
    if value is None:
        return None
    if value == "auto":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    p = Path(value).expanduser()
    if not (p / STATE_FILE).is_file():
        raise UserError(
            f"resume_from_checkpoint: '{value}' is not a complete checkpoint (no {STATE_FILE}). "
            f"Give a checkpoint-<step> directory or 'auto'."
        )
    return p


def save_checkpoint(accelerator, output_dir: str | Path, step: int, *, model, tokenizer,
                    state: dict[str, Any], data_state: dict[str, Any], save_total_limit: int | None,
                    optimizer=None) -> Path:
    """Write checkpoint-<step> atomically. Call on every process (state saving is collective).

    `state` is the stage's counters (same on all processes); `data_state` is this process's
    data position, kept per process so each resumes its own stream. A model sharded by r1kit
    (`r1kit.modeling.fsdp`, not prepared by accelerate) and its `optimizer` are written as shards
    to `state/fsdp/` with torch.distributed.checkpoint.
    """
    out = Path(output_dir)
    tmp = out / f".tmp-checkpoint-{step}"
    final = out / f"checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))
    from r1kit.modeling.fsdp import is_fsdp, save_sharded  # torch: imported when a checkpoint is written

    if is_fsdp(model):
        save_sharded(model, optimizer, tmp / "state" / "fsdp")
    save_model(accelerator, model, tokenizer, tmp / "model")
    (tmp / f"data_state_{accelerator.process_index}.json").write_text(json.dumps(data_state))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=1))
        _fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # atomic on POSIX: the checkpoint appears whole or not at all
        _prune(out, save_total_limit)
    accelerator.wait_for_everyone()
    return final


# Files whose presence tells loaders (and r1kit's path checks) that a directory holds a whole model.
_MARKERS = ("config.json", "adapter_config.json")


def save_model(accelerator, model, tokenizer, path: str | Path) -> None:
    """Save the model + tokenizer into `path` so it loads by that path; call on every process (collective
    under FSDP).

    A peft model writes its adapter and, for an MoE, the routers' `e_score_correction_bias`
    (`router_bias.safetensors`): balancing moves those buffers, the adapter does not hold them, and
    `r1kit.modeling.loading.load_model` restores them. Atomic: written to a temp dir, then moved in with
    the marker files (`config.json`, `adapter_config.json`) removed first and put back last, so an
    interrupted save never looks like a whole model, even into an `output_dir` that holds other files.
    """
    from peft import PeftModel

    from r1kit.modeling.fsdp import full_state_dict, is_fsdp
    from r1kit.modeling.lora import save_adapter

    out = Path(path)
    # gathers FSDP shards (r1kit's FSDP2 or accelerate's) to the main process; a plain state_dict otherwise
    weights = full_state_dict(model) if is_fsdp(model) else accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        tmp = out / ".tmp-save"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(model)
        if isinstance(unwrapped, PeftModel):
            save_adapter(unwrapped, tmp, tokenizer, state_dict=weights)
        else:
            unwrapped.save_pretrained(tmp, state_dict=weights)
            tokenizer.save_pretrained(tmp)
        _fsync_dir(tmp)
        _move_in(tmp, out)
    accelerator.wait_for_everyone()


def _move_in(tmp: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in _MARKERS:
        (out / name).unlink(missing_ok=True)
    for p in sorted(tmp.iterdir(), key=lambda p: p.name in _MARKERS):
        target = out / p.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(p, target)
    tmp.rmdir()


def _fsync_dir(d: Path) -> None:
    """Flush file contents before the rename makes them visible (a crash must not expose empty files)."""
    for p in d.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def _prune(output_dir: Path, limit: int | None) -> None:
    if limit is None:
        return
    for old in list_checkpoints(output_dir)[:-limit]:
        shutil.rmtree(old)


def load_checkpoint(accelerator, path: Path, model=None, optimizer=None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore model, optimizer, scheduler and RNG states in place (objects must be `prepare`d, or, for a
    model sharded by r1kit, passed here with its optimizer); returns (stage state, this process's data state)."""
    accelerator.load_state(str(path / "state"))
    state = json.loads((path / STATE_FILE).read_text())
    data_file = path / f"data_state_{accelerator.process_index}.json"
    if not data_file.is_file():
        raise UserError(
            f"checkpoint '{path}' was written by fewer processes than this run has "
            f"(no {data_file.name}); resume with the same number of processes."
        )
    from r1kit.modeling.fsdp import is_fsdp, load_sharded

    if model is not None and is_fsdp(model):
        load_sharded(model, optimizer, path / "state" / "fsdp")
    return state, json.loads(data_file.read_text())


def clean_temp(output_dir: str | Path) -> None:
    """Remove half-written checkpoints left by a killed run."""
    d = Path(output_dir)
    if d.is_dir():
        for p in [*d.glob(".tmp-checkpoint-*"), d / ".tmp-save"]:
            shutil.rmtree(p, ignore_errors=True)
