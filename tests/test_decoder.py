"""The sampler's lean Llama-family decoder reproduces the transformers forward."""

import pytest
import torch

from scorealign.engine import rollout
from scorealign.engine.decoder import lean_decoder_accepts as supports


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
    monkeypatch.setattr(rollout.LeanGenerator, "accepts", staticmethod(lambda model: False))
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

    from scorealign.engine import decoder

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
    monkeypatch.setattr(rollout.LeanGenerator, "accepts", staticmethod(lambda model: False))
    hf = rollout.sample(*args)
    assert torch.equal(lean[0], hf[0]) and torch.allclose(lean[2], hf[2], atol=1e-5)


def test_decode_linear_equals_f_linear():
    """``decoder.Linear`` (W^T stored contiguously): the same products as ``F.linear`` for a decode
    step's [B, 1, in] and a prefill's [B, T, in], with and without bias."""
    from scorealign.engine import decoder

    torch.manual_seed(0)
    weight, bias = torch.randn(48, 16), torch.randn(48)
    for b in (bias, None):
        lin = decoder.Linear(weight, b, rows=6)
        for shape in [(6, 1, 16), (2, 5, 16)]:
            x = torch.randn(shape)
            torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, weight, b))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_onednn_packed_weights_sample_the_same(tiny_model_dir, monkeypatch):
    """With every decode weight in oneDNN's blocked layout (the threshold lowered so the tiny
    model's matrices qualify), the sampler draws the same tokens as the transformers path and
    its log-probs agree to float round-off; the threshold keeps small matrices on plain W^T."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scorealign.engine import decoder

    path = tiny_model_dir("qwen2")
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    with torch.no_grad():                                                   # q/k/v biases, not 0
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_(0, 0.5), layer.self_attn.v_proj.bias.normal_(0, 0.5)
    ids, mask = rollout.tokenize_prompts(tok, ["hello", "one two three four five"], 64, [True] * 2)
    ids, mask = ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)
    u = torch.rand(4, 12, generator=torch.Generator().manual_seed(2))
    args = (model, ids, mask, u, rollout.eos_token_ids(tok, model), rollout.pad_token_id(tok))
    built = []
    real = decoder.LeanDecoder.build.__func__
    monkeypatch.setattr(decoder.LeanDecoder, "build",
                        classmethod(lambda cls, *a: built.append(real(cls, *a)) or built[-1]))
    monkeypatch.setattr(decoder, "ONEDNN_MIN_WEIGHT", 1)
    packed = rollout.sample(*args)
    assert all(lin.packed is not None and lin.weight_t is None for lin in built[0].qkv)
    monkeypatch.setattr(decoder, "ONEDNN_MIN_WEIGHT", 2**18)
    rollout.sample(*args)
    assert all(lin.packed is None for lin in built[1].qkv + built[1].gate_up)   # tiny: plain
    monkeypatch.setattr(rollout.LeanGenerator, "accepts", staticmethod(lambda model: False))
    hf = rollout.sample(*args)
    assert torch.equal(packed[0], hf[0]) and torch.equal(packed[1], hf[1])
    assert torch.allclose(packed[2], hf[2], atol=1e-5)


def test_decode_linear_without_onednn_falls_back(monkeypatch):
    """A torch built without oneDNN's reorder op: large weights stay on plain W^T, same products,
    and the op is not tried again."""
    from scorealign.engine import decoder

    def missing(*a, **kw):
        raise RuntimeError("no mkldnn")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", missing, raising=False)
    monkeypatch.setattr(decoder, "ONEDNN_MIN_WEIGHT", 1)
    weight, x = torch.randn(48, 16), torch.randn(6, 16)
    lin = decoder.Linear(weight, None, rows=6)
    assert lin.packed is None and decoder.ONEDNN_MIN_WEIGHT is None
    torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, weight))


def test_onednn_switched_off_by_environment():
    """``SCOREALIGN_ONEDNN=0`` keeps every decode weight on plain W^T (read at import)."""
    import os
    import subprocess
    import sys

    code = ("import torch; from scorealign.engine import decoder; "
            "print(decoder.ONEDNN_MIN_WEIGHT, decoder.Linear(torch.randn(1024, 512), None, 32).packed)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "SCOREALIGN_ONEDNN": "0"}).stdout.split()
    assert out == ["None", "None"]


def test_decoder_weight_copies_are_model_sized(tiny_model_dir):
    """The per-rollout weight copies take what the weights they copy take, whatever the matrix
    sizes: MKL's packed layout, which allocated >= 5.7 MB per matrix (170 MB for a 1M-parameter
    model, and page faults every step), must not come back (benchmarks/README.md)."""
    from transformers import AutoModelForCausalLM

    from scorealign.engine import decoder

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama")).eval()
    mask = torch.ones(4, 3, dtype=torch.long)
    with torch.inference_mode():
        lean = decoder.LeanDecoder.build(model, mask, torch.arange(8).expand(4, 8), 8)
    linears = [*lean.qkv, *lean.o, *lean.gate_up, *lean.down, lean.head]
    held = {id(t): t.nbytes for lin in linears for t in vars(lin).values()
            if isinstance(t, torch.Tensor)}
    copied = sum(p.nbytes for name, p in model.named_parameters()
                 if "proj" in name or "lm_head" in name or name.endswith("embed_tokens.weight"))
    assert 0 < sum(held.values()) <= copied
