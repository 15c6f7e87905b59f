"""GRPO policy-loss variants, one small function each, picked once at setup by `get_loss(name)`.

Every variant returns this micro-batch's share of the optimizer-step loss: sums over the
micro-batch divided by a normaliser counted over the *whole* step (all micro-batches, all
processes). Summing the micro-batch losses therefore gives exactly the full-batch loss, which is
what makes gradient accumulation 1x8 equal 8x1 and DDP equal one process.

- `grpo`    (DeepSeekMath eq. 3): token-mean inside each sequence, then mean over sequences.
- `dr_grpo` (Liu et al. 2025, "Understanding R1-Zero-Like Training"): token sum divided by a
            constant B * max_completion_length, so long wrong answers are not under-penalised.
- `dapo`    (Yu et al. 2025, eq. 8): token-level mean over all tokens of the step; pair it with
            clip-higher (epsilon_high > epsilon).
- `gspo`    (Zheng et al. 2025, eq. 7): one importance ratio per sequence, the geometric mean of
            its token ratios, clipped at sequence level.

The k3 KL estimate (Schulman 2020) is added per token, `beta * (exp(ref - logp) - (ref - logp) - 1)`,
and the truncated importance-sampling weights (engine/trainer mismatch, Yao et al. 2025) scale the
policy term per token, as in TRL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PolicyBatch:
    """What one micro-batch feeds the loss. B sequences, T completion positions."""

    logps: Tensor  # (B, T) current policy log-probs of the sampled tokens, with grad
    old_logps: Tensor  # (B, T) policy that sampled (detached)
    advantages: Tensor  # (B,)
    mask: Tensor  # (B, T) 1.0 on completion tokens that count
    is_weights: Tensor | None = None  # (B, T) truncated IS weights min(pi_old / pi_engine, C), detached
    ref_logps: Tensor | None = None  # (B, T) reference policy, needed when beta > 0


@dataclass(frozen=True)
class LossSettings:
    epsilon_low: float
    epsilon_high: float
    beta: float
    max_completion_length: int


@dataclass(frozen=True)
class Normalizers:
    """Counts over the whole optimizer step (all micro-batches and processes)."""

    num_seqs: float
    num_tokens: float


LossFn = Callable[[PolicyBatch, LossSettings, Normalizers], "tuple[Tensor, dict[str, Tensor]]"]


def k3_kl(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref); unbiased and always >= 0.

    >>> k3_kl(torch.tensor([-1.0]), torch.tensor([-1.0])).item()
    0.0
    """
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1


def clipped_surrogate(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """PPO's pessimistic objective, negated to a loss: -min(r A, clip(r, 1-eps_low, 1+eps_high) A).

    >>> clipped_surrogate(torch.tensor([1.5]), torch.tensor([1.0]), 0.2, 0.28).item()  # clipped at 1.28
    -1.2799999713897705
    """
    return -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)


def _clip_stats(ratio: Tensor, adv: Tensor, mask: Tensor, s: LossSettings) -> dict[str, Tensor]:
    """Token counts where the clip is active (the gradient is zero there); summed, not averaged."""
    ratio = ratio.detach().expand_as(mask)
    low = ((ratio < 1 - s.epsilon_low) & (adv < 0)).float()
    high = ((ratio > 1 + s.epsilon_high) & (adv > 0)).float()
    return {"clip_low": (low * mask).sum(), "clip_high": (high * mask).sum()}


