"""The lean forward for completion log-probs (``scorealign/engine/forward.py``): the same log-probs and
gradients as the transformers forward over padded rows, for every layout it builds, and the cases
it leaves to transformers."""

import pytest
import torch
from logprob_cases import SHARED, grads, padded_batch, tiny_lm

from scorealign.engine import forward
from scorealign.engine.rollout import completion_logprobs

DISTINCT = [([5, 6], [[7, 8, 9]]), ([9, 10, 11, 12], [[13]]), ([3], [[14, 15]])]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])     # qwen2: q/k/v biases, 2 kv heads for 4
@pytest.mark.parametrize("groups", [SHARED, DISTINCT], ids=["shared-prompts", "distinct"])
def test_lean_equals_padded_logprobs_and_gradients(tmp_path, arch, groups):
    model = tiny_lm(tmp_path, arch)
    batch = padded_batch(groups)
    lean = forward.lean_logprobs(model, *batch, temperature=0.7)
    assert lean is not None
    padded = completion_logprobs(model, *batch, temperature=0.7, pack=False)
    torch.testing.assert_close(lean, padded, atol=1e-5, rtol=1e-5)
    assert (lean[batch[3] == 0] == 0).all()
    g_lean = grads(model, forward.lean_logprobs(model, *batch, temperature=0.7))
    g_padded = grads(model, completion_logprobs(model, *batch, temperature=0.7, pack=False))
    torch.testing.assert_close(g_lean, g_padded, atol=1e-5, rtol=1e-4)


def test_flat_layout_runs_each_token_once():
    ids, positions, rows, out, pred = forward.flat_layout(*padded_batch(SHARED[:1]))
    # prompt 5 6 7 once, then each completion but its last token (8 9 10 [11], [12], 13 [14])
    assert ids.tolist() == [5, 6, 7, 8, 9, 10, 13]
    assert positions.tolist() == [0, 1, 2, 3, 4, 5, 3]
    assert rows.tolist() == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 0, 0], [0, 1, 2, 6, 0, 0]]
    assert out.tolist() == [0, 1, 2, 3, 4, 5, 15]              # prompt from row 0, slot r * 6 + j
    assert pred.tolist() == [[2, 3, 4, 5], [2, 0, 0, 0], [2, 6, 0, 0]]


def test_lora_policy_takes_the_lean_forward(tmp_path):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_lm(tmp_path), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False))
    batch = padded_batch(SHARED)
    lean = forward.lean_logprobs(model, *batch, temperature=1.0)
    assert lean is not None
    torch.testing.assert_close(lean, completion_logprobs(model, *batch, pack=False), atol=1e-5,
                               rtol=1e-5)


def test_left_to_transformers(tmp_path):
    model = tiny_lm(tmp_path)
    batch = padded_batch(SHARED)
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
    gpt2 = tiny_lm(tmp_path, "gpt2")
    assert forward.lean_logprobs(gpt2, *batch, temperature=1.0) is None


def test_switched_off_by_environment(tmp_path, monkeypatch):
    model = tiny_lm(tmp_path)
    monkeypatch.setenv("SCOREALIGN_LEAN_FORWARD", "0")
    assert forward.lean_logprobs(model, *padded_batch(SHARED), temperature=1.0) is None


def test_chunked_lm_head_same_logprobs_and_gradients(tmp_path, monkeypatch):
    """With a large vocabulary the LM head runs in row chunks with recompute in backward
    (``ChunkedHeadLogprob``); forced here on the tiny vocabulary, chunks of 3 rows."""
    model = tiny_lm(tmp_path)
    batch = padded_batch(SHARED)
    padded = completion_logprobs(model, *batch, temperature=0.7, pack=False)
    g_padded = grads(model, completion_logprobs(model, *batch, temperature=0.7, pack=False))
    calls = []
    real = forward.ChunkedHeadLogprob.apply
    monkeypatch.setattr(forward.ChunkedHeadLogprob, "apply", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(forward, "CHUNK_ELEMENTS", 3 * model.config.vocab_size)
    chunked = forward.lean_logprobs(model, *batch, temperature=0.7)
    assert calls
    torch.testing.assert_close(chunked, padded, atol=1e-5, rtol=1e-5)
    g_chunked = grads(model, forward.lean_logprobs(model, *batch, temperature=0.7))
    torch.testing.assert_close(g_chunked, g_padded, atol=1e-5, rtol=1e-4)
    with torch.inference_mode():                                        # reference forward
        torch.testing.assert_close(forward.lean_logprobs(model, *batch, temperature=0.7), padded,
                                   atol=1e-5, rtol=1e-5)
