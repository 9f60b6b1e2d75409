"""Completion log-probs through a lean forward of Llama-family models: every token once, no padding.

``logprobs.completion_logprobs`` (the training forward/backward and the reference forward) runs
here when the model is a Llama, Qwen2 or Mistral causal LM (``llama.architecture_ok``), held as
itself or inside a peft model; anything else, and models wrapped for data parallelism (DDP, FSDP,
DeepSpeed need their own forward to sync gradients), take the transformers forward.

The layout (``flat_layout``): the linear layers (q/k/v/o projections, MLP, norms) run on the N
distinct tokens of the batch, flattened: a prompt shared by k adjacent rows (RLOO/CoPG groups, a
DPO pair) once, each completion once but for its last token (no later token attends to it and no
prediction is made from it), no padding. Attention, the only step that mixes tokens,
gathers every sequence's queries, keys and values into one row ``[prompt, completion]`` per
sequence and runs causal SDPA, then scatters the outputs back (a prompt's from its group's first
row). Each completion token sees exactly the keys and rotary positions it sees in the padded
forward, so log-probs and gradients are the same function of the weights up to float round-off
(``tests/test_forward.py``). The equations are the transformers ones (RMSNorm in float32, rotary,
SDPA with the model's scale, gated MLP); projections are called as modules, so LoRA adapters,
biases (Qwen2) and grouped-query heads work unchanged.

Compared with the packed 4D-mask layout (``packing.py``), attention costs B (P + C)^2 instead of
G (P + kC)^2 and a causal kernel skips the masked half; compared with padded rows, the prompt's and
the padding's share of the linear layers (most of the arithmetic) is gone.
"""

from __future__ import annotations

import os
from itertools import pairwise

import torch
import torch.nn.functional as F

from ..core.precision import active_dtype, autocast as precision_autocast
from .llama import architecture_ok, head_dim, rms_norm, rotary_tables, rotate, unwrap
from .tensors import logprobs_at, prompt_groups

Tensor = torch.Tensor


def lean_forward_accepts(model) -> bool:
    """True if ``lean_logprobs`` applies: a supported architecture, not wrapped for data
    parallelism (no ``.module``), no gradient checkpointing, and not switched off with the
    environment variable ``SCOREALIGN_LEAN_FORWARD=0`` (transformers' forward everywhere, e.g. to
    compare a 1-process run bit for bit with a data-parallel one)."""
    if os.environ.get("SCOREALIGN_LEAN_FORWARD", "1") == "0":
        return False
    lm = unwrap(model)
    if hasattr(model, "module") or not architecture_ok(lm):
        return False
    # transformers marks the base model and every decoder layer when checkpointing is enabled
    # (``is_activation_checkpointing`` walks all modules: too slow for every forward)
    return not any(getattr(m, "gradient_checkpointing", False)
                   for m in (lm.model, *lm.model.layers))


def flat_layout(prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                completion_mask: Tensor):
    """Index tensors of the flat layout, or None if a prompt is empty.

    Returns ids [N] and positions [N] of the distinct tokens (each completion's last token
    excluded, as it feeds no prediction and no later token); rows [B, L], the flat index of each
    slot of every sequence's attention row (prompt then completion, padded at the end with 0);
    out [N], the slot (into B * L) whose attention output each flat token takes; pred [B, C], the
    flat token whose logits predict each completion token (0 on padding)."""
    starts = prompt_groups(prompt_ids, prompt_mask)
    p_len, c_len = prompt_mask.sum(1).tolist(), completion_mask.sum(1).tolist()
    if not p_len or min(p_len) == 0:
        return None
    B, C = completion_ids.shape
    # A completion's last token is left out: nothing attends to it, nothing is predicted from it.
    run = [max(m - 1, 0) for m in c_len]
    L = max(p_len[r] + run[r] for r in range(B))
    ids, positions, rows, out, pred = [], [], [], [], []
    for s, e in pairwise(starts):
        n, at = p_len[s], len(ids)
        prompt = list(range(at, at + n))                       # flat indices of the prompt
        ids += prompt_ids[s][prompt_mask[s].bool()].tolist()
        positions += range(n)
        out += [s * L + i for i in range(n)]                    # from the group's first row
        for r in range(s, e):
            m, at = c_len[r], len(ids)
            ids += completion_ids[r, :run[r]].tolist()
            positions += range(n, n + run[r])
            out += [r * L + n + t for t in range(run[r])]
            seq = prompt + list(range(at, at + run[r]))
            rows.append(seq + [0] * (L - len(seq)))
            pred.append([prompt[-1]] + list(range(at, at + m - 1)) + [0] * (C - max(m, 1)))
    device = prompt_ids.device
    return tuple(torch.tensor(x, dtype=torch.long, device=device)
                 for x in (ids, positions, rows, out, pred))


