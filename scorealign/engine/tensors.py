"""Tensor helpers shared by the sampler and the log-prob forwards (no model code here)."""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def position_ids(mask: Tensor) -> Tensor:
    """Positions that skip left padding: [B, L] mask -> [B, L] (0 at the first real token)."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)


def pad_rows(rows: list[list[int]], value: int, left: bool) -> tuple[Tensor, Tensor]:
    """Ragged id lists -> ([n, width] ids, [n, width] mask), padded on the left or right."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, cols], mask[i, cols] = torch.tensor(r, dtype=torch.long), 1
    return ids, mask


def prompt_groups(prompt_ids: Tensor, prompt_mask: Tensor) -> list[int]:
    """Start row of every run of adjacent rows with the same prompt, plus the end: [0, ..., B]."""
    same = ((prompt_ids[1:] == prompt_ids[:-1]) | (prompt_mask[1:] == 0)).all(1) & \
        (prompt_mask[1:] == prompt_mask[:-1]).all(1)                              # [B - 1]
    starts = [0] + (torch.nonzero(~same).squeeze(1) + 1).tolist()
    return starts + [prompt_ids.shape[0]]


def logprobs_at(logits: Tensor, ids: Tensor) -> Tensor:
    """log softmax(logits)[ids] over the last dim: [..., V], [...] -> [...]."""
    return logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
