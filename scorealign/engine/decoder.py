"""A lean KV-cached decoder for Llama-family models: the sampler's ``LeanGenerator`` backend
(``generation.py``).

Why: on CPU, and for small models on any device, one ``model(...)`` decode call of transformers
spends most of its time in Python (mask construction, cache objects, output containers, hooks),
not in arithmetic. This decoder runs the SAME weights through the same equations with a static,
preallocated KV cache, q/k/v and gate/up projections fused into one matmul each (their weights
copied once per rollout in the layout fastest for few-row products, ``Linear``), rotary tables
computed once per rollout, and no per-step allocation of masks. It is inference only (it is
never used for log-probs that get gradients) and is checked against the transformers forward in
``tests/test_decoder.py``.

Supported: ``LlamaForCausalLM``, ``Qwen2ForCausalLM`` and ``MistralForCausalLM`` (or a peft model
around one) whose projections are plain ``nn.Linear`` or LoRA layers (adapters folded into the
weights for the rollout; no DoRA, no quantisation), full attention on every layer and no
``pretraining_tp`` (``lean_decoder_accepts``). Anything else samples through the transformers
forward (``generation.TransformersGenerator``).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..core.memory import ensure_memory
from ..core.precision import active_dtype
from .llama import architecture_ok, head_dim, rms_norm, rotary_tables, rotate, unwrap
from .tensors import prompt_groups

Tensor = torch.Tensor


def linear_weights(m: nn.Module) -> tuple[Tensor, Tensor | None] | None:
    """(weight, bias) that ``m`` applies: a plain ``nn.Linear``, or a peft LoRA layer with its
    active adapters folded in (W + scale * B A, computed from the current weights); None for
    anything else (DoRA, LoRA biases, quantised layers)."""
    if type(m) is nn.Linear:
        return m.weight, m.bias
    base = getattr(m, "base_layer", None)
    if type(base) is not nn.Linear or not hasattr(m, "get_delta_weight"):
        return None
    if getattr(m, "merged", False) or getattr(m, "disable_adapters", False):
        return base.weight, base.bias
    adapters = [a for a in m.active_adapters if a in m.lora_A]
    if any(getattr(m, "use_dora", {}).get(a) or getattr(m, "lora_bias", {}).get(a) for a in adapters):
        return None
    weight = base.weight
    for a in adapters:
        weight = weight + m.get_delta_weight(a)
    # peft keeps adapters in float32 under a bfloat16/float16 base (autocast_adapter_dtype): the
    # sum is float32, and the decode products need the activations' (the base's) dtype.
    return weight.to(base.weight.dtype), base.bias


def _linears(model) -> list[nn.Module]:
    return [m for layer in model.model.layers
            for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                      layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj,
                      layer.mlp.down_proj)] + [model.lm_head]


def lean_decoder_accepts(model) -> bool:
    """True if ``LeanDecoder`` reproduces ``model``'s forward (see the module docstring)."""
    model = unwrap(model)
    return architecture_ok(model) and all(linear_weights(m) is not None for m in _linears(model))


def _fuse(*linears: nn.Module) -> tuple[Tensor, Tensor | None]:
    """One (weight, bias) for several linears applied to the same input (outputs concatenated)."""
    pairs = [linear_weights(m) for m in linears]
    weight = torch.cat([w for w, _ in pairs]) if len(pairs) > 1 else pairs[0][0]
    if all(b is None for _, b in pairs):
        return weight, None
    return weight, torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in pairs])


# Weights with at least this many elements use oneDNN's blocked layout in the decode steps (CPU,
# float32): 1.2-1.5x faster products at 32 rows than MKL for 512-wide matrices on the benchmark's
# AMD EPYC, no gain below ~512 x 512 (benchmarks/README.md, item 13). ``None``: off
# (``SCOREALIGN_ONEDNN=0``, or the op turned out to be missing from this torch build).
ONEDNN_MIN_WEIGHT: float | None = None if os.environ.get("SCOREALIGN_ONEDNN", "1") == "0" else 2**18


def onednn_pack(weight: Tensor, rows: int) -> Tensor | None:
    """``weight`` [out, in] reordered for ``torch.ops.mkldnn._linear_pointwise`` with about
    ``rows`` rows per product, or None where that does not apply or pay (not CPU float32,
    smaller than ``ONEDNN_MIN_WEIGHT``, a torch built without oneDNN)."""
    global ONEDNN_MIN_WEIGHT
    if (ONEDNN_MIN_WEIGHT is None or weight.numel() < ONEDNN_MIN_WEIGHT
            or weight.device.type != "cpu" or weight.dtype != torch.float32):
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows)
    except (AttributeError, RuntimeError):                 # no oneDNN in this torch build
        ONEDNN_MIN_WEIGHT = None
        return None


