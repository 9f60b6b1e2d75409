"""LoRA through peft: only adapter weights train, pi_ref is the base model, final/ loads plainly."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scorealign.engine.rollout import completion_logprobs
from scorealign.train import TrainConfig, train

pytest.importorskip("peft")


def test_lora_run_changes_only_adapted_weights(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_model_dir("llama")
    cfg = TrainConfig(model=model, dataset="toy", steps=3, prompts_per_step=4, k=2, micro_batch_size=4,
                      max_new_tokens=8, lr=1e-2, output_dir=str(tmp_path / "run"),
                      rewards=("builtin:length",), lora_r=4, lora_alpha=8)
    run = train(cfg)
    base = load_file(str(Path(model) / "model.safetensors"))
    merged = load_file(str(run / "final" / "model.safetensors"))
    assert (run / "final" / "adapter" / "adapter_config.json").is_file()
    adapted = [k for k in base if k.endswith("proj.weight")]
    frozen = [k for k in base if k not in adapted]
    assert adapted and frozen
    assert all(torch.equal(base[k], merged[k]) for k in frozen)          # norms, embeddings
    assert any(not torch.equal(base[k], merged[k]) for k in adapted)     # the adapter moved them
    AutoModelForCausalLM.from_pretrained(run / "final")                    # no peft needed to load
    import json

    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss/policy"] == r["loss/policy"] and abs(r["kl"]) < float("inf") for r in rows)


def test_lora_reference_is_the_base_model(tiny_model_dir, tmp_path):
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from scorealign.core.models import load_models

    model = tiny_model_dir("llama")
    cfg = TrainConfig(model=model, lora_r=4, output_dir=str(tmp_path))
    policy, ref, _ = load_models(cfg, tmp_path, Accelerator(cpu=True))
    assert sum(p.numel() for p in ref.parameters()) == 0                  # no second copy
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    for n, p in policy.named_parameters():                                # adapter now non-zero
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    base = AutoModelForCausalLM.from_pretrained(model)
    ids, cids = torch.randint(3, 60, (2, 5)), torch.randint(3, 60, (2, 6))
    args = (ids, torch.ones_like(ids), cids, torch.ones_like(cids))
    with torch.no_grad():
        ref_lp, base_lp = completion_logprobs(ref, *args), completion_logprobs(base, *args)
        policy_lp = completion_logprobs(policy, *args)
    assert torch.allclose(ref_lp, base_lp, atol=1e-6)
    assert not torch.allclose(policy_lp, base_lp, atol=1e-3)


def test_lean_decoder_samples_lora_policy_like_transformers(tiny_model_dir, tmp_path, monkeypatch):
    """LoRA policies sample on the lean decoder (adapters folded into its weights): the same
    tokens and log-probs as the peft/transformers forward; the adapter-off reference packs."""
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from scorealign.core.models import load_models
    from scorealign.engine import packing, rollout
    from scorealign.engine.decoder import lean_decoder_accepts as supports

    model = tiny_model_dir("llama")
    cfg = TrainConfig(model=model, lora_r=4, output_dir=str(tmp_path))
    policy, ref, _ = load_models(cfg, tmp_path, Accelerator(cpu=True))
    for n, p in policy.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    policy.eval()
    assert supports(policy) and packing.supports_packing(ref)
    tok = AutoTokenizer.from_pretrained(model)
    ids, mask = rollout.tokenize_prompts(tok, ["hello", "one two three"], 64, [True] * 2)
    ids, mask = ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)
    u = torch.rand(4, 10, generator=torch.Generator().manual_seed(0))
    args = (policy, ids, mask, u, rollout.eos_token_ids(tok, policy), rollout.pad_token_id(tok))
    lean = rollout.sample(*args)
    monkeypatch.setattr(rollout.LeanGenerator, "accepts", staticmethod(lambda model: False))
    hf = rollout.sample(*args)
    assert torch.equal(lean[0], hf[0]) and torch.allclose(lean[2], hf[2], atol=1e-5)
    with torch.no_grad():
        packed = rollout.completion_logprobs(ref, ids, mask, lean[0], lean[1])
        padded = rollout.completion_logprobs(ref, ids, mask, lean[0], lean[1], pack=False)
    assert torch.allclose(packed, padded, atol=1e-5)
