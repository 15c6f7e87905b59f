"""Loss variants against hand-computed values and against TRL's GRPOTrainer loss on the same inputs."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from rl.losses import LossSettings, Normalizers, PolicyBatch, get_loss, group_advantages

# Two sequences; the second has 2 real tokens. Token ratios chosen so every clip case shows up:
# seq 0 (A=+1): 1.5 (clipped high at 1.28), 1.0, 0.5; seq 1 (A=-1): 0.7 (clipped low at 0.8), 1.1.
RATIOS = torch.tensor([[1.5, 1.0, 0.5], [0.7, 1.1, 1.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
ADV = torch.tensor([1.0, -1.0])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -1.2]])
SETTINGS = LossSettings(epsilon_low=0.2, epsilon_high=0.28, beta=0.0, max_completion_length=4)
NORM = Normalizers(num_seqs=2, num_tokens=5)


def _batch(**kw) -> PolicyBatch:
    logps = (OLD + RATIOS.log()).clone().requires_grad_(True)
    return PolicyBatch(logps=logps, old_logps=OLD, advantages=ADV, mask=MASK, **kw)


# seq 0 per-token losses: -1.28, -1.0, -0.5 (sum -2.78); seq 1: 0.8, 1.1 (sum 1.9).
HAND = {
    "grpo": (-2.78 / 3 + 1.9 / 2) / 2,
    "dapo": (-2.78 + 1.9) / 5,
    "dr_grpo": (-2.78 + 1.9) / (2 * 4),
    "gspo": (-(0.75 ** (1 / 3)) + math.sqrt(0.77)) / 2,  # geometric-mean ratios 0.9086, 0.8775: unclipped
}


@pytest.mark.parametrize("loss_type,expected", sorted(HAND.items()))
def test_loss_matches_hand_computed_value(loss_type, expected):
    loss, stats = get_loss(loss_type)(_batch(), SETTINGS, NORM)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    if loss_type != "gspo":
        assert stats["clip_high"].item() == 1 and stats["clip_low"].item() == 1


def test_dapo_gradient_is_zero_on_clipped_tokens_and_minus_a_r_over_n_elsewhere():
    b = _batch()
    loss, _ = get_loss("dapo")(b, SETTINGS, NORM)
    loss.backward()
    expected = torch.tensor([[0.0, -1.0 / 5, -0.5 / 5], [0.0, 1.1 / 5, 0.0]])
    torch.testing.assert_close(b.logps.grad, expected)


def test_kl_and_importance_weights_enter_per_token():
    ref = OLD + 0.1
    is_w = torch.tensor([[1.0, 0.5, 2.0], [1.0, 1.0, 1.0]])
    s = LossSettings(0.2, 0.28, beta=0.5, max_completion_length=4)
    loss, stats = get_loss("dapo")(_batch(ref_logps=ref, is_weights=is_w), s, NORM)
    policy = torch.tensor([[-1.28, -1.0 * 0.5, -0.5 * 2.0], [0.8, 1.1, 0.0]])
    d = ref - (OLD + RATIOS.log())
    kl = torch.exp(d) - d - 1
    assert loss.item() == pytest.approx(((policy + 0.5 * kl) * MASK).sum().item() / 5, abs=1e-6)
    assert stats["kl"].item() == pytest.approx((kl * MASK).sum().item(), abs=1e-6)


def test_group_advantages_zero_variance_group_gets_exactly_zero():
    r = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, float("nan")])
    adv = group_advantages(r, 3, "group")
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    # second group: mean 0.5 over the two scorable members, unbiased std 0.7071; unscorable -> 0
    assert adv[3].item() == pytest.approx(0.5 / (math.sqrt(0.5) + 1e-4), rel=1e-5)
    assert adv[5].item() == 0.0


def test_group_advantages_batch_scale_uses_given_std():
    adv = group_advantages(torch.tensor([1.0, 0.0, 3.0, 3.0]), 2, "batch", batch_std=torch.tensor(2.0))
    assert adv.tolist() == pytest.approx([0.5 / 2.0001, -0.5 / 2.0001, 0.0, 0.0])


# ----------------------------------------------------------------------------- TRL equivalence


def _trl_loss(loss_type, level, b: PolicyBatch, s: LossSettings, is_ratio=None):
    """Run TRL 1.16's GRPOTrainer._compute_loss on the same log-probs through a minimal stand-in `self`."""
    trl = pytest.importorskip("trl")
    B, T = b.mask.shape
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (b.logps, torch.zeros(B, T), None),
        top_entropy_quantile=1.0, aux_loss_enabled=False, off_policy_mask_threshold=None,
        importance_sampling_level=level, beta=s.beta, loss_type=loss_type,
        epsilon_low=s.epsilon_low, epsilon_high=s.epsilon_high,
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False),
        use_vllm=is_ratio is not None, vllm_importance_sampling_correction=is_ratio is not None,
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1,
        max_completion_length=s.max_completion_length, _entropy_bonus_enabled=False,
        accelerator=SimpleNamespace(num_processes=1, gather=lambda x: x, gather_for_metrics=lambda x: x,
                                    reduce=lambda x, reduction: x, sync_gradients=True),
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    fake.args.steps_per_generation = 1
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1),
        "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": b.mask,
        "advantages": b.advantages, "old_per_token_logps": b.old_logps,
        "ref_per_token_logps": b.ref_logps, "num_items_in_batch": b.mask.sum(),
        "importance_sampling_ratio": is_ratio,
    }
    return trl.GRPOTrainer._compute_loss(fake, None, inputs)


@pytest.mark.parametrize("ours,trl_type,level", [
    ("grpo", "grpo", "token"), ("dr_grpo", "dr_grpo", "token"), ("dapo", "dapo", "token"),
    ("gspo", "grpo", "sequence"),  # TRL's GSPO is loss_type grpo with sequence-level ratios
])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_same_loss_and_gradient_as_trl(ours, trl_type, level, beta):
    torch.manual_seed(0)
    B, T = 4, 6
    old = -torch.rand(B, T) * 3
    mask = (torch.arange(T) < torch.tensor([6, 3, 5, 1]).unsqueeze(1)).float()
    ref = old + 0.2 * torch.randn(B, T)
    s = LossSettings(0.2, 0.28, beta=beta, max_completion_length=T)
    n = Normalizers(num_seqs=B, num_tokens=mask.sum().item())
    is_ratio = torch.rand(B, T) + 0.5 if level == "token" else None
    grads = []
    for fn in ("ours", "trl"):
        logps = (old + 0.3 * torch.randn(B, T, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
        b = PolicyBatch(logps=logps, old_logps=old, advantages=torch.tensor([1.2, -0.7, 0.0, 2.0]), mask=mask,
                        is_weights=is_ratio, ref_logps=ref if beta else None)
        loss = get_loss(ours)(b, s, n)[0] if fn == "ours" else _trl_loss(trl_type, level, b, s, is_ratio)
        loss.backward()
        grads.append((loss.item(), logps.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5, abs=1e-7)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-7)
