"""Shared-prompt packing (``scorealign/engine/packing.py``): same log-probs and gradients as one padded
row per completion, and the fallbacks."""

import pytest
import torch
from logprob_cases import SHARED, grads, padded_batch, tiny_lm

from scorealign.engine import packing
from scorealign.engine.rollout import completion_logprobs


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_equals_padded_logprobs_and_gradients(tmp_path, arch):
    for attn in ("sdpa", "eager"):
        model = tiny_lm(tmp_path / attn, arch, attn)
        batch = padded_batch(SHARED)
        packed = packing.packed_logprobs(model, *batch, temperature=0.7)
        assert packed is not None, "packing should apply: groups share prompts"
        padded = completion_logprobs(model, *batch, temperature=0.7, pack=False)
        torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
        assert (packed[batch[3] == 0] == 0).all()
        g_packed = grads(model, packing.packed_logprobs(model, *batch, temperature=0.7))
        g_padded = grads(model, completion_logprobs(model, *batch, temperature=0.7, pack=False))
        torch.testing.assert_close(g_packed, g_padded, atol=1e-5, rtol=1e-4)


def test_completion_logprobs_packs_without_the_lean_forward(tmp_path, monkeypatch):
    """Llama-family models take ``forward.py``; a packable model it does not cover packs."""
    from scorealign.engine import forward

    model = tiny_lm(tmp_path)
    calls = []
    real = packing.pack
    monkeypatch.setattr(packing, "pack", lambda *a: calls.append(1) or real(*a))
    completion_logprobs(model, *padded_batch(SHARED))
    assert not calls, "a Llama model should take the lean forward"
    monkeypatch.setattr(forward, "lean_forward_accepts", lambda model: False)
    completion_logprobs(model, *padded_batch(SHARED))
    assert calls, "completion_logprobs should take the packed path for shared prompts"


def test_fallbacks(tmp_path):
    model = tiny_lm(tmp_path)
    distinct = padded_batch([([5, 6], [[7, 8]]), ([9], [[10, 11]])])
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
