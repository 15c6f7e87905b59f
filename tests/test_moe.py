"""r1kit/modeling/moe.py: expert-load tracking, DeepSeek-V3 bias balancing, the router aux loss and routing replay (R2).

Every test builds a tiny transformers DeepseekV3 MoE (3 layers, layer 0 dense, 8 routed experts, top-2) in memory.
"""

from __future__ import annotations

import os
import socket
from functools import partial

import pytest
import torch
import torch.distributed as dist
import tiny_models
from tiny_models import N_EXPERTS, TOP_K

from r1kit.modeling.moe import (
    ExpertLoadTracker,
    RoutingReplay,
    expert_load_metrics,
    find_routers,
    is_moe,
    router_aux_loss,
    update_expert_bias,
)


pytestmark = pytest.mark.usefixtures("few_threads")


def tiny_moe(seed: int = 0) -> torch.nn.Module:
    return tiny_models.tiny_moe(seed).eval()


def batch(seed: int = 0, b: int = 4, t: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(seed))


def capture_routing(model) -> tuple[dict[int, list[torch.Tensor]], list]:
    """Every router call's top-k indices, by layer, straight from the gate outputs (independent of r1kit.modeling.moe)."""
    seen: dict[int, list[torch.Tensor]] = {}
    handles = []
    for layer, router in find_routers(model).items():

        def hook(module, args, output, layer=layer):
            seen.setdefault(layer, []).append(output[2].detach().clone())

        handles.append(router.register_forward_hook(hook))
    return seen, handles


# ---------------------------------------------------------------- detection


