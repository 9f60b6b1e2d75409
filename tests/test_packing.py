"""Shared-prompt packing (``scorealign/packing.py``): same log-probs and gradients as one padded
row per completion, and the fallbacks."""

import pytest
import torch

from scorealign import packing
from scorealign.rollout import completion_logprobs, pad_rows
from scorealign.tiny import build_tiny_model


def _model(tmp_path, attn="sdpa", arch="llama"):
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(tmp_path / "m", arch=arch, hidden=32, layers=2, heads=4, seed=0)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn)
    return model.float()


def _batch(groups):
    """groups: [(prompt ids, [completion ids, ...]), ...] -> left/right padded tensors."""
    prompts = [p for p, cs in groups for _ in cs]
    completions = [c for _, cs in groups for c in cs]
    return (*pad_rows(prompts, 0, left=True), *pad_rows(completions, 0, left=False))


GROUPS = [([5, 6, 7], [[8, 9, 10, 11], [12], [13, 14]]),
          ([20, 21, 22, 23, 24, 25], [[30, 31], [32, 33, 34, 35, 36]]),
          ([40], [[41, 42, 43, 44, 45, 46, 47]]),
          ([50, 51], [[52, 53, 54], [55, 56, 57], [58], [59, 60]])]


def _grads(model, lp):
    model.zero_grad()
    lp.sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_equals_padded_logprobs_and_gradients(tmp_path, arch):
    for attn in ("sdpa", "eager"):
        model = _model(tmp_path / attn, attn, arch)
        batch = _batch(GROUPS)
        packed = packing.packed_logprobs(model, *batch, temperature=0.7)
        assert packed is not None, "packing should apply: groups share prompts"
        padded = completion_logprobs(model, *batch, temperature=0.7, pack=False)
        torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
        assert (packed[batch[3] == 0] == 0).all()
        g_packed = _grads(model, packing.packed_logprobs(model, *batch, temperature=0.7))
        g_padded = _grads(model, completion_logprobs(model, *batch, temperature=0.7, pack=False))
        torch.testing.assert_close(g_packed, g_padded, atol=1e-5, rtol=1e-4)


def test_completion_logprobs_packs_without_the_lean_forward(tmp_path, monkeypatch):
    """Llama-family models take ``forward.py``; a packable model it does not cover packs."""
    from scorealign import forward

    model = _model(tmp_path)
    calls = []
    real = packing.pack
    monkeypatch.setattr(packing, "pack", lambda *a: calls.append(1) or real(*a))
    completion_logprobs(model, *_batch(GROUPS))
    assert not calls, "a Llama model should take the lean forward"
    monkeypatch.setattr(forward, "supports", lambda model: False)
    completion_logprobs(model, *_batch(GROUPS))
    assert calls, "completion_logprobs should take the packed path for shared prompts"


def test_fallbacks(tmp_path):
    model = _model(tmp_path)
    distinct = _batch([([5, 6], [[7, 8]]), ([9], [[10, 11]])])
    assert packing.packed_logprobs(model, *distinct, temperature=1.0) is None   # nothing shared
    model.config.sliding_window = 4
    assert not packing.supports_packing(model)
    model.config.sliding_window = None
    model.config._attn_implementation = "flash_attention_2"
    assert not packing.supports_packing(model)
    # long completions: the packed row's quadratic attention costs more than it saves
    cfg = model.config
    assert packing.layer_cost(cfg, 1 * 8 * 4096, 8 * 4096) > packing.layer_cost(cfg, 8 * 4097, 4097)


def test_prompt_groups_ignores_padding_ids():
    ids = torch.tensor([[0, 5, 6], [9, 5, 6], [5, 5, 6], [0, 0, 6]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]])
    assert packing.prompt_groups(ids, mask) == [0, 2, 3, 4]
