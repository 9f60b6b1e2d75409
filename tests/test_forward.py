"""The lean forward for completion log-probs (``scorealign/forward.py``): the same log-probs and
gradients as the transformers forward over padded rows, for every layout it builds, and the cases
it leaves to transformers."""

import pytest
import torch

from scorealign import forward
from scorealign.rollout import completion_logprobs, pad_rows
from scorealign.tiny import build_tiny_model


def _model(tmp_path, arch="llama"):
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(tmp_path / arch, arch=arch, hidden=32, layers=2, heads=4, seed=0)
    return AutoModelForCausalLM.from_pretrained(path).float()


def _batch(groups):
    """groups: [(prompt ids, [completion ids, ...]), ...] -> left/right padded tensors."""
    prompts = [p for p, cs in groups for _ in cs]
    completions = [c for _, cs in groups for c in cs]
    return (*pad_rows(prompts, 0, left=True), *pad_rows(completions, 0, left=False))


SHARED = [([5, 6, 7], [[8, 9, 10, 11], [12], [13, 14]]),
          ([20, 21, 22, 23, 24, 25], [[30, 31], [32, 33, 34, 35, 36]]),
          ([40], [[41, 42, 43, 44, 45, 46, 47]]),
          ([50, 51], [[52, 53, 54], [55, 56, 57], [58], [59, 60]])]
DISTINCT = [([5, 6], [[7, 8, 9]]), ([9, 10, 11, 12], [[13]]), ([3], [[14, 15]])]


def _grads(model, lp):
    model.zero_grad()
    lp.sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("arch", ["llama", "qwen2"])     # qwen2: q/k/v biases, 2 kv heads for 4
@pytest.mark.parametrize("groups", [SHARED, DISTINCT], ids=["shared-prompts", "distinct"])
def test_lean_equals_padded_logprobs_and_gradients(tmp_path, arch, groups):
    model = _model(tmp_path, arch)
    batch = _batch(groups)
    lean = forward.lean_logprobs(model, *batch, temperature=0.7)
    assert lean is not None
    padded = completion_logprobs(model, *batch, temperature=0.7, pack=False)
    torch.testing.assert_close(lean, padded, atol=1e-5, rtol=1e-5)
    assert (lean[batch[3] == 0] == 0).all()
    g_lean = _grads(model, forward.lean_logprobs(model, *batch, temperature=0.7))
    g_padded = _grads(model, completion_logprobs(model, *batch, temperature=0.7, pack=False))
    torch.testing.assert_close(g_lean, g_padded, atol=1e-5, rtol=1e-4)


def test_flat_layout_runs_each_token_once():
    ids, positions, rows, out, pred = forward.flat_layout(*_batch(SHARED[:1]))
    # prompt 5 6 7 once, then each completion but its last token (8 9 10 [11], [12], 13 [14])
    assert ids.tolist() == [5, 6, 7, 8, 9, 10, 13]
    assert positions.tolist() == [0, 1, 2, 3, 4, 5, 3]
    assert rows.tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 0, 0], [0, 1, 2, 6, 0, 0]]
    assert out.tolist() == [0, 1, 2, 3, 4, 5, 15]              # prompt from row 0, slot r * 6 + j
    assert pred.tolist() == [[2, 3, 4, 5], [2, 0, 0, 0], [2, 6, 0, 0]]


def test_lora_policy_takes_the_lean_forward(tmp_path):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(_model(tmp_path), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False))
    batch = _batch(SHARED)
    lean = forward.lean_logprobs(model, *batch, temperature=1.0)
    assert lean is not None
    torch.testing.assert_close(lean, completion_logprobs(model, *batch, pack=False), atol=1e-5,
                               rtol=1e-5)


def test_left_to_transformers(tmp_path):
    model = _model(tmp_path)
    batch = _batch(SHARED)
    wrapped = torch.nn.Module()
    wrapped.module = model                          # DDP/FSDP-style wrapper: its own forward
    assert forward.lean_logprobs(wrapped, *batch, temperature=1.0) is None
    model.activation_checkpointing_enable()
    assert forward.lean_logprobs(model, *batch, temperature=1.0) is None
    model.activation_checkpointing_disable()
    empty_prompt = (batch[0], torch.zeros_like(batch[1]), *batch[2:])
    assert forward.lean_logprobs(model, *empty_prompt, temperature=1.0) is None
    no_rows = tuple(t[:0] for t in batch)
    assert forward.lean_logprobs(model, *no_rows, temperature=1.0) is None
    gpt2 = _model(tmp_path, "gpt2")
    assert forward.lean_logprobs(gpt2, *batch, temperature=1.0) is None


def test_switched_off_by_environment(tmp_path, monkeypatch):
    model = _model(tmp_path)
    monkeypatch.setenv("SCOREALIGN_LEAN_FORWARD", "0")
    assert forward.lean_logprobs(model, *_batch(SHARED), temperature=1.0) is None


def test_chunked_lm_head_same_logprobs_and_gradients(tmp_path, monkeypatch):
    """With a large vocabulary the LM head runs in row chunks with recompute in backward
    (``ChunkedHeadLogprob``); forced here on the tiny vocabulary, chunks of 3 rows."""
    model = _model(tmp_path)
    batch = _batch(SHARED)
    padded = completion_logprobs(model, *batch, temperature=0.7, pack=False)
    g_padded = _grads(model, completion_logprobs(model, *batch, temperature=0.7, pack=False))
    calls = []
    real = forward.ChunkedHeadLogprob.apply
    monkeypatch.setattr(forward.ChunkedHeadLogprob, "apply", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(forward, "CHUNK_ELEMENTS", 3 * model.config.vocab_size)
    chunked = forward.lean_logprobs(model, *batch, temperature=0.7)
    assert calls
    torch.testing.assert_close(chunked, padded, atol=1e-5, rtol=1e-5)
    g_chunked = _grads(model, forward.lean_logprobs(model, *batch, temperature=0.7))
    torch.testing.assert_close(g_chunked, g_padded, atol=1e-5, rtol=1e-4)
    with torch.inference_mode():                                        # reference forward
        torch.testing.assert_close(forward.lean_logprobs(model, *batch, temperature=0.7), padded,
                                   atol=1e-5, rtol=1e-5)
