"""The sampler's lean Llama-family decoder reproduces the transformers forward."""

import pytest
import torch

from scorealign import rollout
from scorealign.decoder import supports


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lean_decoder_matches_transformers(arch, tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir(arch)
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    assert supports(model)
    texts = ["hello", "one two three four five", "cat", "sun moon"]            # ragged: left padding
    ids, mask = rollout.tokenize_prompts(tok, texts, 64, [True] * 4)
    u = torch.rand(4, 12, generator=torch.Generator().manual_seed(0))
    args = (model, ids, mask, u, rollout.eos_token_ids(tok, model), rollout.pad_token_id(tok))
    lean = rollout.sample(*args)
    monkeypatch.setattr(rollout.LeanDecoder, "build", classmethod(lambda cls, *a: None))
    hf = rollout.sample(*args)
    assert torch.equal(lean[0], hf[0]) and torch.equal(lean[1], hf[1])      # same tokens
    assert torch.allclose(lean[2], hf[2], atol=1e-5)                        # same log-probs
    with torch.inference_mode():                                            # and = a full forward
        full = rollout.completion_logprobs(model, ids, mask, lean[0], lean[1])
    assert torch.allclose(lean[2], full, atol=1e-5)


def test_unsupported_models_fall_back(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    assert not supports(AutoModelForCausalLM.from_pretrained(tiny_model_dir("gpt2")))


def test_shared_prompts_prefilled_once_same_samples(tiny_model_dir, monkeypatch):
    """k samples per prompt: the lean decoder prefills each prompt once and copies its cache;
    tokens and log-probs equal the transformers path's (which prefills every row)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scorealign import decoder

    path = tiny_model_dir("llama")
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    ids, mask = rollout.tokenize_prompts(tok, ["hello", "one two three four five"], 64, [True] * 2)
    ids, mask = ids.repeat_interleave(3, 0), mask.repeat_interleave(3, 0)   # k = 3
    u = torch.rand(6, 10, generator=torch.Generator().manual_seed(1))
    args = (model, ids, mask, u, rollout.eos_token_ids(tok, model), rollout.pad_token_id(tok))
    seen = []
    real = decoder.LeanDecoder._forward
    monkeypatch.setattr(decoder.LeanDecoder, "_forward",
                        lambda self, x, *a, **kw: seen.append(x.shape[0]) or real(self, x, *a, **kw))
    lean = rollout.sample(*args)
    assert seen[0] == 2                                                     # prefill: 2 prompts
    monkeypatch.setattr(rollout.LeanDecoder, "build", classmethod(lambda cls, *a: None))
    hf = rollout.sample(*args)
    assert torch.equal(lean[0], hf[0]) and torch.allclose(lean[2], hf[2], atol=1e-5)


@pytest.mark.parametrize("mkl", [True, False])
def test_decode_linear_equals_f_linear(mkl, monkeypatch):
    """``decoder.Linear``: MKL-packed weights (fp32 CPU) or W^T stored contiguously; the same
    products as ``F.linear`` at the packed row count and at any other (the prefill)."""
    from scorealign import decoder

    if mkl and not decoder.MKL_PACKED:
        pytest.skip("torch built without MKL")
    monkeypatch.setattr(decoder, "MKL_PACKED", mkl)
    torch.manual_seed(0)
    weight, bias = torch.randn(48, 16), torch.randn(48)
    for b in (bias, None):
        lin = decoder.Linear(weight, b, rows=6)
        assert (lin.packed is not None) == mkl
        for shape in [(6, 1, 16), (2, 5, 16)]:
            x = torch.randn(shape)
            torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, weight, b))


def test_sampler_returns_freed_memory_around_each_rollout(tiny_model_dir, monkeypatch):
    """``rollout.release_freed_memory`` (glibc malloc_trim) runs before the decoder is built and
    after it is freed: without it peak RSS creeps up step after step (benchmarks/README.md)."""
    from transformers import AutoModelForCausalLM

    rollout.release_freed_memory()                                 # callable on any platform
    calls = []
    monkeypatch.setattr(rollout, "release_freed_memory", lambda: calls.append(1))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"))
    ids, mask = torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)
    rollout.sample(model, ids, mask, torch.rand(1, 4), [10**6], 0)
    assert len(calls) == 2