class Linear:
    """y = x W^T + b for the decode steps, from a copy of W made once per rollout: oneDNN's
    blocked layout for large CPU float32 weights (``onednn_pack``), else W^T stored contiguously
    (MKL's faster non-transposed layout for products with few rows).

    Not MKL's packed layout (``torch.ops.mkl._mkl_reorder_linear_weight``): each packed weight
    takes at least ~5.7 MB whatever its size, so a rollout of a 1M-parameter model allocated
    ~170 MB, grew the heap and had to hand it back to the OS every step (page faults: ~10% of an
    RLOO step at 1M, see benchmarks/README.md). oneDNN's copy is the weight's size."""

    def __init__(self, weight: Tensor, bias: Tensor | None, rows: int,
                 dtype: torch.dtype | None = None):
        dtype = dtype or weight.dtype                     # bf16 under autocast (``LeanDecoder``)
        weight, bias = weight.to(dtype), None if bias is None else bias.to(dtype)
        self.bias, self.out_features, self.dtype = bias, weight.shape[0], dtype
        self.packed = onednn_pack(weight, rows)
        self.weight_t = weight.t().contiguous() if self.packed is None else None   # [in, out]

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed, self.bias,
                                                      "none", [None], "")
        rows = x.reshape(-1, x.shape[-1]).to(self.dtype)                         # [B * T, in]
        out = rows @ self.weight_t if self.bias is None else torch.addmm(self.bias, rows,
                                                                          self.weight_t)
        return out.view(*x.shape[:-1], self.out_features)                        # [B, T, out]


