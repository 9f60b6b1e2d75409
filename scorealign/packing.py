"""Shared-prompt packing: one forward pass per PROMPT, not per completion.

Several short groups may share a row (``layout``), each seeing only its own prompt and tokens.

The k completions of a prompt (RLOO, CoPG, PPO groups; DPO/IPO's chosen and rejected) are
usually run as k rows that each repeat the prompt, padded to the longest row. Packed, a group is
one row ``[prompt, y_1, y_2, ..., y_k]`` with an attention mask under which each ``y_j`` sees the
prompt and its own earlier tokens only, and rotary positions that restart after the prompt for
every ``y_j``. Every completion token then sees exactly the keys and positions it saw unpacked, so
the log-probs and their gradients are the same function of the weights (up to float round-off;
``tests/test_packing.py``); the prompt is computed once instead of k times and no padding is run
between completions.

``packed_logprobs`` returns None (the caller runs the ordinary forward) when the model is not a
known full-attention decoder with an "sdpa" or "eager" attention implementation (custom 4D masks
are not accepted by flash-attention kernels, and sliding windows would be ignored), when no two
adjacent rows share a prompt, or when the packed layout costs more arithmetic than the padded one
(``packed_cost`` vs ``padded_cost``: long completions make the packed row's attention quadratic).
"""

from __future__ import annotations

import inspect
from itertools import pairwise

import torch

Tensor = torch.Tensor
# transformers model types whose decoder builds its mask with ``create_causal_mask`` (a 4D mask
# is used as given) and takes 2D ``position_ids`` for rotary embeddings.
PACKABLE = ("llama", "qwen2", "qwen3", "mistral", "gemma", "olmo2", "granite")