def lean_logprobs(model, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                  completion_mask: Tensor, temperature: float) -> Tensor | None:
    """``logprobs.completion_logprobs`` in the flat layout: [B, P], [B, P], [B, C], [B, C] ->
    [B, C] (0 on padding); None where it does not apply (``lean_forward_accepts``, empty
    prompts)."""
    if not lean_forward_accepts(model):
        return None
    layout = flat_layout(prompt_ids, prompt_mask, completion_ids, completion_mask)
    if layout is None:
        return None
    ids, positions, rows, out, pred = layout
    lm = unwrap(model)
    inner, cfg = lm.model, lm.config
    H, K, d = cfg.num_attention_heads, cfg.num_key_value_heads, head_dim(cfg)
    (B, L), N = rows.shape, ids.shape[0]
    x = inner.embed_tokens(ids)                                                # [N, D]
    cos, sin = rotary_tables(inner, x, positions[None])                      # [1, N, d] each
    # Under bf16 autocast (``core.precision``) the projections return bf16: q and k are rotated
    # in bf16 as the sampler's decoder does; the residual stream x stays float32.
    act = active_dtype(x.device, x.dtype)
    cos, sin = cos[0, :, None].to(act), sin[0, :, None].to(act)                # [N, 1, d]
    slots = rows.flatten()                                                     # [B * L]
    for layer in inner.layers:
        a, mlp = layer.self_attn, layer.mlp
        h = rms_norm(layer.input_layernorm, x)
        q, k, v = (proj(h).view(N, -1, d) for proj in (a.q_proj, a.k_proj, a.v_proj))
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)                       # [N, H|K, d]
        q, k, v = (t.flatten(1).index_select(0, slots).view(B, L, -1, d).transpose(1, 2)
                   for t in (q, k, v))                                         # [B, H|K, L, d]
        drop = a.attention_dropout if lm.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True,
                                           scale=a.scaling, enable_gqa=H != K)  # [B, H, L, d]
        o = o.transpose(1, 2).reshape(B * L, H * d).index_select(0, out)     # [N, H * d]
        x = x + a.o_proj(o)
        h = rms_norm(layer.post_attention_layernorm, x)
        x = x + mlp.down_proj(mlp.act_fn(mlp.gate_proj(h)) * mlp.up_proj(h))
    h = rms_norm(inner.norm, x.index_select(0, pred.flatten()))                # [B * C, D]
    logprobs = head_logprobs(lm.lm_head, h, completion_ids.flatten(), temperature)  # [B * C]
    return logprobs.view(completion_ids.shape) * completion_mask


# Largest float32 logits block [rows, V] the LM head materialises at once (64 MB): a 150k
# vocabulary and 32 x 512 completion tokens would otherwise hold ~10 GB of logits, twice.
CHUNK_ELEMENTS = 2**24


def head_logprobs(head, h: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """log softmax(head(h) / temperature) at ``targets``: h [N, D], targets [N] -> [N] float32.
    Chunked over rows (``ChunkedHeadLogprob``) when the logits would exceed ``CHUNK_ELEMENTS``
    and the head is a plain bias-free linear layer; one block otherwise."""
    rows = max(1, CHUNK_ELEMENTS // head.out_features)
    if type(head) is torch.nn.Linear and head.bias is None and h.shape[0] > rows:
        return ChunkedHeadLogprob.apply(h, head.weight, targets, temperature, rows)
    logits = head(h).float() / temperature                                     # [N, V]
    return logprobs_at(logits, targets)


class ChunkedHeadLogprob(torch.autograd.Function):
    """log softmax(h W^T / T)[y] computed ``rows`` rows at a time; the backward recomputes each
    chunk's logits, so no [N, V] tensor is ever held (the memory of TRL's chunked LM head).
    d/dlogits of log softmax(logits)[y] = onehot(y) - softmax(logits)."""

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, targets: Tensor, temperature: float, rows: int):
        out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)      # [N]
        for s in range(0, h.shape[0], rows):
            logits = (h[s:s + rows] @ weight.t()).float() / temperature          # [rows, V]
            out[s:s + rows] = logprobs_at(logits, targets[s:s + rows])
        ctx.save_for_backward(h, weight, targets)
        ctx.temperature, ctx.rows = temperature, rows
        ctx.autocast = active_dtype(h.device, torch.float32)       # the backward's products too
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        with precision_autocast(ctx.autocast, ctx.saved_tensors[0].device):
            return ChunkedHeadLogprob.chunked_backward(ctx, grad)

    @staticmethod
    def chunked_backward(ctx, grad: Tensor):
        h, weight, targets = ctx.saved_tensors
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_w = (torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
                  if ctx.needs_input_grad[1] else None)
        for s in range(0, h.shape[0], ctx.rows):
            hc = h[s:s + ctx.rows]                                               # [rows, D]
            d = -((hc @ weight.t()).float() / ctx.temperature).softmax(-1)        # [rows, V]
            d.scatter_add_(1, targets[s:s + ctx.rows, None], torch.ones_like(d[:, :1]))
            d = (d * (grad[s:s + ctx.rows, None] / ctx.temperature)).to(h.dtype)
            if grad_h is not None:
                grad_h[s:s + ctx.rows] = d @ weight
            if grad_w is not None:
                grad_w += (d.t() @ hc).float()
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None