class LeanDecoder:
    """Prefill + one-token decode steps for a batch of B rows, cache of S = P + max_new slots."""

    @classmethod
    def build(cls, model, prompt_mask: Tensor, positions: Tensor, max_slots: int):
        """``positions``: [B, S] rotary position of every cache slot. ``None`` if unsupported."""
        return cls(model, prompt_mask, positions, max_slots) if lean_decoder_accepts(model) else None

    def __init__(self, model, prompt_mask: Tensor, positions: Tensor, max_slots: int):
        model = unwrap(model)
        cfg, inner = model.config, model.model
        self.model, self.inner = model, inner
        self.H, self.K = cfg.num_attention_heads, cfg.num_key_value_heads
        self.d = head_dim(cfg)
        self.scale = inner.layers[0].self_attn.scaling
        self.act = inner.layers[0].mlp.act_fn
        B, P = prompt_mask.shape
        w = inner.embed_tokens.weight
        # Fused copies of the current weights (LoRA adapters folded in), rebuilt for every
        # rollout: q/k/v in one matrix (the attention scale folded into q), gate/up in one; in
        # autocast's dtype inside ``torch.autocast`` (``core.precision``: bf16 weight copies over
        # float32 master weights), as are the KV cache and rotary tables. The residual stream
        # stays in the weights' dtype, as in the training forward under autocast.
        dt = self.dtype = active_dtype(w.device, w.dtype)
        self.qkv, self.o, self.gate_up, self.down = [], [], [], []
        q_rows = self.H * self.d
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            weight, bias = _fuse(a.q_proj, a.k_proj, a.v_proj)
            weight = torch.cat([weight[:q_rows] * self.scale, weight[q_rows:]])
            bias = None if bias is None else torch.cat([bias[:q_rows] * self.scale, bias[q_rows:]])
            self.qkv.append(Linear(weight, bias, B, dt))
            self.o.append(Linear(*_fuse(a.o_proj), B, dt))
            self.gate_up.append(Linear(*_fuse(m.gate_proj, m.up_proj), B, dt))
            self.down.append(Linear(*_fuse(m.down_proj), B, dt))
        self.head = Linear(*_fuse(model.lm_head), B, dt)
        n = len(inner.layers)
        per_row = ((2 * n * self.K * self.d + 2 * self.d + 2) * max_slots + 4 * cfg.vocab_size
                   ) * w.element_size() + 9 * max_slots      # caches, rotary, bias, logits, ids
        ensure_memory(2 * per_row * B, w.device,              # x2: the step's intermediates
                      f"sampling {B} sequences at once (KV cache, logits)")
        self.k_cache = w.new_zeros(n, B, self.K, max_slots, self.d, dtype=dt)  # [n, B, K, S, d]
        self.v_cache = torch.zeros_like(self.k_cache)
        self.valid = torch.ones(B, max_slots, dtype=torch.bool, device=w.device)  # [B, S]
        self.valid[:, :P] = prompt_mask.bool()
        self.k_layers, self.v_layers = self.k_cache.unbind(0), self.v_cache.unbind(0)  # n x [B, K, S, d]
        bias = torch.zeros(B, max_slots, dtype=dt, device=w.device)
        bias.masked_fill_(~self.valid, float("-inf"))
        self.bias = bias.repeat_interleave(self.K, 0)[:, None]               # [B * K, 1, S] additive
        cos, sin = rotary_tables(inner, w.new_zeros(1), positions)            # [B, S, d] each
        self.cos, self.sin = cos.unsqueeze(1).to(dt), sin.unsqueeze(1).to(dt)  # [B, 1, S, d]

    def prefill(self, prompt_ids: Tensor) -> Tensor:
        """prompt_ids [B, P] -> next-token logits [B, V] (at the last prompt position).

        Adjacent rows with the same prompt (the k samples of one prompt) are computed once and
        their KV cache copied to the others."""
        P = prompt_ids.shape[1]
        starts = prompt_groups(prompt_ids, self.valid[:, :P].long())
        rows = torch.tensor(starts[:-1], device=prompt_ids.device)           # [G] one per prompt
        causal = torch.ones(P, P, dtype=torch.bool, device=prompt_ids.device).tril()
        mask = (causal & self.valid[rows, None, None, :P]) | torch.eye(
            P, dtype=torch.bool, device=prompt_ids.device)                  # [G, 1, P, P]
        logits = self._forward(prompt_ids[rows], mask, rows)                  # [G, V]
        if len(rows) == prompt_ids.shape[0]:
            return logits
        expand = torch.repeat_interleave(torch.arange(len(rows), device=rows.device),
                                         torch.tensor(starts).diff().to(rows.device))  # [B]
        self.k_cache[:, :, :, :P] = self.k_cache[:, rows[expand], :, :P]
        self.v_cache[:, :, :, :P] = self.v_cache[:, rows[expand], :, :P]
        return logits[expand]

    def step(self, ids: Tensor, slot: int) -> Tensor:
        """ids [B] written at cache slot ``slot`` -> next-token logits [B, V].

        The prefill's equations on [B, D] rows with as few small ops as possible (a decode step
        of a small model is mostly per-op cost): per-layer cache views, and attention as plain
        batched matmuls (the fused CPU SDPA kernel costs ~0.4 ms per call at one query per row)
        with each kv head's group of queries stacked and the mask added inside the score
        product."""
        B, H, K, d = ids.shape[0], self.H, self.K, self.d
        G, S = H // K, slot + 1
        cos, sin = self.cos[:, :, slot], self.sin[:, :, slot]                 # [B, 1, d]
        x = self.inner.embed_tokens(ids)                                       # [B, D]
        for i, layer in enumerate(self.inner.layers):
            qkv = self.qkv[i](rms_norm(layer.input_layernorm, x)).view(B, H + 2 * K, d)
            qk = qkv[:, :H + K]
            qk = rotate(qk, cos, sin)                                         # q and k at once
            keys, values = self.k_layers[i], self.v_layers[i]                  # [B, K, S_max, d]
            keys[:, :, slot], values[:, :, slot] = qk[:, H:], qkv[:, H + K:]
            scores = torch.baddbmm(self.bias[:, :, :S], qk[:, :H].reshape(B * K, G, d),
                                   keys[:, :, :S].transpose(2, 3).reshape(B * K, d, S))
            o = scores.softmax(-1) @ values[:, :, :S].reshape(B * K, S, d)    # [B * K, G, d]
            x = self._mlp(i, layer, x + self.o[i](o.view(B, H * d)))
        return self.head(rms_norm(self.inner.norm, x))                       # [B, V]

    def _mlp(self, i: int, layer, x: Tensor) -> Tensor:
        """x + the gated MLP of layer ``i`` on x (after the attention's residual)."""
        g, u = self.gate_up[i](rms_norm(layer.post_attention_layernorm, x)).chunk(2, dim=-1)
        return x + self.down[i](self.act(g) * u)

    def _forward(self, ids: Tensor, mask: Tensor, rows: Tensor) -> Tensor:
        """Prompts ids [G, P] into cache rows ``rows`` [G], slots 0..P -> logits [G, V] at the
        last position (the prefill; ``mask`` [G, 1, P, P] bool)."""
        B, T = ids.shape
        H, K, d = self.H, self.K, self.d
        cos, sin = self.cos[rows, :, :T], self.sin[rows, :, :T]                # [G, 1, P, d]
        x = self.inner.embed_tokens(ids)                                      # [G, P, D]
        for i, layer in enumerate(self.inner.layers):
            qkv = self.qkv[i](rms_norm(layer.input_layernorm, x))
            qk, v = qkv.view(B, T, H + 2 * K, d).transpose(1, 2).split([H + K, K], dim=1)
            qk = rotate(qk, cos, sin)                                         # q and k at once
            q, k = qk.split([H, K], dim=1)                                    # [G, H, P, d], [G, K, P, d]
            self.k_cache[i, rows, :, :T], self.v_cache[i, rows, :, :T] = k, v
            o = F.scaled_dot_product_attention(q, k.repeat_interleave(H // K, 1),
                                               v.repeat_interleave(H // K, 1),
                                               attn_mask=mask, scale=1.0)        # scale is in q
            x = self._mlp(i, layer, x + self.o[i](o.transpose(1, 2).reshape(B, T, H * d)))
        return self.head(rms_norm(self.inner.norm, x[:, -1]))               # [G, V]
