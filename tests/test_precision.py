"""Mixed precision (``precision: bf16``): detection and its float32 fallback, bf16 log-probs close
to float32 (the lean decoder and the lean forward under autocast), float32 master weights and
AdamW state, and the importance ratio of single-use and reused batches."""

import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM

from scorealign.algorithms.registry import ALGORITHMS
from scorealign.core import precision
from scorealign.engine.generation import sample
from scorealign.engine.logprobs import completion_logprobs
from scorealign.errors import ConfigError
from scorealign.train import TrainConfig, loop, train

# bf16 keeps 8 mantissa bits: per-token log-probs of the tiny model move by ~1e-3 (measured
# 1.2e-3 bf16 vs fp32 forward, 2.0e-3 bf16 sampler vs bf16 forward); the bound leaves 10x room.
BF16_ATOL = 2e-2


@pytest.fixture
def fast_bf16(monkeypatch):
    """Pretend this CPU has native bf16 (the bf16 path runs, emulated, wherever it is tested)."""
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)


def test_detection_and_fallback(monkeypatch, capsys):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert precision.bf16_supported("cpu")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    assert not precision.bf16_supported("cpu")
    assert precision.compute_dtype("bf16", "cpu") == torch.float32
    assert "running float32" in capsys.readouterr().out         # asked for bf16: one note
    assert precision.compute_dtype("auto", "cpu") == torch.float32
    assert capsys.readouterr().out == ""                          # auto: silent
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    assert precision.compute_dtype("bf16", "cpu") == torch.bfloat16
    assert precision.compute_dtype("auto", "cpu") == torch.bfloat16
    assert precision.compute_dtype("fp32", "cpu") == torch.float32


def test_config_rejects_bf16_arithmetic_over_half_weights():
    with pytest.raises(ConfigError, match="use dtype=float32"):
        TrainConfig(precision="bf16", dtype="bfloat16")
    with pytest.raises(ConfigError, match="precision='fp16'"):
        TrainConfig(precision="fp16")


def tiny_batch(path):
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 90, (4, 6), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0                                                   # one left-padded prompt
    return model, ids, mask, torch.rand(4, 12, generator=gen)


def test_bf16_logprobs_close_to_float32(tiny_model_dir):
    model, ids, mask, uniforms = tiny_batch(tiny_model_dir(hidden=64))
    with torch.no_grad():
        fp32 = [t.clone() for t in sample(model, ids, mask, uniforms, [2], 0)]
        with precision.autocast(torch.bfloat16, "cpu"):
            bf16 = [t.clone() for t in sample(model, ids, mask, uniforms, [2], 0)]
            train_bf16 = completion_logprobs(model, ids, mask, bf16[0], bf16[1])
        train_fp32 = completion_logprobs(model, ids, mask, bf16[0], bf16[1])
    assert train_bf16.dtype == torch.float32                          # log-softmax in float32
    assert (bf16[2] - train_bf16).abs().max() < BF16_ATOL             # bf16 sampler vs forward
    assert (train_bf16 - train_fp32).abs().max() < BF16_ATOL          # bf16 vs float32 forward
    assert (train_bf16 - train_fp32).abs().max() > 0                  # bf16 did run
    if torch.equal(fp32[0], bf16[0]):
        assert (fp32[2] - bf16[2]).abs().max() < BF16_ATOL


def test_bf16_gradients_reach_float32_weights(tiny_model_dir, monkeypatch):
    """The chunked LM head (its own backward) runs its products in bf16 too; grads are float32."""
    import scorealign.engine.forward as forward

    monkeypatch.setattr(forward, "CHUNK_ELEMENTS", 96 * 5)           # 5-row chunks
    model, ids, mask, uniforms = tiny_batch(tiny_model_dir(hidden=64))
    with torch.no_grad():
        c_ids, c_mask = [t.clone() for t in sample(model, ids, mask, uniforms, [2], 0)][:2]
    with precision.autocast(torch.bfloat16, "cpu"):
        completion_logprobs(model, ids, mask, c_ids, c_mask).sum().backward()
    assert all(p.grad.dtype == torch.float32 and p.dtype == torch.float32
               for p in model.parameters() if p.grad is not None)
    assert model.lm_head.weight.grad.abs().sum() > 0


def spied_run(tmp_path, monkeypatch, **overrides):
    """A 1-step tiny RLOO run; returns (optimizer, the first loss call's max |log ratio|, whether
    the training forward ran under autocast)."""
    seen = {}
    rloo = ALGORITHMS["rloo"]

    def loss(token_lp, old_lp, values, mb, cfg):
        seen.setdefault("log_ratio", (token_lp.detach() - old_lp).abs().max().item())
        seen.setdefault("autocast", torch.is_autocast_enabled("cpu"))
        return rloo.loss(token_lp, old_lp, values, mb, cfg)

    adamw = loop.adamw
    monkeypatch.setitem(ALGORITHMS, "rloo", dataclasses.replace(rloo, loss=loss))
    monkeypatch.setattr(loop, "adamw", lambda *a: seen.setdefault("opt", adamw(*a)))
    base = dict(model="tiny", algo="rloo", k=2, prompts_per_step=2, micro_batch_size=2, steps=1,
                max_new_tokens=6, lr=1e-2, output_dir=str(tmp_path / "run"))
    real_logprobs = loop.completion_logprobs

    def spy(*a, **kw):
        seen.setdefault("autocast", torch.is_autocast_enabled("cpu"))
        return real_logprobs(*a, **kw)

    monkeypatch.setattr(loop, "completion_logprobs", spy)
    train(TrainConfig(**{**base, **overrides}))
    return seen


def test_bf16_run_keeps_float32_master_weights_and_adamw_state(tmp_path, monkeypatch, fast_bf16):
    seen = spied_run(tmp_path, monkeypatch, precision="bf16")
    assert seen["autocast"]                                           # the forward ran in bf16
    params = [p for g in seen["opt"].param_groups for p in g["params"]]
    assert params and all(p.dtype == torch.float32 for p in params)
    state = [s for p in params for s in seen["opt"].state[p].values() if s.dim() > 0]
    assert state and all(s.dtype == torch.float32 for s in state)    # exp_avg, exp_avg_sq
    assert seen["log_ratio"] == 0.0                                   # used once: ratio exactly 1


def test_reused_bf16_batch_takes_old_logprobs_from_the_training_forward(tmp_path, monkeypatch,
                                                                         fast_bf16):
    """num_epochs=2: the first update's ratio is exactly 1 (old log-probs recomputed by the
    bf16 training forward over the same micro-batches), not the sampler's bf16 round-off."""
    seen = spied_run(tmp_path, monkeypatch, precision="bf16", num_epochs=2)
    assert seen["log_ratio"] == 0.0


def test_fallback_run_is_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    seen = spied_run(tmp_path, monkeypatch, precision="bf16", num_epochs=2)
    assert not seen["autocast"]
    assert seen["log_ratio"] < 1e-4                                    # sampler's fp32 log-probs
