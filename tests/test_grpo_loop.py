"""The GRPO loop end to end on the tiny MoE policy, plus its invariants (CPU, a few steps each)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from r1kit.config import load_config
from r1kit.errors import UserError
from rl import grpo
from rl.config import GRPOConfig

torch.set_num_threads(1)


def letter_share(completions, **columns):
    """Share of ASCII letters in the text: varies between an untrained policy's completions, so groups
    have reward variance and the policy moves (registry rewards score 0 on random text).

    >>> letter_share(["ab1 ", ""])
    [0.5, 0.0]
    """
    return [sum(ch.isascii() and ch.isalpha() for ch in c) / max(len(c), 1) for c in completions]


REWARDS = [{"name": "accuracy"}, {"name": "test_letter_share"}]


@pytest.fixture(autouse=True)
def letter_share_reward(monkeypatch):
    """`test_letter_share` in the reward registry for one test only, so registry listings elsewhere
    never depend on which test modules ran first. Import this fixture to use the reward elsewhere."""
    from rewards import registry

    monkeypatch.setitem(registry._REGISTRY, "test_letter_share", letter_share)


def make_cfg(tiny_dir, out, **over) -> GRPOConfig:
    base = dict(model_name_or_path=str(tiny_dir / "policy"), dataset_name="synthetic:arithmetic",
                output_dir=str(out), max_samples=64, num_generations=4, per_device_train_batch_size=8,
                max_completion_length=12, max_steps=2, learning_rate=1e-3, lr_scheduler_type="constant",
                rewards=REWARDS, log_completions_steps=1, use_cpu=True, seed=0)
    return load_config(GRPOConfig, None, {**base, **over})


def params(run) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in run.accelerator.unwrap_model(run.model).named_parameters()}


def capture_grads(run, step: bool = True) -> dict[str, torch.Tensor]:
    """Record the gradients the optimizer is given (Adam's update would amplify float noise in tiny grads);
    with step=False the optimizer step is skipped, so several updates see the same weights."""
    grads: dict[str, torch.Tensor] = {}
    real_step = run.optimizer.step

    def recording_step(*args, **kwargs):
        for n, p in run.accelerator.unwrap_model(run.model).named_parameters():
            grads[n] = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
        return real_step(*args, **kwargs) if step else None

    run.optimizer.step = recording_step
    return grads


def fixed_batch(run, advantages: torch.Tensor, seed: int = 0) -> grpo.StepBatch:
    torch.manual_seed(seed)
    groups = grpo.sample_groups(run, len(advantages) // run.cfg.num_generations)
    return grpo.to_tensors(run, groups, advantages)


def norm_for(batch) -> grpo.Normalizers:
    return grpo.Normalizers(num_seqs=float(len(batch.advantages)), num_tokens=batch.completion_mask.sum().item())


def test_two_steps_log_metrics_samples_and_checkpoints(tiny_dir, tmp_path):
    cfg = make_cfg(tiny_dir, tmp_path, save_steps=1, eval_steps=2, eval_max_samples=4)
    run = grpo.setup_run(cfg)
    before = params(run)
    grpo.train(run)
    grpo.teardown_run(run)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2]  # step 0: the held-out eval before training
    assert set(lines[0]) == {"step", "time", "eval/accuracy", "eval/format", "eval/completion_length"}
    for key in ("reward", "rewards/accuracy", "rewards/test_letter_share", "completion_length", "truncated",
                "entropy", "grad_norm", "tokens_per_s", "dropped_groups", "clip_low", "moe/max_over_mean", "lr"):
        assert key in lines[1], key
    assert "eval/accuracy" in lines[2] and "eval/accuracy" not in lines[1]
    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {"prompt", "completion", "reward", "advantage", "accuracy"} <= set(samples[0])
    assert [p.name for p in sorted(tmp_path.glob("checkpoint-*"))] == ["checkpoint-1", "checkpoint-2"]
    assert (tmp_path / "checkpoint-2" / "model" / "config.json").is_file()
    assert not list(tmp_path.glob(".tmp-*"))
    assert (tmp_path / "config.json").is_file() and (tmp_path / "tokenizer.json").is_file()  # final policy
    assert any(not torch.equal(before[n], p) for n, p in params(run).items()), "the policy did not move"


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo", "gspo"])
def test_grad_accumulation_1x8_equals_8x1(tiny_dir, tmp_path, loss_type):
    scale = "none" if loss_type == "dr_grpo" else "group"
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0, -1.0, -1.0])
    results = []
    for mb, acc in ((8, 1), (1, 8)):
        cfg = make_cfg(tiny_dir, tmp_path / f"{mb}x{acc}", per_device_train_batch_size=mb,
                       gradient_accumulation_steps=acc, loss_type=loss_type, scale_rewards=scale,
                       moe_bias_update_speed=0.0, max_grad_norm=0.0)
        run = grpo.setup_run(cfg)
        batch = fixed_batch(run, adv)
        grads = capture_grads(run)
        metrics = grpo.update(run, batch, norm_for(batch))
        results.append((grads, metrics["loss"], metrics["grad_norm"]))
        grpo.teardown_run(run)
    (p1, loss1, g1), (p8, loss8, g8) = results
    assert loss1 == pytest.approx(loss8, rel=1e-4, abs=1e-6)
    assert g1 == pytest.approx(g8, rel=1e-4) and g1 > 0
    for n in p1:
        torch.testing.assert_close(p1[n], p8[n], rtol=1e-4, atol=1e-7, msg=n)


@pytest.mark.parametrize("micro", [8, 4])
def test_later_updates_use_the_first_updates_log_probs_as_old(tiny_dir, tmp_path, micro):
    """mu = 2 keeps the first update's detached log-probs as the old policy's instead of a separate no-grad
    forward: the second update must see exactly the ratios a precomputed old forward would give."""
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, 0.0, -1.0, -1.0])
    results = []
    for precompute in (True, False):
        cfg = make_cfg(tiny_dir, tmp_path / str(precompute), model_name_or_path=str(tiny_dir / "student"),
                       num_iterations=2, per_device_train_batch_size=micro, gradient_accumulation_steps=8 // micro,
                       loss_type="dapo", epsilon=0.01, learning_rate=0.05)  # a big step, so the ratio clips
        run = grpo.setup_run(cfg)
        batch = fixed_batch(run, adv)
        if precompute:
            with torch.no_grad():
                batch.old_logps = torch.cat([grpo.token_logps(run.model, grpo.micro_batch(run, batch, i, j), 1.0)[0]
                                             for i, j in grpo._micro_batches(run, 8)])
        grpo.fill_old_and_ref(run, batch)
        first = grpo.update(run, batch, norm_for(batch))
        assert first["clip_low"] + first["clip_high"] == 0.0  # the first update is on the old policy
        assert batch.old_logps is not None
        second = grpo.update(run, batch, norm_for(batch))
        results.append((second, params(run)))
        grpo.teardown_run(run)
    (m_pre, p_pre), (m_kept, p_kept) = results
    assert m_kept["clip_low"] + m_kept["clip_high"] > 0  # the second update measured a moved policy
    assert m_kept["clip_low"] == pytest.approx(m_pre["clip_low"]) and m_kept["loss"] == pytest.approx(m_pre["loss"])
    for n in p_pre:
        torch.testing.assert_close(p_kept[n], p_pre[n], rtol=1e-5, atol=1e-6, msg=n)


def test_zero_variance_group_gets_zero_advantage_and_no_gradient(tiny_dir, tmp_path):
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path, moe_bias_update_speed=0.0))
    flat = grpo.advantages_for(run, grpo.Groups(rewards=[1.0] * 4 + [0.0, 1.0, 0.0, 1.0]))
    assert flat[:4].tolist() == [0.0] * 4 and flat[4:].abs().min() > 0.5
    before = params(run)
    batch = fixed_batch(run, torch.cat([flat[:4], flat[:4]]))  # two zero-variance groups
    metrics = grpo.update(run, batch, norm_for(batch))
    assert metrics["grad_norm"] == 0.0
    assert all(torch.equal(before[n], p) for n, p in params(run).items())
    grpo.update(run, fixed_batch(run, flat), norm_for(batch))  # the varied group does move the policy
    assert any(not torch.equal(before[n], p) for n, p in params(run).items())
    grpo.teardown_run(run)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "gspo"])
def test_groups_without_advantage_are_skipped_with_the_same_gradient(tiny_dir, tmp_path, loss_type):
    extra = {"scale_rewards": "none"} if loss_type == "dr_grpo" else {}
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path, model_name_or_path=str(tiny_dir / "student"),
                                  per_device_train_batch_size=12, loss_type=loss_type, **extra))
    varied = grpo.advantages_for(run, grpo.Groups(rewards=[0.0, 1.0, 0.0, 1.0]))
    batch = fixed_batch(run, torch.cat([torch.zeros(4), varied, torch.zeros(4)]))
    kept = grpo.with_advantage(run, batch)
    assert kept.advantages.tolist() == varied.tolist()
    assert torch.equal(kept.input_ids, batch.input_ids[4:8])
    norm = norm_for(batch)  # counted over every row, as train_step does
    full = capture_grads(run, step=False)
    grpo.update(run, batch, norm)
    skipped = capture_grads(run, step=False)
    grpo.update(run, kept, norm)
    for name in full:
        torch.testing.assert_close(skipped[name], full[name], rtol=1e-5, atol=1e-7, msg=name)
    grpo.teardown_run(run)
    if loss_type == "dapo":
        moe = grpo.setup_run(make_cfg(tiny_dir, tmp_path / "moe"))  # MoE load statistics count every token
        batch = fixed_batch(moe, torch.zeros(8))
        assert grpo.with_advantage(moe, batch) is batch
        grpo.teardown_run(moe)


def test_sample_log_shows_each_completions_own_advantage_when_groups_are_skipped(tiny_dir, tmp_path, monkeypatch):
    from rewards import registry

    # first group all equal (skipped in the update), second group varied
    monkeypatch.setitem(registry._REGISTRY, "test_halves", lambda completions, **_: [1.0] * 4 + [0.0, 1.0] * 2)
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path, model_name_or_path=str(tiny_dir / "student"),
                                  rewards=[{"name": "test_halves"}], dynamic_sampling=False,
                                  num_completions_to_log=8, log_completions_steps=1))
    grpo.train_step(run, 1)
    logged = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["advantage"] for r in logged[:4]] == [0.0] * 4
    assert [r["advantage"] > 0 for r in logged[4:]] == [False, True, False, True]
    grpo.teardown_run(run)


def test_unscorable_completion_is_left_out_of_the_group(tiny_dir, tmp_path):
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path))
    adv = grpo.advantages_for(run, grpo.Groups(rewards=[1.0, 0.0, math.nan, 1.0] * 2))
    assert adv[2].item() == 0.0
    mean_of_scored = (1.0 + 0.0 + 1.0) / 3  # the NaN member does not drag the baseline to 0.5
    assert adv[1].item() < 0 and adv[0].item() > 0
    assert adv[0].item() == pytest.approx((1 - mean_of_scored) / (math.sqrt(1 / 3) + 1e-4), rel=1e-4)
    grpo.teardown_run(run)


def test_dynamic_sampling_drops_zero_variance_groups_and_tops_up(tiny_dir, tmp_path):
    # With accuracy alone an untrained policy scores 0 everywhere: every group is dropped, every round.
    cfg = make_cfg(tiny_dir, tmp_path, rewards=[{"name": "accuracy"}], max_sampling_rounds=2)
    run = grpo.setup_run(cfg)
    groups, m = grpo.collect(run)
    assert len(groups.rewards) == 8  # the batch is still full (topped up with zero-variance groups)
    assert m["dropped_groups"] == 1.0 and m["sampled_groups"] == 2 * 3  # 2 groups x (1 + 2 extra rounds)
    assert run.stream.state()["offset"] == 6
    # the next step expects zero-variance groups (rate 0.2 after this one) and draws more prompts at once
    assert run.zero_variance_rate == pytest.approx(0.2)
    assert grpo.prompts_to_sample(run, 2) == 4  # ceil((2 + sqrt(2 * 0.2 * 0.8)) / 0.8)
    grpo.teardown_run(run)


def test_dynamic_sampling_oversamples_by_the_expected_drop_rate_and_leaves_the_surplus(tiny_dir, tmp_path,
                                                                                      monkeypatch):
    from rewards import registry

    monkeypatch.setitem(registry._REGISTRY, "test_varied", lambda completions, **_: [0.0, 1.0] * (len(completions) // 2))
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path, rewards=[{"name": "test_varied"}]))
    calls = []
    real = run.engine.generate
    run.engine.generate = lambda p, s: calls.append(len(p)) or real(p, s)
    run.zero_variance_rate = 0.5  # as if half of the recent groups had no reward variance
    groups, m = grpo.collect(run)
    assert calls == [6 * 4]  # one round of ceil((2 + sqrt(2 * 0.25)) / 0.5) = 6 prompts, not a second round
    assert len(groups.rewards) == 8 and m["sampled_groups"] == 6 and m["unused_groups"] == pytest.approx(4 / 6)
    assert m["dropped_groups"] == 0.0 and run.zero_variance_rate == pytest.approx(0.4)
    off = grpo.setup_run(make_cfg(tiny_dir, tmp_path / "off", rewards=[{"name": "test_varied"}], dynamic_sampling=False))
    off.zero_variance_rate = 0.5
    assert grpo.prompts_to_sample(off, 2) == 2  # without dynamic sampling nothing is dropped, nothing oversampled
    grpo.teardown_run(run)
    grpo.teardown_run(off)


def test_hf_engine_logprobs_match_the_training_forward(tiny_dir, tmp_path):
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path, temperature=0.7))
    first = fixed_batch(run, torch.zeros(8)).input_ids[:, -12:]
    first = first[first != run.tokenizer.pad_token_id]
    run.engine.eos_id = first.mode().values.item()  # a frequent token as "EOS": rows end early (pruned)
    batch = fixed_batch(run, torch.zeros(8), seed=1)
    assert (batch.completion_mask.sum(1) < batch.completion_mask.shape[1]).any()
    with torch.no_grad():
        logps, _ = grpo.token_logps(run.model, batch, run.cfg.temperature)
    m = batch.completion_mask
    torch.testing.assert_close(logps * m, batch.engine_logps * m, rtol=1e-4, atol=1e-4)
    grpo.teardown_run(run)


# ----------------------------------------------------------------------------------- fail fast


def test_batch_not_divisible_by_group_size_is_a_user_error(tiny_dir, tmp_path):
    with pytest.raises(UserError, match="num_generations"):
        make_cfg(tiny_dir, tmp_path, num_generations=3)


def test_prompt_over_the_limit_is_a_user_error(tiny_dir, tmp_path):
    with pytest.raises(UserError, match="max_prompt_length"):
        grpo.setup_run(make_cfg(tiny_dir, tmp_path, max_prompt_length=5))


def test_format_reward_impossible_under_prefill_is_a_user_error(tiny_dir, tmp_path):
    cfg = make_cfg(tiny_dir, tmp_path, prefill_think=True, rewards=[{"name": "format"}])
    with pytest.raises(UserError, match="think_prefilled"):
        grpo.setup_run(cfg)
    ok = make_cfg(tiny_dir, tmp_path, prefill_think=True,
                  rewards=[{"name": "format", "params": {"think_prefilled": True}}])
    grpo.teardown_run(grpo.setup_run(ok))


# (completion for gold g and expression e, counted as solved by the strict held-out scorer)
EVAL_COMPLETIONS = [
    (lambda g, e: f"<think>\n{e} = {g}\n</think>\n<answer>{g}</answer>", True),
    (lambda g, e: e, False),  # the issue-11 echo: the old scorer evaluated it and counted it
    (lambda g, e: f"<think>\n{e}\n</think>\n<answer>{e}</answer>", False),  # not in final form
    (lambda g, e: f"<answer>{g}</answer>", False),  # no thought
    (lambda g, e: f"<think>\n{e} = {g}\n</think>\n<answer>{g}</answer> or {int(g) + 1}", False),  # hedged
]


def test_held_out_accuracy_is_strict_and_reports_completion_length(tiny_dir, tmp_path, monkeypatch):
    """`evaluate` scores with strict_accuracy by default: only a well-formed answer in final form counts."""
    from r1kit.generation import Rollout

    cfg = make_cfg(tiny_dir, tmp_path, eval_steps=1, eval_max_samples=len(EVAL_COMPLETIONS))
    run = grpo.setup_run(cfg)
    assert run.eval_fn.keywords["strict"] is True and run.eval_fn.args == ("math",)  # r1kit eval's judge, strict
    texts = [make(r["answer"], r["prompt"].split("What is ")[-1].rstrip("?"))
             for (make, _), r in zip(EVAL_COMPLETIONS, run.eval_rows)]
    ids = [run.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    monkeypatch.setattr(run.engine, "generate", lambda prompts, settings: Rollout(ids, [[0.0] * len(i) for i in ids],
                                                                                   [False] * len(ids)))
    m = grpo.evaluate(run)
    grpo.teardown_run(run)
    assert m["eval/accuracy"] == sum(ok for _, ok in EVAL_COMPLETIONS) / len(EVAL_COMPLETIONS)
    assert m["eval/completion_length"] == sum(map(len, ids)) / len(ids)


@pytest.mark.parametrize("over,expected", [
    ({}, {"think_prefilled": False}),
    ({"prefill_think": True, "rewards": [{"name": "format", "params": {"think_prefilled": True, "answer_format": "boxed"}}]},
     {"think_prefilled": True, "answer_format": "boxed"}),
    ({"rewards": [{"name": "accuracy", "params": {"final_form": False}}], "eval_reward_params": {"final_form": True}},
     {"think_prefilled": False, "final_form": True}),
    ({"eval_reward": "accuracy", "rewards": [{"name": "accuracy", "params": {"final_form": False}}]},
     {"think_prefilled": False, "final_form": False}),
])
def test_eval_reward_reads_answers_where_the_recipe_declares_them(tiny_dir, tmp_path, over, expected):
    from rl.setup import eval_reward_spec

    assert eval_reward_spec(make_cfg(tiny_dir, tmp_path, **over))["params"] == expected


@pytest.mark.parametrize("over,match", [
    ({"eval_reward": "acuracy"}, "'strict_accuracy' | 'accuracy'"),
    ({"eval_reward_params": {"deadline_s": 1.0}}, "takes only"),  # r1kit eval has no such rule
    ({"eval_reward_params": {"answer_format": 3}}, "answer_format"),
    ({"eval_reward_params": {"answer_format": "final_answer", "final_answer_pattern": "ZZZ"}}, "could never count"),
])
def test_bad_eval_reward_setup_is_a_user_error(tiny_dir, tmp_path, over, match):
    with pytest.raises(UserError, match=match):
        grpo.setup_run(make_cfg(tiny_dir, tmp_path, eval_steps=1, eval_max_samples=2, **over))


@pytest.mark.parametrize("rewards,named", [
    ("[{name: format, params: {think_prefilled: 'yes'}}]", "think_prefilled"),
    ("[{name: accuracy, params: {answer_format: tag}}]", "answer_format"),
    ("[{name: accuracy, weight: heavy}]", "weight"),
])
def test_bad_reward_params_exit_2_naming_the_param(tiny_dir, tmp_path, capsys, rewards, named):
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(f"model_name_or_path: {tiny_dir / 'policy'}\ndataset_name: synthetic:arithmetic\n"
                      f"output_dir: {tmp_path / 'out'}\nuse_cpu: true\nrewards: {rewards}\n")
    with pytest.raises(SystemExit) as exit_:
        grpo.main(["--config", str(recipe)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err, err


@pytest.mark.parametrize("rewards,warned", [
    ([{"name": "accuracy"}, {"name": "format", "params": {"answer_format": "boxed"}}], "no reward can read it"),
    ([{"name": "accuracy", "params": {"final_form": False}}], "final_form: false"),
    ([{"name": "accuracy"}, {"name": "format"}], None),
])
def test_reward_setup_that_would_score_silently_wrong_warns_at_start(tiny_dir, tmp_path, capsys, rewards, warned):
    grpo.teardown_run(grpo.setup_run(make_cfg(tiny_dir, tmp_path, rewards=rewards)))
    err = capsys.readouterr().err
    assert (warned in err) if warned else ("reward setup" not in err), err


def test_mostly_truncated_completions_warn_loudly(tiny_dir, tmp_path, capsys):
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path, max_completion_length=4))
    grpo.train_step(run, 1)
    assert "hit max_completion_length=4" in capsys.readouterr().err
    grpo.teardown_run(run)


def test_non_finite_reward_skips_the_step_and_training_continues(tiny_dir, tmp_path, capsys):
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path))
    before = params(run)
    real = run.rewards[1]
    run.rewards[1] = type(real)(name="bad", weight=1.0, fn=lambda completions, **_: [math.inf] * len(completions))
    m = grpo.train_step(run, 1)
    assert m["skipped_steps"] == 1.0 and "step skipped" in capsys.readouterr().err
    assert all(torch.equal(before[n], p) for n, p in params(run).items())
    run.rewards[1] = real
    assert grpo.train_step(run, 2)["skipped_steps"] == 0.0
    grpo.teardown_run(run)


def test_non_finite_loss_skips_the_optimizer_step(tiny_dir, tmp_path, capsys):
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path))
    before = params(run)
    batch = fixed_batch(run, torch.tensor([1.0, -1.0] * 4))
    batch.advantages[0] = math.nan
    assert grpo.update(run, batch, norm_for(batch))["skipped_steps"] == 1.0
    assert "step skipped" in capsys.readouterr().err
    assert all(torch.equal(before[n], p) for n, p in params(run).items())
    grpo.teardown_run(run)


# ------------------------------------------------------------------------------------ rollouts


@pytest.mark.parametrize("grouped", [False, True], ids=["distinct", "groups"])
def test_lean_engine_greedy_matches_hf_generate(tiny_dir, tmp_path, grouped):
    from r1kit.generation import SamplingSettings, left_pad

    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path))
    # groups: repeated prompts are prefilled once and their cache rows copied
    prompts = [p for p in run.prompt_ids[:3] for _ in range(3)] if grouped else run.prompt_ids[:8]
    first = run.engine.generate(prompts, SamplingSettings(12, greedy=True)).completion_ids
    # An untrained policy rarely emits EOS: call a token it does emit mid-way "EOS", so rows end at
    # different steps and the engine drops finished rows from its batch and cache.
    eos = first[0][3]
    run.engine.eos_id = eos
    ours = run.engine.generate(prompts, SamplingSettings(12, greedy=True))
    assert len({len(c) for c in ours.completion_ids}) > 1, "rows should end at different steps"
    ids, mask = left_pad(prompts, run.tokenizer.pad_token_id)
    with torch.no_grad():
        ref = run.accelerator.unwrap_model(run.model).generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
            pad_token_id=run.tokenizer.pad_token_id, eos_token_id=eos)
    for row, got in zip(ref[:, ids.shape[1]:].tolist(), ours.completion_ids):
        assert got == (row[:row.index(eos) + 1] if eos in row else row)
    grpo.teardown_run(run)


@pytest.mark.parametrize("top_k,top_p", [(1, 1.0), (0, 1e-6), (3, 0.9)])
def test_top_k_top_p_only_draw_allowed_tokens(top_k, top_p):
    from r1kit.generation import SamplingSettings, sample_token

    logits = torch.tensor([[3.0, 2.0, 1.0, 0.5, -1.0]]).repeat(200, 1)  # (N, V)
    s = SamplingSettings(1, temperature=1.0, top_k=top_k, top_p=top_p)
    torch.manual_seed(0)
    tok, logp = sample_token(logits, s)
    allowed = {0} if (top_k == 1 or top_p < 1e-3) else {0, 1, 2}  # 0.9 of the mass needs the top three
    assert set(tok.tolist()) == allowed
    # log-probs are those of the untruncated distribution at temperature 1, which the trainer scores
    torch.testing.assert_close(logp, torch.log_softmax(logits, -1).gather(1, tok[:, None]).squeeze(1))


def test_sampling_draws_tokens_with_their_probabilities():
    from r1kit.generation import SamplingSettings, sample_token

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    torch.manual_seed(0)
    tok, _ = sample_token(logits.repeat(40_000, 1), SamplingSettings(1, temperature=0.8))
    freq = torch.bincount(tok, minlength=5).float() / tok.numel()
    # 40k draws: the standard error of each frequency is below 0.0025
    torch.testing.assert_close(freq, torch.softmax(logits[0] / 0.8, -1), rtol=0, atol=0.01)


def test_sharded_process_that_is_full_still_joins_every_sampling_round(tiny_dir, tmp_path, monkeypatch):
    """Under FSDP each forward is a collective: a process whose batch is full must keep sampling (one
    set-aside group per round) while another process is still short, or the collectives fall out of step."""
    calls = []
    for sharded in (False, True):
        monkeypatch.setattr("rl.setup.is_sharded", lambda acc, s=sharded: s)
        run = grpo.setup_run(make_cfg(tiny_dir, tmp_path / str(sharded), max_sampling_rounds=2))
        run.reduce_max = lambda x: max(x, 1.0)  # another process is still short in every round
        real = run.engine.generate
        run.engine.generate = lambda p, s, real=real, tag=sharded: calls.append((tag, len(p))) or real(p, s)
        groups, m = grpo.collect(run)  # letter-share rewards vary: this process is full after round 0
        assert len(groups.rewards) == 8 and m["sampled_groups"] == 2.0
        grpo.teardown_run(run)
    assert [n for s, n in calls if not s] == [8]  # unsharded: one generate call, then idle rounds
    assert [n for s, n in calls if s] == [8, 4, 4]  # sharded: one group per extra round


def test_the_expected_drop_rate_is_checkpointed_with_the_data_position(tiny_dir, tmp_path):
    """Resumed runs must draw as many prompts per round as the uninterrupted run would."""
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path))
    run.stream.take(3)
    run.zero_variance_rate = 0.3
    grpo.save(run, 1)
    grpo.teardown_run(run)
    again = grpo.setup_run(make_cfg(tiny_dir, tmp_path, resume_from_checkpoint="auto"))
    grpo.resume(again)
    assert again.zero_variance_rate == pytest.approx(0.3) and again.stream.state()["offset"] == 3
    grpo.teardown_run(again)
