"""Score groups of completions as packed rows: each prompt once per row, completions unpadded.

The G completions of a group share their prompt, and their lengths vary. Padded rows (N, P + T)
run the prompt G times and pad every completion to the longest one. Here rows of about `max_length`
tokens are filled in order, `prompt_g ++ c_g1 ++ c_g2 ++ ... ++ prompt_h ++ c_h1 ++ ...` (a group's
prompt is written again when its completions continue on a new row), and a block mask lets each
completion see its own prompt and its own earlier tokens only, positions restarting after the prompt.
The forward gives the padded one's log-probs (tests/test_packing.py) for fewer tokens: 16 groups of 8
two-digit-arithmetic answers fill 29 rows of 192 (5,600 tokens) instead of 128 padded rows (11,400).

The mask is dense (R, 1, L, L), quadratic in the row length, hence the row target (a completion longer
than it gets a row of its own; a padded batch builds an (N, 1, L, L) mask as well). `pack_groups`
returns None (the caller keeps padded rows) for attention backends that take no custom 4D mask
(flash-attention), for rows that are not whole groups, and when packing would remove less than
MIN_SAVING of the padded batch's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MASKABLE = ("sdpa", "eager")  # attention backends that accept a custom 4D mask
# Packed rows are longer than padded ones (attention grows with the square of the length), so packing is
# used only when it removes at least this share of the padded batch's tokens. Measured on the tiny models:
# the dense student's groups lost 51% of their tokens and scored 25% faster; the MoE policy's 64-token
# completions without EOS lost 3% and scored 46% slower packed.
MIN_SAVING = 0.25


@dataclass
class Packed:
    """N completions packed into R rows of L tokens, and where each completion's tokens sit."""

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
    rows = [_Row()]
    starts = []  # per completion: (packed row, its first slot, the slot of its prompt's last token)
    for g in range(N // group_size):
        first = g * group_size
        prompt = [t for t, m in zip(ids[first][:P], real[first][:P]) if m]
        for n in range(first, first + group_size):
            if ids[n][:P] != ids[first][:P] or real[n][:P] != real[first][:P]:
                return None  # not a group: rows do not share a prompt
            comp = [t for t, m in zip(ids[n][P:], real[n][P:]) if m]
            row = rows[-1]
            need = len(comp) + (0 if row.group == g else len(prompt))
            if row.ids and len(row.ids) + need > max_length:  # next fit: a long completion may exceed max_length
                row = _Row()
                rows.append(row)
            if row.group != g:  # this row's first completion of group g: the prompt goes first
                row.add(prompt, list(range(len(prompt))), segment=-2 - g)
                row.group, row.prompt_end = g, len(row.ids) - 1
            starts.append((len(rows) - 1, len(row.ids), row.prompt_end))
            row.add(comp, list(range(len(prompt), len(prompt) + len(comp))), segment=n, group=-2 - g)
    L = max(len(r.ids) for r in rows)
    if len(rows) * L > (1 - MIN_SAVING) * N * W:
        return None  # little padding and short prompts: the block mask's attention cost would not pay off
    pad = lambda xs, v: torch.tensor([x + [v] * (L - len(x)) for x in xs], dtype=torch.long, device=input_ids.device)
    seg = pad([r.segments for r in rows], -1)  # (R, L): completion n -> n, prompt of group g -> -2 - g, pad -1
    sees = pad([r.sees for r in rows], -1)  # (R, L): the prompt segment a completion token also attends to
    causal = torch.ones(L, L, dtype=torch.bool, device=input_ids.device).tril()
    # a token sees earlier tokens of its own segment, and a completion token its group's prompt
    allowed = causal & ((seg.unsqueeze(2) == seg.unsqueeze(1)) | (sees.unsqueeze(2) == seg.unsqueeze(1)))
    index = torch.zeros(N, width, dtype=torch.long)
    for n, (r, start, prompt_end) in enumerate(starts):
        c = sum(real[n][P:])
        # token 0 is predicted by the last prompt position, token t by the completion's token t - 1
        index[n, :c] = r * L + torch.tensor([prompt_end] + list(range(start, start + c - 1)))
    mask = allowed.unsqueeze(1)
    if attn_implementation == "eager":  # eager attention adds the mask to its scores
        mask = torch.zeros(mask.shape, device=mask.device).masked_fill(~mask, torch.finfo(torch.float32).min)
    return Packed(input_ids=pad([r.ids for r in rows], 0), position_ids=pad([r.positions for r in rows], 0),
                  attention_mask=mask, index=index.to(input_ids.device), counted=(seg >= 0).long())


class _Row:
    """One packed row under construction: token ids, positions, segment ids."""

    def __init__(self):
        self.ids: list[int] = []
        self.positions: list[int] = []
        self.segments: list[int] = []
        self.sees: list[int] = []  # prompt segment each token may also attend to (-1: none)
        self.group, self.prompt_end = -1, -1

    def add(self, tokens: list[int], positions: list[int], segment: int, group: int = -1) -> None:
        self.ids += tokens
        self.positions += positions
        self.segments += [segment] * len(tokens)
        self.sees += [group] * len(tokens)


def packed_logits(model, p: Packed) -> torch.Tensor:
    """(R * L, V) logits of every packed position."""
    out = model(input_ids=p.input_ids, attention_mask=p.attention_mask, position_ids=p.position_ids, use_cache=False)
    return out.logits.flatten(0, 1)
