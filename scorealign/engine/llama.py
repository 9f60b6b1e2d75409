"""What the lean decoder (``decoder.py``) and the lean forward (``forward.py``) share about the
Llama family (Llama, Qwen2, Mistral): which models they accept, and the equations they both
reimplement (RMSNorm, the rotary embedding as a roll, the head size)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor
ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


def unwrap(model):
    """The transformers model inside a peft ``PeftModel`` (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "peft_config") else model


def architecture_ok(model) -> bool:
    """True for a Llama/Qwen2/Mistral causal LM (not wrapped) with full attention on every layer
    and no ``pretraining_tp``: the equations ``LeanDecoder`` and ``forward.py`` implement."""
    cfg = getattr(model, "config", None)
    if type(model).__name__ not in ARCHITECTURES or cfg is None:
        return False
    if getattr(cfg, "pretraining_tp", 1) > 1 or getattr(cfg, "use_sliding_window", False):
        return False
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
        return False
    return not (type(model).__name__ == "MistralForCausalLM" and getattr(cfg, "sliding_window", None))


def head_dim(cfg) -> int:
    """Size of one attention head: ``cfg.head_dim`` where set, else hidden_size / heads."""
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def rms_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """transformers' Llama RMSNorm (normalise in float32, cast back, scale) through F.rms_norm:
    bit-identical in fp32 and bf16 (checked), fewer Python-level ops than the module."""
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=norm.variance_epsilon).to(x.dtype)


def rotary_tables(inner, like: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
    """(cos, sin') of the model's rotary embedding at ``positions`` [B, S] -> [B, S, d] each,
    with sin's first half negated, so that the rotary embedding of x is ``rotate(x, cos, sin')``
    (one roll instead of transformers' rotate_half and concatenation). ``inner``: the decoder
    (``model.model``); ``like``: any tensor of the model's dtype and device."""
    cos, sin = inner.rotary_emb(like, positions)                              # [B, S, d] each
    half = sin.shape[-1] // 2
    return cos, torch.cat([-sin[..., :half], sin[..., half:]], -1)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """The rotary embedding of x [..., d] with ``rotary_tables``' (cos, sin') broadcast to it:
    rotate_half(x) * sin == x.roll(d / 2) * sin'."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin
