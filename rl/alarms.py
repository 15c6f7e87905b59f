"""Shortcut alarms: signs in a GRPO run's own metrics that the policy is earning reward without the task.

Checked once per step on metrics already averaged over processes, so every process reaches the same
verdict. An alarm is printed loudly (stderr, main process) and flagged in the step's metrics
(`alarm/<name>` = 1.0, so metrics.jsonl and the trackers keep it) when its condition starts, and again
at most every `REPEAT` steps while it lasts.

- `accuracy_without_format`: an accuracy-type reward's mean rose by at least `RISE` from the run's first
  `WINDOW` steps while every format-type reward stayed at exactly 0. Answers are being scored without the
  declared format: the issue-11 run scored the prompt's own expression (`67 - 66`, 6 tokens, no tags) 1.0.
- `short_completions`: mean completion length over the last `WINDOW` steps under the recipe's floor
  `min_completion_length_alarm` (tokens; the same run's completions collapsed from ~45 tokens to 6).
- `no_reward_variance`: `zero_variance_patience` steps in a row in which no group had reward variance
  (every completion of every group scored the same, all right or all wrong): every advantage is 0 and the
  policy has nothing left to learn from this data at this temperature. From then on each step samples one
  round only, without oversampling (`saturated`), instead of spending `max_sampling_rounds` extra rounds a
  step finding nothing, until a group varies again. The run is not stopped: a varied group can still appear
  (new prompts, sampling noise), and the user decides whether to stop it or move to harder data.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# Registry rewards that score the answer itself, and those that score only its form.
ACCURACY_REWARDS = ("accuracy", "strict_accuracy", "countdown", "code", "binary_code")
FORMAT_REWARDS = ("format", "tag_count")
WINDOW = 10  # steps averaged, so one noisy step neither raises nor clears an alarm
RISE = 0.1  # accuracy gain over the first window that counts as "rising"
REPEAT = 100  # steps between two reports of an alarm that lasts


def _mean(xs) -> float:
    return sum(xs) / len(xs)


@dataclass
class Alarms:
    """What the alarms remember between steps (not checkpointed: a resumed run re-learns its baselines)."""

    min_completion_length: int = 0  # 0 disables the short-completion alarm
    patience: int = 0  # 0 disables the zero-variance alarm and the one-round mode
    flat_steps: int = 0  # consecutive steps without a varied group
    _first: dict[str, list[float]] = field(default_factory=dict)
    _recent: dict[str, deque] = field(default_factory=dict)
    _last_report: dict[str, int] = field(default_factory=dict)

    @property
    def saturated(self) -> bool:
        """No group has varied for `patience` steps: sample one round per step, no oversampling."""
        return self.patience > 0 and self.flat_steps >= self.patience

    def _push(self, key: str, value: float) -> None:
        first = self._first.setdefault(key, [])
        if len(first) < WINDOW:
            first.append(value)
        self._recent.setdefault(key, deque(maxlen=WINDOW)).append(value)

    def _full(self, key: str) -> bool:
        return len(self._recent.get(key, ())) == WINDOW

    def _accuracy_without_format(self, names: list[str]) -> str | None:
        acc = [n for n in names if n in ACCURACY_REWARDS and self._full(n)]
        fmt = [n for n in names if n in FORMAT_REWARDS and self._full(n)]
        if not acc or not fmt or any(max(self._recent[n]) > 0 for n in fmt):
            return None
        for n in acc:
            before, now = _mean(self._first[n]), _mean(self._recent[n])
            if now >= before + RISE:
                return (f"reward '{n}' rose from {before:.2f} to {now:.2f} while {', '.join(fmt)} stayed at 0 for "
                        f"{WINDOW} steps: the policy earns it without the declared format (a shortcut such as an "
                        "echo of the prompt); open samples.jsonl and check what earns the reward.")
        return None

    def _short_completions(self) -> str | None:
        if not self.min_completion_length or not self._full("completion_length"):
            return None
        mean = _mean(self._recent["completion_length"])
        if mean >= self.min_completion_length:
            return None
        return (f"mean completion length {mean:.1f} tokens over the last {WINDOW} steps is under "
                f"min_completion_length_alarm={self.min_completion_length}: completions collapsed (a shortcut "
                "or a degenerate policy); open samples.jsonl, or lower the floor if short answers are right.")

    def _no_variance(self) -> str | None:
        if not self.saturated:
            return None
        return (f"no group had reward variance for {self.flat_steps} steps in a row (zero_variance_patience="
                f"{self.patience}): every advantage is 0, so the policy has nothing left to learn from this data. "
                "Sampling one round per step from now on; stop the run, or use harder data or a higher temperature.")

    def observe(self, step: int, metrics: dict[str, float], reward_names: list[str], any_varied: bool) -> dict[str, str]:
        """Record one step's global metrics; return {alarm name: message} for the alarms to report now."""
        for n in reward_names:
            if f"rewards/{n}" in metrics:
                self._push(n, metrics[f"rewards/{n}"])
        self._push("completion_length", metrics["completion_length"])
        self.flat_steps = 0 if any_varied else self.flat_steps + 1
        found = {"accuracy_without_format": self._accuracy_without_format(reward_names),
                 "short_completions": self._short_completions(), "no_reward_variance": self._no_variance()}
        out = {}
        for name, msg in found.items():
            if msg is not None and step - self._last_report.get(name, -REPEAT) >= REPEAT:
                self._last_report[name] = step
                out[name] = msg
        return out
