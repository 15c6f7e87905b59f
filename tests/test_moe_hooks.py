"""r1kit/modeling/moe.py `expert_balancer`: the one MoE object a training loop holds (GRPO's `Run.experts`, the
SFT/pretrain balancers), and its no-op variant for dense models, chosen once at setup."""

from __future__ import annotations

import pytest
import tiny_models
import torch
from tiny_models import TOP_K

from r1kit.modeling.moe import ExpertBalancer, NoExperts, expert_balancer, find_routers

pytestmark = pytest.mark.usefixtures("few_threads")


def tokens(seed: int, b: int = 4, t: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(seed))


def dense_model() -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig

    return AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                                        num_hidden_layers=1, num_attention_heads=2,
                                                        num_key_value_heads=2))


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def routing_of(model: torch.nn.Module, ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """Each router's top-k indices for one forward, read from its output after every r1kit hook ran."""
    seen, handles = {}, []
    for layer, router in find_routers(model).items():
        handles.append(router.register_forward_hook(
            lambda m, a, out, layer=layer: seen.__setitem__(layer, out[2].detach().clone())))
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return seen


def test_dense_model_gets_no_op_hooks():
    model = dense_model()
    experts = expert_balancer(model, 0.01, aux_loss_coef=0.1, routing_replay=True)  # replay on dense: no error
    assert isinstance(experts, NoExperts) and not experts.needs_every_token
    assert hook_count(model) == 0
    experts.enabled = True
    experts.set_mask(torch.ones(2, 4))
    with experts.record(0):
        model(tokens(0, 2, 4) % 64)
    with experts.replay(0):
        model(tokens(1, 2, 4) % 64)
    assert experts.aux_loss() == 0.0 and experts.after_step() == {}
    experts.clear_replay()
    experts.remove()


@pytest.mark.parametrize("aux_coef, gamma", [(0.0, 0.0), (0.1, 0.0), (0.0, 0.01), (0.1, 0.01)])
def test_moe_hooks_count_masked_tokens_balance_and_give_the_aux_loss(aux_coef, gamma):
    model = tiny_models.tiny_moe(0).train()
    experts = expert_balancer(model, gamma, aux_loss_coef=aux_coef)
    assert isinstance(experts, ExpertBalancer) and experts.needs_every_token
    ids = tokens(0)
    mask = torch.ones_like(ids)
    mask[:, :10] = 0  # e.g. prompt tokens: their routing must not count
    experts.enabled = False
    model(ids)  # a sampling pass: not counted
    experts.enabled = True
    experts.set_mask(mask)
    loss = model(ids).logits.float().pow(2).mean()
    aux = experts.aux_loss()
    if aux_coef:
        assert aux.requires_grad and aux.item() > 0  # differentiable, reaches the routers
        (loss + aux).backward()
    else:
        assert aux == 0.0 and not isinstance(aux, torch.Tensor)
    counts = {layer: c.clone() for layer, c in experts.tracker.counts().items()}
    assert {layer: int(c.sum()) for layer, c in counts.items()} == {1: 4 * 6 * TOP_K, 2: 4 * 6 * TOP_K}
    metrics = experts.after_step()
    assert metrics["moe/max_over_mean"] >= 1.0 and 0.0 < metrics["moe/entropy"] <= 1.0
    biases = torch.stack([r.e_score_correction_bias for r in find_routers(model).values()])  # (layers, E)
    expected = torch.stack([gamma * torch.sign(c.float().mean() - c.float()) for c in counts.values()])
    assert torch.allclose(biases, expected) and metrics["moe/bias_abs_mean"] == pytest.approx(expected.abs().mean())
    assert all(int(c.sum()) == 0 for c in experts.tracker.counts().values())  # reset for the next step
    experts.remove()
    assert hook_count(model) == 0


def test_replay_forces_the_recorded_experts_until_cleared():
    model = tiny_models.tiny_moe(0).eval()
    a, b = tokens(1), tokens(2)
    natural_a, natural_b = routing_of(model, a), routing_of(model, b)
    assert any(not torch.equal(natural_a[layer], natural_b[layer]) for layer in natural_a)  # precondition
    experts = expert_balancer(model, 0.0, routing_replay=True)
    with experts.record("mb0"), torch.no_grad():
        model(a)
    with experts.replay("mb0"):
        replayed = routing_of(model, b)
    assert all(torch.equal(replayed[layer], natural_a[layer]) for layer in natural_a)
    assert all(torch.equal(routing_of(model, b)[layer], natural_b[layer]) for layer in natural_b)  # outside: free
    experts.clear_replay()
    with pytest.raises(KeyError, match="no routing recorded"), experts.replay("mb0"):
        pass
    experts.remove()
    assert hook_count(model) == 0

    plain = expert_balancer(model, 0.0)  # routing_replay off: record/replay are no-op contexts
    with plain.record("mb0"):
        pass
    with plain.replay("mb0"):
        assert all(torch.equal(routing_of(model, b)[layer], natural_b[layer]) for layer in natural_b)
    plain.remove()
