"""Score a group of completions as one packed row: the shared prompt once, then each completion, no padding.

The G completions of a group share their prompt, and their lengths vary. Padded rows (N, P + T)
run the prompt G times and pad every completion to the longest one; here a group is the row
`prompt ++ c_1 ++ ... ++ c_G` and a block mask lets each completion see the prompt and its own
earlier tokens only (positions restart after the prompt for every completion), so the forward gives
the very same log-probs as the padded one (checked in tests/test_packing.py) for fewer tokens:
16 groups of 8 two-digit-arithmetic answers are 5,100 tokens packed instead of 11,400 padded.

The mask is dense (R, 1, L, L), quadratic in the row length, so a group spreads over several rows
(each starting with the prompt) of at most `max_length` tokens, or one completion's length when that
is longer (a padded batch builds an (N, 1, L, L) mask as well). `pack_groups` returns None (the caller
keeps padded rows) for attention backends that take no custom 4D mask (flash-attention) and for rows
that are not whole groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MASKABLE = ("sdpa", "eager")  # attention backends that accept a custom 4D mask


@dataclass
class Packed:
    """R groups packed into R rows of L tokens, and where each of the N completions' tokens sits."""

    input_ids: torch.Tensor  # (R, L)
    position_ids: torch.Tensor  # (R, L)
    attention_mask: torch.Tensor  # (R, 1, L, L) bool (sdpa) or additive float (eager)
    index: torch.Tensor  # (N, T) flat position in R*L whose logits predict completion token t of row n
    counted: torch.Tensor  # (R, L) 1 at completion tokens (MoE load statistics count those only)


def pack_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int, group_size: int,
                attn_implementation: str | None, max_length: int) -> Packed | None:
    """Pack the padded batch (N, P + width), left-padded prompts then right-padded completions, whose
    rows form groups of `group_size` consecutive rows with one prompt. None when it does not apply."""
    N, W = input_ids.shape
    P = W - width
    if N % group_size or (attn_implementation or "sdpa") not in MASKABLE:
        return None
    ids, real = input_ids.tolist(), attention_mask.bool().tolist()
    rows: list[list[int]] = []
    segments: list[list[int]] = []
    positions: list[list[int]] = []
    starts = []  # per completion: (packed row, first slot, prompt length, completion length)
    for g in range(N // group_size):
        group = range(g * group_size, (g + 1) * group_size)
        prompt = [t for t, m in zip(ids[group[0]][:P], real[group[0]][:P]) if m]
        fresh = True
        for k, n in enumerate(group):
            if ids[n][:P] != ids[group[0]][:P] or real[n][:P] != real[group[0]][:P]:
                return None  # not a group: rows do not share a prompt
            comp = [t for t, m in zip(ids[n][P:], real[n][P:]) if m]
            if fresh or len(rows[-1]) + len(comp) > max_length and segments[-1][-1] > 0:
                # a full row: the rest of the group starts another (a single long completion may exceed max_length)
                rows.append(list(prompt))
                segments.append([0] * len(prompt))
                positions.append(list(range(len(prompt))))
                fresh = False
            starts.append((len(rows) - 1, len(rows[-1]), len(prompt), len(comp)))
            rows[-1] += comp
            segments[-1] += [k + 1] * len(comp)
            positions[-1] += range(len(prompt), len(prompt) + len(comp))
    L = max(len(r) for r in rows)
    pad = lambda xs, v: torch.tensor([x + [v] * (L - len(x)) for x in xs], dtype=torch.long, device=input_ids.device)
    seg = pad(segments, -1)  # (R, L): 0 prompt, k completion k, -1 padding
    causal = torch.ones(L, L, dtype=torch.bool, device=input_ids.device).tril()
    same = seg.unsqueeze(2) == seg.unsqueeze(1)  # (R, L, L)
    allowed = causal & (same | (seg == 0).unsqueeze(1))  # a completion sees the prompt and itself
    index = torch.zeros(N, width, dtype=torch.long)
    for n, (r, start, p, c) in enumerate(starts):
        # token 0 is predicted by the last prompt position, token t by the completion's token t - 1
        index[n, :c] = r * L + torch.tensor([p - 1] + list(range(start, start + c - 1)))
    mask = allowed.unsqueeze(1)
    if attn_implementation == "eager":  # eager attention adds the mask to its scores
        mask = torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, torch.finfo(torch.float32).min)
    return Packed(input_ids=pad(rows, 0), position_ids=pad(positions, 0), attention_mask=mask,
                  index=index.to(input_ids.device), counted=(seg > 0).long())


def packed_logits(model, p: Packed) -> torch.Tensor:
    """(R * L, V) logits of every packed position."""
    out = model(input_ids=p.input_ids, attention_mask=p.attention_mask, position_ids=p.position_ids, use_cache=False)
    return out.logits.flatten(0, 1)