def _add_is_and_kl(policy_term: Tensor, b: PolicyBatch, s: LossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """Scale the policy term by the IS weights, add beta * k3 KL; returns (B, T) per-token loss."""
    per_token = policy_term.expand_as(b.mask)
    if b.is_weights is not None:
        per_token = per_token * b.is_weights
    stats: dict[str, Tensor] = {}
    if s.beta > 0:
        kl = k3_kl(b.logps, b.ref_logps)
        per_token = per_token + s.beta * kl
        stats["kl"] = (kl.detach() * b.mask).sum()
    return per_token, stats


def _token_level(b: PolicyBatch, s: LossSettings) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token clipped objective with per-token ratios (GRPO, Dr. GRPO, DAPO)."""
    adv = b.advantages.unsqueeze(1)  # (B, 1)
    ratio = torch.exp(b.logps - b.old_logps)  # (B, T)
    per_token, stats = _add_is_and_kl(clipped_surrogate(ratio, adv, s.epsilon_low, s.epsilon_high), b, s)
    return per_token, {**stats, **_clip_stats(ratio, adv, b.mask, s)}


def _seq_token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """(B,) mean over each sequence's own tokens; an all-masked sequence contributes 0."""
    return (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def grpo_loss(b: PolicyBatch, s: LossSettings, n: Normalizers) -> tuple[Tensor, dict[str, Tensor]]:
    per_token, stats = _token_level(b, s)
    return _seq_token_mean(per_token, b.mask).sum() / n.num_seqs, stats


def dr_grpo_loss(b: PolicyBatch, s: LossSettings, n: Normalizers) -> tuple[Tensor, dict[str, Tensor]]:
    per_token, stats = _token_level(b, s)
    return (per_token * b.mask).sum() / (n.num_seqs * s.max_completion_length), stats


def dapo_loss(b: PolicyBatch, s: LossSettings, n: Normalizers) -> tuple[Tensor, dict[str, Tensor]]:
    per_token, stats = _token_level(b, s)
    return (per_token * b.mask).sum() / n.num_tokens, stats


def gspo_loss(b: PolicyBatch, s: LossSettings, n: Normalizers) -> tuple[Tensor, dict[str, Tensor]]:
    adv = b.advantages.unsqueeze(1)  # (B, 1)
    # GSPO eq. 7: s_i = (pi/pi_old)^(1/|y_i|), the geometric mean of the token ratios.
    seq_log_ratio = _seq_token_mean(b.logps - b.old_logps, b.mask).unsqueeze(1)  # (B, 1)
    ratio = torch.exp(seq_log_ratio)
    per_token, stats = _add_is_and_kl(clipped_surrogate(ratio, adv, s.epsilon_low, s.epsilon_high), b, s)
    return _seq_token_mean(per_token, b.mask).sum() / n.num_seqs, {**stats, **_clip_stats(ratio, adv, b.mask, s)}


LOSSES: dict[str, LossFn] = {"grpo": grpo_loss, "dr_grpo": dr_grpo_loss, "dapo": dapo_loss, "gspo": gspo_loss}


def get_loss(name: str) -> LossFn:
    """The loss function for `loss_type` (validated by GRPOConfig, so a KeyError here is a bug)."""
    return LOSSES[name]


def group_advantages(rewards: Tensor, group_size: int, scale: str, batch_std: Tensor | None = None) -> Tensor:
    """Group-relative advantages (DeepSeekMath eq. 4). rewards: (N,) with NaN = unscorable.

    Unscorable completions are left out of their group's mean/std and get advantage 0. `scale`:
    'group' divides by the group std, 'batch' by `batch_std` (the whole step's, computed by the
    caller across processes), 'none' leaves the centred reward (Dr. GRPO). A group whose rewards
    are all equal gets advantage 0 whatever the scale.

    >>> group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2, "none").tolist()
    [0.5, -0.5, 0.0, 0.0]
    """
    grouped = rewards.view(-1, group_size)  # (N/G, G)
    valid = ~torch.isnan(grouped)
    count = valid.sum(1, keepdim=True).clamp(min=1)
    filled = torch.where(valid, grouped, torch.zeros_like(grouped))
    mean = filled.sum(1, keepdim=True) / count
    centred = torch.where(valid, grouped - mean, torch.zeros_like(grouped))
    # Equal rewards teach nothing; force an exact 0 so float rounding in the mean cannot leak a gradient.
    spread = torch.where(valid, grouped, -torch.inf).amax(1) - torch.where(valid, grouped, torch.inf).amin(1)
    centred = torch.where((spread > 0).unsqueeze(1), centred, torch.zeros_like(centred))
    if scale == "group":
        # Unbiased std as in TRL's nanstd; a group with one scorable member has no spread.
        std = (centred.pow(2).sum(1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()
        centred = centred / (std + 1e-4)
    elif scale == "batch":
        centred = centred / (batch_std + 1e-4)
    return centred.reshape(-1)