def test_is_moe_on_plain_peft_and_wrapped_models():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    moe = tiny_moe()
    assert is_moe(moe)
    assert sorted(find_routers(moe)) == [1, 2]  # layer 0 is dense (first_k_dense_replace=1)
    assert is_moe(get_peft_model(tiny_moe(), LoraConfig(r=2, target_modules=["q_proj"])))

    class Wrapper(torch.nn.Module):  # the shape of DDP / accelerate wrappers: the model under `.module`
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert is_moe(Wrapper(moe))
    assert sorted(find_routers(Wrapper(moe))) == [1, 2]
    dense = AutoModelForCausalLM.from_config(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    assert not is_moe(dense)
    with pytest.raises(ValueError, match="no MoE router"):
        ExpertLoadTracker(dense)


# ---------------------------------------------------------------- bias update


def test_bias_update_matches_hand_computation():
    model = tiny_moe()
    routers = find_routers(model)
    routers[1].e_score_correction_bias.fill_(0.5)
    counts = {1: torch.tensor([10, 0, 5, 5, 5, 5, 5, 5]), 2: torch.tensor([0, 0, 0, 0, 0, 0, 0, 40])}
    metrics = update_expert_bias(model, counts, gamma=0.1)
    # layer 1: mean 5 -> sign(5 - load) = [-1, +1, 0, ...]; layer 2: mean 5 -> [+1]*7 + [-1]
    torch.testing.assert_close(
        routers[1].e_score_correction_bias, torch.tensor([0.4, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    )
    torch.testing.assert_close(routers[2].e_score_correction_bias, torch.tensor([0.1] * 7 + [-0.1]))
    assert metrics["moe/layer1/max_over_mean"] == pytest.approx(2.0)
    assert metrics["moe/layer2/max_over_mean"] == pytest.approx(8.0)
    assert metrics["moe/layer2/entropy"] == pytest.approx(0.0)
    assert metrics["moe/max_over_mean"] == pytest.approx(5.0)
    assert metrics["moe/bias_abs_mean"] == pytest.approx((0.5 + 0.1) / 2)


def test_bias_update_rejects_bad_input():
    model = tiny_moe()
    with pytest.raises(ValueError, match="gamma"):
        update_expert_bias(model, {1: torch.ones(N_EXPERTS)}, gamma=-1.0)
    with pytest.raises(ValueError, match=r"layers \[0\]"):
        update_expert_bias(model, {0: torch.ones(N_EXPERTS)}, gamma=0.1)


def skew_routers(model, tokens: torch.Tensor) -> None:
    """Spread-out random router rows (as after training, not the near-zero init), then push expert 0's row along
    the mean router input so that expert 0 is in nearly every token's top-2."""
    inputs: dict[int, torch.Tensor] = {}
    routers = find_routers(model)

    def keep_input(module, args, output, layer):
        inputs[layer] = args[0].reshape(-1, args[0].shape[-1])

    handles = [r.register_forward_hook(partial(keep_input, layer=layer)) for layer, r in routers.items()]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for router in routers.values():
            router.weight.copy_(torch.randn(router.weight.shape, generator=g) / 16)
        model(tokens)
        for layer, router in routers.items():
            mean = inputs[layer].mean(0)
            router.weight[0] += (
                3.0 * mean / mean.norm() ** 2
            )  # expert 0's logit rises by ~3 on the mean input
    for h in handles:
        h.remove()


def measured_load(model, tracker, tokens) -> dict[int, torch.Tensor]:
    tracker.reset()
    with torch.no_grad():
        model(tokens)
    return tracker.counts()


@pytest.mark.parametrize("gamma", [0.02, 0.0])
def test_bias_steps_move_skewed_load_toward_uniform(gamma):
    model = tiny_moe()
    tokens = batch(1, b=4, t=32)
    skew_routers(model, tokens)
    tracker = ExpertLoadTracker(model)
    before = expert_load_metrics(measured_load(model, tracker, tokens))
    assert (
        before["moe/max_over_mean"] > 3.5
    )  # precondition: expert 0 is in almost every token's top-2 (max 4)
    for _ in range(30 if gamma else 3):
        update_expert_bias(model, measured_load(model, tracker, tokens), gamma)
    after = expert_load_metrics(measured_load(model, tracker, tokens))
    biases = [r.e_score_correction_bias for r in find_routers(model).values()]
    if gamma == 0:
        assert all(torch.equal(b, torch.zeros(N_EXPERTS)) for b in biases)
        assert after == before
    else:
        assert after["moe/max_over_mean"] < 1.5 < before["moe/max_over_mean"]
        assert after["moe/entropy"] > before["moe/entropy"]
        assert all(b[0] < 0 for b in biases)  # the overloaded expert was pushed down


# ---------------------------------------------------------------- tracker


def test_tracker_counts_equal_manual_count_and_respect_mask_and_enabled():
    model = tiny_moe()
    tracker = ExpertLoadTracker(model)
    seen, _ = capture_routing(model)
    tokens = batch(2)
    mask = torch.zeros(4, 16, dtype=torch.long)
    mask[:, 5:12] = 1  # e.g. a completion mask
    mask[3] = 0
    tracker.set_mask(mask)
    with torch.no_grad():
        model(tokens)
    for layer, counts in tracker.counts().items():
        manual = torch.bincount(seen[layer][0][mask.reshape(-1).bool()].reshape(-1), minlength=N_EXPERTS)
        assert torch.equal(counts, manual)
        assert counts.sum() == 3 * 7 * TOP_K
    # the mask was for that forward only: the next one counts every token
    with torch.no_grad():
        model(tokens)
    for layer, counts in tracker.counts().items():
        manual = torch.bincount(seen[layer][0][mask.reshape(-1).bool()].reshape(-1), minlength=N_EXPERTS)
        assert torch.equal(counts - manual, torch.bincount(seen[layer][1].reshape(-1), minlength=N_EXPERTS))
    total = sum(c.sum() for c in tracker.counts().values())
    tracker.enabled = False
    with torch.no_grad():
        model(tokens)
    assert sum(c.sum() for c in tracker.counts().values()) == total
    tracker.reset()
    assert all(c.sum() == 0 for c in tracker.counts().values())
    tracker.remove()
    tracker.enabled = True
    with torch.no_grad():
        model(tokens)
    assert all(c.sum() == 0 for c in tracker.counts().values())


def test_tracker_rejects_mask_of_another_batch():
    model = tiny_moe()
    tracker = ExpertLoadTracker(model)
    tracker.set_mask(torch.ones(2, 16))
    with pytest.raises(ValueError, match="token mask has 32 entries"):
        model(batch(0))


def test_tracker_does_not_count_gradient_checkpointing_recompute_twice():
    tokens = batch(3)
    plain = tiny_moe().train()
    plain_tracker = ExpertLoadTracker(plain)
    plain(tokens).logits.sum().backward()

    ckpt = tiny_moe().train()
    ckpt.activation_checkpointing_enable()
    tracker = ExpertLoadTracker(ckpt)
    seen, _ = capture_routing(ckpt)
    ckpt(tokens).logits.sum().backward()
    assert all(len(calls) == 2 for calls in seen.values())  # precondition: each router really ran twice
    for layer, counts in tracker.counts().items():
        assert torch.equal(counts, plain_tracker.counts()[layer])
        assert counts.sum() == tokens.numel() * TOP_K


# ---------------------------------------------------------------- aux loss


def test_router_aux_loss_hand_values_and_mask():
    logits = torch.zeros(4, 4)  # 2 sequences x 2 tokens, 4 experts, equal affinities
    # sequence 0 spreads its picks over all experts (balanced), sequence 1 puts both tokens on experts 0 and 1
    picks = torch.tensor([[0, 1], [2, 3], [0, 1], [0, 1]])
    assert router_aux_loss(logits, picks, (2, 2), alpha=1.0).item() == pytest.approx(1.0)
    # equal affinities make P uniform, so the loss is 1 whatever f is; skew the affinities towards experts 0, 1
    logits = torch.tensor([[3.0, 3.0, -3.0, -3.0]]).repeat(4, 1)
    s = torch.sigmoid(torch.tensor([3.0, -3.0]))
    p_hi = (s[0] / (2 * s[0] + 2 * s[1])).item()
    balanced = 4 / (2 * 2) * (p_hi + p_hi + (0.5 - p_hi) * 2)  # f = [1, 1, 1, 1]
    skewed = 4 / (2 * 2) * 2 * (2 * p_hi)  # f = [2, 2, 0, 0]
    assert router_aux_loss(logits, picks, (2, 2), alpha=1.0).item() == pytest.approx((balanced + skewed) / 2)
    # masking sequence 1 out leaves only the balanced one; a fully masked sequence does not count
    mask = torch.tensor([[1, 1], [0, 0]])
    assert router_aux_loss(logits, picks, (2, 2), alpha=1.0, token_mask=mask).item() == pytest.approx(
        balanced
    )


def test_tracker_aux_loss_matches_router_outputs_and_reaches_router_weights():
    model = tiny_moe().train()
    tracker = ExpertLoadTracker(model, with_aux_loss=True)
    outputs: dict[int, tuple] = {}

    def keep_output(module, args, output, layer):
        outputs[layer] = (output[0], output[2])

    for layer, router in find_routers(model).items():
        router.register_forward_hook(partial(keep_output, layer=layer))
    mask = torch.ones(4, 16)
    mask[0, :8] = 0
    tracker.set_mask(mask)
    model(batch(4))
    loss = tracker.aux_loss(0.01)
    expected = (
        0.01
        * torch.stack(
            [router_aux_loss(logits, idx, (4, 16), 1.0, mask) for logits, idx in outputs.values()]
        ).mean()
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    for router in find_routers(model).values():
        assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


def test_aux_loss_needs_the_flag_and_a_forward():
    model = tiny_moe()
    with pytest.raises(RuntimeError, match="with_aux_loss=True"):
        ExpertLoadTracker(model).aux_loss(0.1)
    with pytest.raises(RuntimeError, match="no aux-loss terms"):
        ExpertLoadTracker(model, with_aux_loss=True).aux_loss(0.1)


# ---------------------------------------------------------------- routing replay


def completion_logprobs(model, tokens) -> torch.Tensor:
    logits = model(tokens).logits[:, :-1].float()  # (B, T-1, V)
    return torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (B, T-1)


def test_replay_without_weight_change_gives_identical_logprobs():
    model = tiny_moe()
    rr = RoutingReplay(model)
    tokens = batch(5)
    with torch.no_grad():
        with rr.record("mb0"):
            recorded = completion_logprobs(model, tokens)
        with rr.replay("mb0"):
            replayed = completion_logprobs(model, tokens)
        plain = completion_logprobs(model, tokens)
    assert torch.equal(replayed, recorded)
    assert torch.equal(replayed, plain)


def perturb_routers(model, seed: int = 7) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for router in find_routers(model).values():
            router.weight.copy_(torch.randn(router.weight.shape, generator=g) * 0.5)


def test_replay_forces_recorded_experts_after_router_change_and_keeps_router_grad():
    model = tiny_moe()
    # hooks registered before the replay's: they must still see (and count) the replayed experts
    tracker = ExpertLoadTracker(model)
    seen, _ = capture_routing(model)
    rr = RoutingReplay(model)
    tokens = batch(6)
    with torch.no_grad(), rr.record("old"):
        model(tokens)
    recorded = {layer: calls[-1] for layer, calls in seen.items()}
    recorded_counts = tracker.counts()
    perturb_routers(model)
    with torch.no_grad():
        model(tokens)
    changed = {layer: calls[-1] for layer, calls in seen.items()}
    assert any(
        not torch.equal(changed[l].sort(-1)[0], recorded[l].sort(-1)[0]) for l in recorded
    )  # precondition

    tracker.reset()
    model.train()
    with rr.replay("old"):
        completion_logprobs(model, tokens).sum().backward()
    for layer, calls in seen.items():
        assert torch.equal(calls[-1], recorded[layer])
        assert torch.equal(tracker.counts()[layer], recorded_counts[layer])
    for router in find_routers(model).values():
        assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


def test_replay_with_gradient_checkpointing_matches_replay_without():
    tokens = batch(8)
    grads = []
    for checkpointing in (False, True):
        model = tiny_moe().train()
        if checkpointing:
            model.activation_checkpointing_enable()
        rr = RoutingReplay(model)
        with torch.no_grad(), rr.record(0):
            model(tokens)
        perturb_routers(model)
        with rr.replay(0):
            completion_logprobs(model, tokens).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_replay_misuse_is_reported():
    model = tiny_moe()
    rr = RoutingReplay(model)
    with pytest.raises(KeyError, match="no routing recorded"), rr.replay("nope"):
        pass
    with torch.no_grad(), rr.record("a"):
        model(batch(0))
    with (
        pytest.raises(RuntimeError, match="replay needs the same micro-batch"),
        torch.no_grad(),
        rr.replay("a"),
    ):
        model(batch(0, b=2))
    with pytest.raises(RuntimeError, match="cannot nest"), rr.replay("a"), rr.record("b"):
        pass
    rr.clear()
    with pytest.raises(KeyError), rr.replay("a"):
        pass


# ---------------------------------------------------------------- all-reduce across processes


class FakeTopkRouter(torch.nn.Module):
    """Stands in for a DeepseekV3 router: returns (logits, weights, indices) with fixed per-rank choices."""

    def __init__(self, rank: int):
        super().__init__()
        self.top_k = 1
        self.weight = torch.nn.Parameter(torch.zeros(4, 2))
        self.rank = rank

    def forward(self, hidden):  # (B, T, 2)
        n = hidden.shape[0] * hidden.shape[1]
        indices = torch.full((n, 1), self.rank)  # rank r sends every token to expert r
        return torch.zeros(n, 4), torch.ones(n, 1), indices


class FakeMoE(torch.nn.Module):
    def __init__(self, rank: int):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Module()])
        self.layers[0].gate = FakeTopkRouter(rank)

    def forward(self, hidden):
        return self.layers[0].gate(hidden)


def _all_reduce_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model = FakeMoE(rank)
    tracker = ExpertLoadTracker(model)
    model(torch.zeros(1, 3 + rank, 2))  # rank 0: 3 tokens on expert 0, rank 1: 4 tokens on expert 1
    tracker.all_reduce()
    torch.save(tracker.counts(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_all_reduce_sums_counts_over_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_all_reduce_worker, args=(2, port, str(tmp_path)), nprocs=2)
    for rank in range(2):
        counts = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(counts[0], torch.tensor([3, 4, 0, 0]))


# ---------------------------------------------------------------- the real r1kit tiny policy


def test_tracker_and_replay_on_r1kit_tiny_policy(tiny_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "policy").float().eval()
    assert is_moe(model)
    tracker = ExpertLoadTracker(model)
    rr = RoutingReplay(model)
    tokens = torch.randint(0, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with rr.record("mb"):
            recorded = completion_logprobs(model, tokens)
        with rr.replay("mb"):
            replayed = completion_logprobs(model, tokens)
    assert torch.equal(recorded, replayed)
    top_k = model.config.num_experts_per_tok
    assert all(c.sum() == 2 * tokens.numel() * top_k for c in tracker.counts().values())  # two forwards
