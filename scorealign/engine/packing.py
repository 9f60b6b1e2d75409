"""Shared-prompt packing: one forward pass per PROMPT, not per completion.

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

import functools
import inspect
from itertools import pairwise

import torch

from .tensors import logprobs_at, prompt_groups

Tensor = torch.Tensor
# transformers model types whose decoder builds its mask with ``create_causal_mask`` (a 4D mask
# is used as given) and takes 2D ``position_ids`` for rotary embeddings.
PACKABLE = ("llama", "qwen2", "qwen3", "mistral", "gemma", "olmo2", "granite")


def accepts_logits_to_keep(model) -> bool:
    """True if the causal LM's forward takes ``logits_to_keep`` (the LM head only where needed)."""
    inner = getattr(model, "module", model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return _takes_logits_to_keep(type(inner))


@functools.cache
def _takes_logits_to_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


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


def layer_cost(cfg, tokens: int, context: int) -> float:
    """Multiply-adds of one decoder layer for ``tokens`` queries over ``context`` keys each."""
    d = cfg.hidden_size
    kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    linear = d * cfg.num_attention_heads * head * 2 + 2 * d * kv * head + 3 * d * cfg.intermediate_size
    return tokens * (linear + 2 * cfg.num_attention_heads * head * context)


def packed_logprobs(model, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                    completion_mask: Tensor, temperature: float) -> Tensor | None:
    """``logprobs.completion_logprobs`` computed with one packed row per shared prompt; None when
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
    T, width = max(group_len), prompt_ids.shape[1] + completion_ids.shape[1]
    cfg = getattr(model, "module", model).config
    if layer_cost(cfg, G * T, T) >= layer_cost(cfg, B * width, width):
        return None
    ids, positions, segment, pred = pack(prompt_ids, prompt_mask, completion_ids, completion_mask,
                                         starts, T)
    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
    mask = attention_mask(segment, dtype)                                      # [G, 1, T, T]
    keep = torch.unique(pred[completion_mask.bool()])                         # [K] sorted
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                   logits_to_keep=keep).logits                                 # [G, K, V]
    pred = torch.searchsorted(keep, pred).clamp(max=len(keep) - 1)            # padding: any
    rows = torch.repeat_interleave(torch.arange(G, device=ids.device),
                                   torch.tensor([e - s for s, e in pairwise(starts)],
                                                device=ids.device))            # [B]
    logits = logits[rows[:, None], pred].float() / temperature                # [B, C, V]
    return logprobs_at(logits, completion_ids) * completion_mask


def pack(prompt_ids, prompt_mask, completion_ids, completion_mask, starts: list[int], T: int):
    """The packed rows: ids [G, T], positions [G, T], segment [G, T] (0 prompt, j >= 1 the j-th
    completion, -1 padding) and pred [B, C], the packed index whose logits predict each
    completion token (the prompt's last token for the first one)."""
    G, (B, C) = len(starts) - 1, completion_ids.shape
    device = prompt_ids.device
    ids = torch.zeros(G, T, dtype=torch.long, device=device)
    positions = torch.zeros(G, T, dtype=torch.long, device=device)
    segment = torch.full((G, T), -1, dtype=torch.long, device=device)
    pred = torch.zeros(B, C, dtype=torch.long, device=device)
    steps = torch.arange(C, device=device)
    for g, (s, e) in enumerate(pairwise(starts)):
        prompt = prompt_ids[s][prompt_mask[s].bool()]
        n = prompt.numel()
        ids[g, :n], positions[g, :n], segment[g, :n] = prompt, torch.arange(n, device=device), 0
        at = n
        for j, r in enumerate(range(s, e)):
            m = int(completion_mask[r].sum())
            ids[g, at:at + m] = completion_ids[r, :m]
            positions[g, at:at + m] = torch.arange(n, n + m, device=device)
            segment[g, at:at + m] = j + 1
            pred[r] = torch.where(steps == 0, n - 1, at + steps - 1).clamp(0, T - 1) * (steps < m)
            at += m
    return ids, positions, segment, pred


def attention_mask(segment: Tensor, dtype: torch.dtype) -> Tensor:
    """[G, T] segments -> [G, 1, T, T] additive mask: a query sees earlier keys of the prompt and
    of its own segment; padding queries see themselves only (no empty softmax rows)."""
    T = segment.shape[1]
    idx = torch.arange(T, device=segment.device)
    q, kv = segment[:, :, None], segment[:, None, :]                           # [G, T, 1], [G, 1, T]
    allowed = (idx[:, None] >= idx[None, :]) & (kv >= 0) & ((kv == 0) | (kv == q)) & (q >= 0)
    allowed |= torch.eye(T, dtype=torch.bool, device=segment.device)
    return torch.zeros(allowed.shape, dtype=dtype, device=segment.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)[:, None]
