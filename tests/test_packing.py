"""Packed group scoring (rl/packing.py) gives the padded forward's log-probs and gradients, for fewer tokens."""

from __future__ import annotations

import pytest
import torch
from test_grpo_loop import fixed_batch, letter_share_reward, make_cfg  # noqa: F401  (fixture)

from rl import grpo
from rl.packing import pack_groups

torch.set_num_threads(1)


def _logps_and_grads(run, batch):
    model = run.accelerator.unwrap_model(run.model)
    model.zero_grad(set_to_none=True)
    logps, entropy = grpo.token_logps(run.model, batch, run.cfg.temperature)
    m = batch.completion_mask
    ((logps * m).sum() / m.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return (logps * m).detach(), entropy * m, grads


@pytest.mark.parametrize("model,attn", [("policy", "sdpa"), ("student", "sdpa"), ("policy", "eager")])
def test_packed_forward_equals_padded(tiny_dir, tmp_path, model, attn):
    run = grpo.setup_run(make_cfg(tiny_dir, tmp_path, model_name_or_path=str(tiny_dir / model),
                                  attn_implementation=attn, temperature=0.7))
    first = fixed_batch(run, torch.zeros(8)).input_ids[:, -12:]
    tokens = first[first != run.tokenizer.pad_token_id]
    run.engine.eos_id = tokens.mode().values.item()  # a frequent token as "EOS": varied lengths
    for seed in range(1, 20):
        batch = fixed_batch(run, torch.zeros(8), seed=seed)
        lengths = batch.attention_mask[:, -batch.completion_mask.shape[1]:].sum(1)
        if len(set(lengths.tolist())) > 2:
            break
    assert len(set(lengths.tolist())) > 2, "completions should differ in length"
    padded = _logps_and_grads(run, batch)
    packed = grpo.micro_batch(run, batch, 0, 8)
    assert packed.packed is not None
    assert packed.packed.input_ids.numel() < batch.input_ids.numel()
    got = _logps_and_grads(run, packed)
    torch.testing.assert_close(got[0], padded[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], padded[1], rtol=1e-4, atol=1e-5)
    assert got[2].keys() == padded[2].keys()
    for name in got[2]:
        torch.testing.assert_close(got[2][name], padded[2][name], rtol=1e-4, atol=1e-6, msg=name)
    grpo.teardown_run(run)


def _toy(prompts: list[list[int]], comps: list[list[int]], P: int = 4, T: int = 3):
    ids = torch.zeros(len(prompts), P + T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for n, (p, c) in enumerate(zip(prompts, comps)):
        ids[n, P - len(p):P], mask[n, P - len(p):P] = torch.tensor(p), 1
        ids[n, P:P + len(c)], mask[n, P:P + len(c)] = torch.tensor(c), 1
    return ids, mask


def test_pack_layout_by_hand():
    ids, mask = _toy([[5, 6], [5, 6]], [[7, 8], [9]])
    p = pack_groups(ids, mask, 3, 2, "sdpa", 100)
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 2]]  # each completion starts right after the prompt
    # token 0 of each completion is predicted at the last prompt position; 8 after 7
    assert p.index.tolist() == [[1, 2, 0], [1, 0, 0]]
    assert p.counted.tolist() == [[0, 0, 1, 1, 1]]
    allowed = p.attention_mask[0, 0].int().tolist()
    assert allowed == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 1]]


def test_pack_falls_back_to_padded_rows_when_it_does_not_apply():
    ids, mask = _toy([[5, 6], [5, 7]], [[7, 8], [9]])
    assert pack_groups(ids, mask, 3, 2, "sdpa", 100) is None  # rows of a "group" with different prompts
    ids, mask = _toy([[5, 6], [5, 6]], [[7, 8], [9]])
    long = pack_groups(ids, mask, 3, 2, "sdpa", 3)  # prompt + one completion over max_length: a row of its own
    assert long.input_ids.tolist() == [[5, 6, 7, 8], [5, 6, 9, 0]]
    assert pack_groups(ids, mask, 3, 2, "flash_attention_2", 100) is None  # no custom 4D masks
    assert pack_groups(ids, mask, 3, 4, "sdpa", 100) is None  # not whole groups
    eager = pack_groups(ids, mask, 3, 2, "eager", 100).attention_mask
    assert eager.dtype == torch.float32 and eager[0, 0, 0, 1] < -1e30 and eager[0, 0, 1, 0] == 0


def test_a_group_longer_than_max_length_spans_several_rows():
    ids, mask = _toy([[5, 6]] * 3, [[7, 8], [9], [4, 3, 2]])
    p = pack_groups(ids, mask, 3, 3, "sdpa", 5)
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 4, 3, 2]]  # each row repeats the prompt
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 2, 3, 4]]
    assert p.index.tolist() == [[1, 2, 0], [1, 0, 0], [6, 7, 8]]  # row 1 starts at flat position 5


def test_groups_share_a_row_and_see_only_their_own_prompt():
    ids, mask = _toy([[5, 6], [5, 6], [3], [3]], [[7], [8, 9], [4], [2]])
    p = pack_groups(ids, mask, 3, 2, "sdpa", 100)
    assert p.input_ids.tolist() == [[5, 6, 7, 8, 9, 3, 4, 2]]
    assert p.position_ids.tolist() == [[0, 1, 2, 2, 3, 0, 1, 1]]
    assert p.index.tolist() == [[1, 0, 0], [1, 3, 0], [5, 0, 0], [5, 0, 0]]
    allowed = p.attention_mask[0, 0].int()
    assert allowed[6].tolist() == [0, 0, 0, 0, 0, 1, 1, 0]  # group 2's completion: its prompt and itself
    assert allowed[5].tolist() == [0, 0, 0, 0, 0, 1, 0, 0]  # group 2's prompt starts afresh
    assert allowed[4].tolist() == [1, 1, 0, 1, 1, 0, 0, 0]


def test_no_packing_when_it_saves_few_tokens():
    # one-token prompt, full-length completions: 7 packed tokens against 8 padded
    ids, mask = _toy([[5], [5]], [[7, 8, 9], [4, 3, 2]], P=1, T=3)
    assert pack_groups(ids, mask, 3, 2, "sdpa", 100) is None
    ids, mask = _toy([[5, 6, 1, 2], [5, 6, 1, 2]], [[7, 8, 9], [4, 3, 2]], P=4, T=3)  # 10 against 14
    assert pack_groups(ids, mask, 3, 2, "sdpa", 100) is not None