def accepts_logits_to_keep(model) -> bool:
    """True if the causal LM's forward takes ``logits_to_keep`` (the LM head only where needed)."""
    inner = getattr(model, "module", model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return "logits_to_keep" in inspect.signature(type(inner).forward).parameters


def supports_packing(model) -> bool:
    """True if ``model`` (a transformers causal LM, possibly wrapped by DDP or PEFT) accepts the
    packed layout: a listed full-attention architecture with sdpa or eager attention."""
    cfg = getattr(getattr(model, "module", model), "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in PACKABLE:
        return False
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
    return (not window and accepts_logits_to_keep(model)
            and all(t == "full_attention" for t in getattr(cfg, "layer_types", None) or []))


def prompt_groups(prompt_ids: Tensor, prompt_mask: Tensor) -> list[int]:
    """Start row of every run of adjacent rows with the same prompt, plus the end: [0, ..., B]."""
    same = ((prompt_ids[1:] == prompt_ids[:-1]) | (prompt_mask[1:] == 0)).all(1) & \
        (prompt_mask[1:] == prompt_mask[:-1]).all(1)                              # [B - 1]
    starts = [0] + (torch.nonzero(~same).squeeze(1) + 1).tolist()
    return starts + [prompt_ids.shape[0]]


def layer_cost(cfg, tokens: int, context: int) -> float:
    """Multiply-adds of one decoder layer for ``tokens`` queries over ``context`` keys each."""
    d = cfg.hidden_size
    kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    linear = d * cfg.num_attention_heads * head * 2 + 2 * d * kv * head + 3 * d * cfg.intermediate_size
    return tokens * (linear + 2 * cfg.num_attention_heads * head * context)


def packed_logprobs(model, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                    completion_mask: Tensor, temperature: float) -> Tensor | None:
    """``rollout.completion_logprobs`` computed on packed rows of prompt groups; None when
    packing does not apply or does not pay (see the module docstring). Shapes as there:
    [B, P], [B, P], [B, C], [B, C] -> [B, C]."""
    if not supports_packing(model):
        return None
    starts = prompt_groups(prompt_ids, prompt_mask)
    G, B = len(starts) - 1, prompt_ids.shape[0]
    if G == B:
        return None
    p_len, c_len = prompt_mask.sum(1), completion_mask.sum(1)                 # [B], [B]
    group_len = [int(p_len[s]) + int(c_len[s:e].sum()) for s, e in pairwise(starts)]
    cfg = getattr(model, "module", model).config
    bins, T = layout(group_len, cfg)
    width = prompt_ids.shape[1] + completion_ids.shape[1]
    if layer_cost(cfg, len(bins) * T, T) >= layer_cost(cfg, B * width, width):
        return None
    ids, positions, segment, group, pred, row_of = pack(
        prompt_ids, prompt_mask, completion_ids, completion_mask, starts, bins, T)
    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
    mask = attention_mask(segment, group, dtype)                               # [R, 1, T, T]
    keep = torch.unique(pred[completion_mask.bool()])                         # [K] sorted
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   logits_to_keep=keep).logits                                 # [R, K, V]
    pred = torch.searchsorted(keep, pred).clamp(max=len(keep) - 1)            # padding: any
    logits = logits[row_of[:, None], pred].float() / temperature              # [B, C, V]
    picked = logits.gather(2, completion_ids.unsqueeze(2)).squeeze(2)
    return (picked - torch.logsumexp(logits, dim=-1)) * completion_mask


def layout(group_len: list[int], cfg) -> tuple[list[list[int]], int]:
    """Groups -> packed rows (lists of group indices) and the row length T: first-fit decreasing
    into rows of capacity m x the longest group, m chosen by ``layer_cost`` (several short
    groups per row drop the padding between them; long rows make attention quadratic)."""
    order = sorted(range(len(group_len)), key=lambda g: -group_len[g])
    best = None
    for m in range(1, len(group_len) + 1):
        cap, bins, fill = m * group_len[order[0]], [], []
        for g in order:
            i = next((i for i, f in enumerate(fill) if f + group_len[g] <= cap), None)
            if i is None:
                bins.append([])
                fill.append(0)
                i = len(bins) - 1
            bins[i].append(g)
            fill[i] += group_len[g]
        T = max(fill)
        cost = layer_cost(cfg, len(bins) * T, T)
        if best is not None and cost >= best[0]:
            break                                # costs rise once rows stop getting fuller
        best = (cost, [sorted(b) for b in bins], T)
    return best[1], best[2]


def pack(prompt_ids, prompt_mask, completion_ids, completion_mask, starts: list[int],
         bins: list[list[int]], T: int):
    """The packed rows: ids, positions, segment (0 prompt, j >= 1 the j-th completion of its
    group, -1 padding) and group (the prompt group, -1 padding), each [R, T]; pred [B, C], the
    index in its packed row whose logits predict each completion token (the prompt's last
    token for the first one); row_of [B], the packed row of each batch row."""
    R, (B, C) = len(bins), completion_ids.shape
    device = prompt_ids.device
    ids = torch.zeros(R, T, dtype=torch.long, device=device)
    positions = torch.zeros(R, T, dtype=torch.long, device=device)
    segment = torch.full((R, T), -1, dtype=torch.long, device=device)
    group = torch.full((R, T), -1, dtype=torch.long, device=device)
    pred = torch.zeros(B, C, dtype=torch.long, device=device)
    row_of = torch.zeros(B, dtype=torch.long, device=device)
    steps = torch.arange(C, device=device)
    for row, members in enumerate(bins):
        at = 0
        for g in members:
            s, e = starts[g], starts[g + 1]
            prompt = prompt_ids[s][prompt_mask[s].bool()]
            n = prompt.numel()
            ids[row, at:at + n], positions[row, at:at + n] = prompt, torch.arange(n, device=device)
            segment[row, at:at + n], group[row, at:at + n] = 0, g
            last, at = at + n - 1, at + n
            for j, r in enumerate(range(s, e)):
                m = int(completion_mask[r].sum())
                ids[row, at:at + m] = completion_ids[r, :m]
                positions[row, at:at + m] = torch.arange(n, n + m, device=device)
                segment[row, at:at + m], group[row, at:at + m] = j + 1, g
                pred[r] = torch.where(steps == 0, last, at + steps - 1).clamp(0, T - 1) * (steps < m)
                row_of[r] = row
                at += m
    return ids, positions, segment, group, pred, row_of


def attention_mask(segment: Tensor, group: Tensor, dtype: torch.dtype) -> Tensor:
    """[R, T] segments and groups -> [R, 1, T, T] additive mask: a query sees earlier keys of its
    own group's prompt and of its own completion; padding queries see themselves only (no
    empty softmax rows)."""
    T = segment.shape[1]
    idx = torch.arange(T, device=segment.device)
    q, kv = segment[:, :, None], segment[:, None, :]                           # [R, T, 1], [R, 1, T]
    same_group = (group[:, :, None] == group[:, None, :]) & (group[:, None, :] >= 0)
    allowed = (idx[:, None] >= idx[None, :]) & same_group & ((kv == 0) | (kv == q)) & (q >= 0)
    allowed |= torch.eye(T, dtype=torch.bool, device=segment.device)
    return torch.zeros(allowed.shape, dtype=dtype, device=segment.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)[:, None]
