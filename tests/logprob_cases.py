"""Shared by the log-prob layout tests (``test_packing.py``, ``test_forward.py``): a tiny model,
prompt groups as padded tensors, and the flattened gradient of a log-prob sum."""

import torch

from scorealign.core.tiny import build_tiny_model
from scorealign.engine.rollout import pad_rows

# (prompt ids, [completion ids, ...]): adjacent completions share their prompt
SHARED = [([5, 6, 7], [[8, 9, 10, 11], [12], [13, 14]]),
          ([20, 21, 22, 23, 24, 25], [[30, 31], [32, 33, 34, 35, 36]]),
          ([40], [[41, 42, 43, 44, 45, 46, 47]]),
          ([50, 51], [[52, 53, 54], [55, 56, 57], [58], [59, 60]])]


def tiny_lm(tmp_path, arch="llama", attn="sdpa"):
    """A random-weight 2-layer causal LM of ``arch`` (built under ``tmp_path / arch``), fp32."""
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(tmp_path / arch, arch=arch, hidden=32, layers=2, heads=4, seed=0)
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn).float()


def padded_batch(groups):
    """groups: [(prompt ids, [completion ids, ...]), ...] -> left/right padded tensors."""
    prompts = [p for p, cs in groups for _ in cs]
    completions = [c for _, cs in groups for c in cs]
    return (*pad_rows(prompts, 0, left=True), *pad_rows(completions, 0, left=False))


def grads(model, lp):
    """All parameter gradients of ``lp.sum()``, flattened into one vector."""
    model.zero_grad()
    lp.sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
