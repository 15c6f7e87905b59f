"""Key masks and row selection shared by the engine's preallocated caches (rl/mla.py, rl/lean.py)."""

from __future__ import annotations

import torch


def visible_keys(mask: torch.Tensor, length: int, q_len: int) -> torch.Tensor:
    """(B, q, length + q_len) bool: the keys each of `q_len` new queries may see, causal and without the left
    padding that `mask` (B, >= length + q_len; 1 real, 0 pad) marks. A padding query also sees itself, so its
    row stays finite (no key of it is ever read)."""
    end = length + q_len
    keys = torch.arange(end, device=mask.device)
    now = torch.arange(length, end, device=mask.device)[:, None]  # (q, 1) each query's position
    return (mask[:, None, :end].bool() & (keys <= now)) | (keys == now)


def select_rows(buf: torch.Tensor, index: torch.Tensor, length: int, seq_dim: int) -> torch.Tensor:
    """`buf` (B, ...) with rows `index` kept or repeated; only the first `length` positions along `seq_dim`
    are filled, and only they move. Fewer rows compact in place; more rows get a new buffer."""
    rows = buf.narrow(seq_dim, 0, length).index_select(0, index)
    if len(index) > buf.shape[0]:
        buf = buf.new_empty(len(index), *buf.shape[1:])  # unwritten slots are written before read
    buf = buf[:len(index)]
    buf.narrow(seq_dim, 0, length).copy_(rows)
    return buf
