"""Tiny-model runs of the shared loop: every architecture, learning, variance, invariance, resume."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from multiproc import torchrun
from safetensors.torch import load_file

from scorealign.algorithms import losses
from scorealign.engine.rollout import completion_logprobs, generate_rollout
from scorealign.rewards.sources import CallableReward, reward_from_spec, score_batch
from scorealign.train import TrainConfig, train

# Update tolerance for invariance checks: 1% of the learning rate on any parameter. One AdamW step
# moves every parameter with a non-zero gradient by ~lr; round-off in the gradient (different
# summation order) shows up as ~1e-7 absolute here.
LR = 1e-3
UPDATE_TOL = 1e-2 * LR


def make_cfg(model: str, out: Path, **kw) -> TrainConfig:
    base = dict(model=model, dataset="toy", steps=2, prompts_per_step=4, k=2, micro_batch_size=8,
                max_new_tokens=8, lr=LR, output_dir=str(out), rewards=("builtin:length",))
    base.update(kw)
    return TrainConfig(**base)


def weights(path) -> dict:
    return load_file(str(Path(path) / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def metrics(run_dir) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "qwen2"])
def test_every_architecture_trains_rloo(arch, tiny_model_dir, tmp_path):
    model = tiny_model_dir(arch)
    run = train(make_cfg(model, tmp_path / "run", steps=3, k=4, micro_batch_size=4))
    assert max_diff(weights(run / "final"), weights(model)) > 1e-4          # parameters changed
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert all(v == v and abs(v) != float("inf") for v in r.values()), r
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(run / "final")                    # final model loads
    AutoTokenizer.from_pretrained(run / "final")
    assert (run / "config.yaml").is_file() and list((run / "checkpoints").glob("step-*"))


# A 40-step RLOO run on the toy task ("say yes"): the settings of examples/rloo_toy.yaml.
DEMO_DEFAULTS = {"model": "tiny", "dataset": "toy", "rewards": "builtin:count:yes", "algo": "rloo",
                 "k": "4", "steps": "40", "prompts_per_step": "16", "micro_batch_size": "16",
                 "lr": "3e-3", "beta": "0.02", "max_new_tokens": "16", "output_dir": "runs/demo"}


def test_toy_reward_rises_with_rloo(tmp_path):
    """The built-in demo settings: RLOO k=4 raises count('yes') from ~0 within 40 steps."""
    from scorealign.core.config import load_config

    cfg = load_config(TrainConfig, None, {**DEMO_DEFAULTS, "output_dir": str(tmp_path / "demo")})
    rows = metrics(train(cfg))
    first = sum(r["reward/mean"] for r in rows[:5]) / 5
    last = sum(r["reward/mean"] for r in rows[-5:]) / 5
    assert first < 0.5 and last > first + 2.0, (first, last)


def _policy_gradient(model, batch, advantages):
    model.zero_grad()
    lp = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                             batch.completion_mask)
    losses.aggregate(losses.policy_gradient_loss(lp.sum(-1), advantages), batch.size).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_rloo_gradient_variance_lower_than_vanilla_pg(tiny_model_dir):
    """Same prompts, 8 sampling seeds: per-parameter variance of the gradient estimate."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir("llama")
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    reward = reward_from_spec("builtin:length")                   # always positive: PG has no baseline
    prompts, k, grads = ["hello world", "cat dog", "one two three", "sun"], 4, {"pg": [], "rloo": []}
    for seed in range(8):
        u = torch.rand(len(prompts) * k, 8, generator=torch.Generator().manual_seed(seed))
        batch = generate_rollout(model, model, tok, prompts, prompts, k, u, 64, 1.0, 1.0, [False] * 4)
        scores, _ = score_batch(reward, batch.prompts, batch.completions)
        grads["pg"].append(_policy_gradient(model, batch, losses.vanilla_pg_advantages(scores)))
        grads["rloo"].append(_policy_gradient(model, batch, losses.rloo_advantages(scores, k)))
    var = {name: torch.stack(g).var(0).sum().item() for name, g in grads.items()}
    assert var["rloo"] < 0.5 * var["pg"], var


def test_gradient_accumulation_invariance(tiny_model_dir, tmp_path):
    """1 micro-batch of 8 == 8 micro-batches of 1 (same rollout, one AdamW step)."""
    model = tiny_model_dir("llama")
    a = train(make_cfg(model, tmp_path / "mb8", steps=1, micro_batch_size=8))
    b = train(make_cfg(model, tmp_path / "mb1", steps=1, micro_batch_size=1))
    assert max_diff(weights(a / "final"), weights(b / "final")) < UPDATE_TOL
    assert max_diff(weights(a / "final"), weights(model)) > 0.5 * LR       # and it did move


@pytest.mark.slow
def test_two_processes_match_one(tiny_model_dir, tmp_path, monkeypatch):
    """torchrun --nproc_per_node 2 (gloo) gives the parameters of one process, same global batch
    (both on transformers' forward: DDP's wrapped policy does not take the lean one)."""
    monkeypatch.setenv("SCOREALIGN_LEAN_FORWARD", "0")
    model = tiny_model_dir("llama")
    one = train(make_cfg(model, tmp_path / "one", steps=2, micro_batch_size=2))
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"model: {model}\ndataset: toy\nsteps: 2\nprompts_per_step: 4\nk: 2\n"
                        f"micro_batch_size: 2\nmax_new_tokens: 8\nlr: {LR}\nrewards: [builtin:length]\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*torchrun(2), "-m", "scorealign.cli", "train", str(cfg_file),
           "--output_dir", str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    assert proc.stdout.count("run directory:") == 1                  # the main process only
    assert max_diff(weights(one / "final"), weights(tmp_path / "two" / "final")) < UPDATE_TOL
    assert [r["reward/mean"] for r in metrics(one)] == [r["reward/mean"] for r in metrics(tmp_path / "two")]


def test_resume_is_bit_identical(tiny_model_dir, tmp_path):
    """Crash after step 2 (the reward raises), resume, and reach the uninterrupted run's weights."""
    model = tiny_model_dir("llama")
    kw = dict(steps=4, save_every=2, algo="reinforce", k=2, lr_schedule="linear", warmup_steps=1)
    full = train(make_cfg(model, tmp_path / "full", **kw))

    calls = {"n": 0}

    def flaky_length(prompts, completions, **_):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("machine lost")
        return [float(len(c.split())) for c in completions]

    cfg = make_cfg(model, tmp_path / "resumed", **kw)
    with pytest.raises(Exception, match="machine lost"):
        train(cfg, reward=CallableReward(flaky_length, name="length"))
    assert [r["step"] for r in metrics(tmp_path / "resumed")] == [1, 2]
    train(cfg, resume=True)
    assert all(torch.equal(weights(full / "final")[k], w)
               for k, w in weights(tmp_path / "resumed" / "final").items())
    assert metrics(full) == [dict(r, **{k: v for k, v in f.items() if k.startswith(("time", "throughput"))})
                             for r, f in zip(metrics(tmp_path / "resumed"), metrics(full))]
