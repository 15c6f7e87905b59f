"""Metrics: one line per step to stdout, every step to `metrics.jsonl`, and to TensorBoard / W&B /
trackio when a recipe's `report_to` asks for them; sample rollouts to `samples.jsonl`.

Only the main process writes. Asking for a backend that is not installed is a user error (with the
pip command), never a silent skip: a run that was meant to be watched should not start unwatched.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from r1kit.errors import UserError

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def _open_backend(name: str, log_dir: Path, config: dict, project: str) -> Any:
    try:
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter(log_dir=str(log_dir / "tensorboard"))
        if name == "wandb":
            import wandb

            return wandb.init(project=project, config=config, dir=str(log_dir))
        import trackio

        return trackio.init(project=project, config=config)
    except ImportError:
        raise UserError(
            f"report_to lists '{name}' but it is not installed: `pip install {_PACKAGES[name]}`, "
            f"or remove it from report_to."
        ) from None


def _log_backend(name: str, handle: Any, step: int, metrics: dict[str, float]) -> None:
    if name == "tensorboard":
        for k, v in metrics.items():
            handle.add_scalar(k, v, step)
    else:
        handle.log(metrics, step=step) if name == "wandb" else handle.log(metrics)


def format_metrics(step: int, metrics: dict[str, float], keys: tuple[str, ...]) -> str:
    """One short stdout line with the metrics a human watches.

    >>> format_metrics(3, {"reward": 0.51234, "loss": -0.001, "other": 1.0}, ("reward", "loss", "missing"))
    'step 3 | reward 0.5123 | loss -0.001'
    """
    parts = [f"step {step}"] + [f"{k} {metrics[k]:.4g}" for k in keys if k in metrics]
    return " | ".join(parts)


class Tracker:
    """Write metrics and samples; a no-op on non-main processes."""

    def __init__(self, output_dir: str | Path, report_to: list[str], config: dict, *, is_main: bool = True,
                 stdout_keys: tuple[str, ...] = (), project: str = "r1kit"):
        self.is_main = is_main
        self.stdout_keys = stdout_keys
        self.dir = Path(output_dir)
        self.backends: dict[str, Any] = {}
        if not is_main:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.dir / "metrics.jsonl", "a")
        self._samples = open(self.dir / "samples.jsonl", "a")
        for name in report_to:
            if name != "none":
                self.backends[name] = _open_backend(name, self.dir, config, project)

    def log(self, step: int, metrics: dict[str, float], echo: bool = True) -> None:
        if not self.is_main:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
        self._metrics.write(json.dumps({"step": step, "time": time.time(), **clean}) + "\n")
        self._metrics.flush()
        finite = {k: v for k, v in clean.items() if v is not None}
        for name, handle in self.backends.items():
            _log_backend(name, handle, step, finite)
        if echo:
            print(format_metrics(step, finite, self.stdout_keys), flush=True)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        if not self.is_main:
            return
        for row in rows:
            self._samples.write(json.dumps({"step": step, **row}, default=str) + "\n")
        self._samples.flush()

    def close(self) -> None:
        if not self.is_main:
            return
        self._metrics.close()
        self._samples.close()
        for name, handle in self.backends.items():
            handle.close() if name == "tensorboard" else handle.finish()
