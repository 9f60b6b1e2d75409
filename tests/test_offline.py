"""CoPG (online, offline, mixed), DPO, IPO and SFT on the shared loop, on tiny models.

Gradient identities (arXiv 2406.19185, REFERENCE.md §4), through the loop's own loss functions:
- on-policy, one group of k: CoPG's gradient = k x RLOO's (CoPG averages over groups, RLOO over
  sequences; for one pair, eq. (7)'s gradient is the RLOO(2) gradient summed over the pair);
- IPO case: CoPG with scores +1/4, -1/4 follows the IPO gradient (tau = beta), scaled by beta/2;
- k-wise squared form: gradient = -2 beta x the RLOO(k) policy gradient (summed per group).
"""

import json
from pathlib import Path

import pytest
import torch
from multiproc import torchrun

from scorealign.algorithms import ALGORITHMS, losses
from scorealign.cli import main as cli
from scorealign.core.tiny import toy_prompts
from scorealign.engine.rollout import completion_logprobs, generate_rollout
from scorealign.errors import ConfigError, DataError
from scorealign.train import TrainConfig, train
from scorealign.train.batches import OfflineSource, offline_groups, tokenize_example

BETA = 0.1


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    """(policy, reference with perturbed weights, tokenizer): log-ratios are not zero."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir("llama")
    policy = AutoModelForCausalLM.from_pretrained(path)
    ref = AutoModelForCausalLM.from_pretrained(path).requires_grad_(False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return policy, ref, AutoTokenizer.from_pretrained(path)


def rollout(models, k: int, scores: list[float]):
    policy, ref, tok = models
    prompts = ["hello world", "cat dog", "one two three"][: len(scores) // k]
    u = torch.rand(len(scores), 8, generator=torch.Generator().manual_seed(k))
    batch = generate_rollout(policy, ref, tok, prompts, prompts, k, u, 64, 1.0, 1.0,
                             [False] * len(prompts))
    batch.scores = torch.tensor(scores)
    return batch


def loss_gradient(policy, batch, algo: str, cfg, advantages) -> torch.Tensor:
    """Gradient of the loop's aggregated loss for ``algo`` on ``batch`` (one pass, ratio 1)."""
    policy.zero_grad()
    batch.advantages = advantages
    lp = completion_logprobs(policy, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                             batch.completion_mask)
    per_item, _ = ALGORITHMS[algo].loss(lp, lp.detach(), None, batch, cfg)
    losses.aggregate(per_item, batch.size).backward()
    return torch.cat([p.grad.flatten() for p in policy.parameters()])


def rloo_gradient(policy, batch, k):
    rewards = losses.kl_penalized_rewards(
        batch.scores, losses.sequence_kl(batch.logprobs, batch.ref_logprobs, batch.completion_mask), BETA)
    cfg = TrainConfig(algo="rloo", k=k, beta=BETA)
    return loss_gradient(policy, batch, "rloo", cfg, losses.rloo_advantages(rewards, k))


@pytest.mark.parametrize("k,scores", [(2, [1.0, -0.5, 0.3, 2.0]), (4, [1.0, 0.0, 2.5, -1.0] * 2)])
def test_on_policy_copg_gradient_is_k_times_rloo(models, k, scores):
    policy = models[0]
    batch = rollout(models, k, scores)
    g_rloo = rloo_gradient(policy, batch, k)
    g_copg = loss_gradient(policy, batch, "copg", TrainConfig(algo="copg", k=k, beta=BETA),
                           torch.ones(batch.size))
    assert g_rloo.abs().max() > 1e-4
    torch.testing.assert_close(g_copg, k * g_rloo, rtol=1e-3, atol=1e-6)


def test_copg_with_quarter_scores_follows_ipo(models):
    """Scores +1/4 (chosen), -1/4 (rejected): grad IPO(tau=beta) = (2 / beta) grad CoPG."""
    policy = models[0]
    batch = rollout(models, 2, [0.25, -0.25, 0.25, -0.25])
    g_copg = loss_gradient(policy, batch, "copg", TrainConfig(algo="copg", k=2, beta=BETA),
                           torch.ones(batch.size))
    g_ipo = loss_gradient(policy, batch, "ipo", TrainConfig(algo="ipo", beta=BETA),
                          torch.ones(batch.size))
    assert torch.nn.functional.cosine_similarity(g_copg, g_ipo, dim=0) > 0.9999
    torch.testing.assert_close(g_ipo, (2 / BETA) * g_copg, rtol=1e-3, atol=1e-6)


def test_kwise_squared_copg_gradient_is_minus_2beta_rloo(models):
    policy, k = models[0], 4
    batch = rollout(models, k, [1.0, 0.0, 2.5, -1.0, 0.5, 0.5, 3.0, 0.0])
    g_rloo_loss = rloo_gradient(policy, batch, k)             # = -(1/B) sum_i A_i grad log pi_i
    policy.zero_grad()
    lp = completion_logprobs(policy, batch.prompt_ids, batch.prompt_mask, batch.completion_ids,
                             batch.completion_mask)
    logratios = losses.sequence_logratio(lp, batch.ref_logprobs, batch.completion_mask).view(-1, k)
    losses.copg_squared_loss(logratios, batch.scores.view(-1, k), BETA).sum().backward()
    g_squared = torch.cat([p.grad.flatten() for p in policy.parameters()])
    rloo_policy_gradient_sum = -g_rloo_loss * batch.size       # sum_i A_i grad log pi_i
    torch.testing.assert_close(g_squared, -2 * BETA * rloo_policy_gradient_sum, rtol=1e-3, atol=1e-6)


def test_offline_copg_from_sample_and_score_raises_policy_score(tiny_model_dir, tmp_path):
    """`scorealign sample` + `scorealign score` build the dataset; offline CoPG on it raises the
    mean score of the policy's OWN samples on held-out draws (eval.jsonl)."""
    model = tiny_model_dir("llama")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in toy_prompts(96, 0)])
    assert cli(["sample", "--model", model, "--dataset", str(prompts), "--k", "8",
                "--max_new_tokens", "16", "--output", str(tmp_path / "samples.jsonl")]) == 0
    assert cli(["score", "--dataset", str(tmp_path / "samples.jsonl"), "--rewards",
                "builtin:count:yes", "--output", str(tmp_path / "scored.jsonl")]) == 0
    run = train(TrainConfig(model=model, algo="copg", source="offline", k=4, beta=0.02, lr=3e-3,
                            dataset=str(tmp_path / "scored.jsonl"), prompts_per_step=16,
                            micro_batch_size=16, steps=40, max_new_tokens=16, eval_every=20,
                            eval_prompts=64, eval_dataset="toy", rewards=("builtin:count:yes",),
                            output_dir=str(tmp_path / "run")))
    evals = [r["eval/reward"] for r in read_jsonl(run / "eval.jsonl")]
    assert [r["step"] for r in read_jsonl(run / "eval.jsonl")] == [0, 20, 40]
    assert evals[-1] > evals[0] + 0.1, evals


@pytest.fixture
def pair_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": p, "chosen": "yes yes " + w, "rejected": "no " + w}
        for p, w in zip(toy_prompts(16, 0), ["cat", "dog", "sun", "moon"] * 4)])


@pytest.mark.parametrize("algo", ["dpo", "ipo"])
def test_preference_training_learns_pairs_with_cached_reference(algo, tiny_model_dir, pair_file,
                                                                tmp_path, monkeypatch):
    """Two passes over 16 pairs: accuracy reaches 1, the margin grows, and the reference model
    runs once per example (32 sequences), not once per epoch, in one inference pass per step
    (16 sequences, not one pass per micro-batch of 8)."""
    import scorealign.train.batches as sources

    calls, passes = [], []
    original, forward = OfflineSource.reference_logprobs, sources.completion_logprobs

    def counting(self, keys, batch):
        out = original(self, keys, batch)
        calls.append((sum(passes), len(passes)))   # (reference rows, reference passes) so far
        return out

    monkeypatch.setattr(OfflineSource, "reference_logprobs", counting)
    monkeypatch.setattr(sources, "completion_logprobs",
                        lambda m, ids, *a, **kw: passes.append(len(ids)) or forward(m, ids, *a, **kw))
    run = train(TrainConfig(model=tiny_model_dir("llama"), algo=algo, dataset=str(pair_file),
                            beta=0.1, lr=3e-3, prompts_per_step=8, micro_batch_size=8, steps=8,
                            max_new_tokens=8, output_dir=str(tmp_path / algo)))
    rows = read_jsonl(run / "metrics.jsonl")
    assert calls[0] == (16, 1) and calls[1] == (32, 2) and calls[-1] == (32, 2)
    assert rows[-1]["accuracy"] == 1.0 and rows[-1]["margin"] > rows[0]["margin"] + 1.0
    assert "reward/mean" not in rows[0]                      # dataset rows: no rollout metrics


def test_ipo_average_option_changes_the_margin(tiny_model_dir, pair_file, tmp_path):
    """Same data and seed: after one update the policy differs from pi_ref, and the margin h of
    TRL's per-token averaged IPO is smaller than the paper's summed one (completions of 2-4 tokens)."""
    runs = {avg: read_jsonl(train(TrainConfig(
        model=tiny_model_dir("llama"), algo="ipo", dataset=str(pair_file), beta=0.1, steps=2,
        lr=1e-2, prompts_per_step=16, micro_batch_size=8, ipo_average_logprobs=avg,
        output_dir=str(tmp_path / str(avg)))) / "metrics.jsonl") for avg in (False, True)}
    assert runs[True][0]["margin"] == runs[False][0]["margin"] == 0.0      # pi == pi_ref at start
    assert 0 < runs[True][1]["margin"] < runs[False][1]["margin"]


def test_sft_command_on_messages_learns_the_completion(tiny_model_dir, tmp_path):
    rows = [{"messages": [{"role": "user", "content": p},
                          {"role": "assistant", "content": "yes yes"}]} for p in toy_prompts(16, 0)]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    out = tmp_path / "sft"
    assert cli(["sft", "--model", tiny_model_dir("llama"), "--dataset", str(data), "--lr", "1e-2",
                "--num_epochs", "6", "--batch_size", "8", "--output_dir", str(out)]) == 0
    metrics = read_jsonl(out / "metrics.jsonl")
    assert len(metrics) == 12 and metrics[-1]["loss/policy"] < 0.3 * metrics[0]["loss/policy"]
    assert (out / "final" / "model.safetensors").is_file()


def test_tokenize_example_conversational_and_truncated(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir("llama"))
    chat = {"prompt": [{"role": "user", "content": "cat"}],
            "completion": [{"role": "assistant", "content": "yes dog"}]}
    p_ids, c_ids = tokenize_example(tok, chat, 64, 64)
    assert tok.decode(c_ids) == "yes dog<|eos|>" and tok.decode(p_ids).endswith("<|assistant|>")
    p_ids, c_ids = tokenize_example(tok, {"prompt": "cat", "completion": "yes", "truncated": True},
                                    64, 64)
    assert tok.eos_token_id not in c_ids
    _, c_ids = tokenize_example(tok, {"prompt": "cat", "completion": "yes"}, 64, 64)
    assert c_ids[-1] == tok.eos_token_id


def test_untokenizable_example_fails_before_the_first_step(tiny_model_dir, tmp_path):
    """Every example is tokenized when the source is built: a completion the tokenizer cannot
    represent, in the LAST pair, fails with its file and line before any step is run."""
    rows = [{"prompt": f"cat {i}", "chosen": "yes", "rejected": "no"} for i in range(15)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows + [{"prompt": "dog", "chosen": "yes",
                                                          "rejected": "\u2603"}])
    cfg = TrainConfig(model=tiny_model_dir("llama"), dataset=str(data), algo="dpo", steps=2,
                      prompts_per_step=2, micro_batch_size=4, output_dir=str(tmp_path / "run"))
    with pytest.raises(DataError, match=r"pairs.jsonl line 16: field 'completion' has no tokens"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_mixed_copg_uses_replay_and_resumes_identically(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    def cfg(out, steps):
        return TrainConfig(model=tiny_model_dir("llama"), algo="copg", source="mixed", k=2,
                           replay_ratio=0.5, replay_size=8, prompts_per_step=4, micro_batch_size=4,
                           steps=steps, max_new_tokens=6, lr=1e-3, save_every=2,
                           rewards=("builtin:length",), output_dir=str(out))

    full = train(cfg(tmp_path / "full", 4))
    part = train(cfg(tmp_path / "part", 2))
    resumed = train(cfg(part, 4), resume=True)
    rows = read_jsonl(full / "metrics.jsonl")
    assert [r["throughput/completions_per_s"] > 0 for r in rows] == [True] * 4
    assert (full / "checkpoints" / "replay-step-000002" / "rank-0.pt").is_file()
    a, b = load_file(str(full / "final" / "model.safetensors")), load_file(
        str(resumed / "final" / "model.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_offline_errors(tmp_path):
    scored = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "a", "completion": "b", "score": 1}])
    with pytest.raises(DataError, match="no prompt has k=2"):
        offline_groups(TrainConfig(algo="copg", source="offline", k=2, dataset=str(scored)), None)
    bad = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "rejected": "b"}])
    with pytest.raises(DataError, match=r"p.jsonl line 1: missing field 'chosen'"):
        offline_groups(TrainConfig(algo="dpo", dataset=str(bad)), None)
    with pytest.raises(ConfigError, match="source=offline: only algo=copg"):
        TrainConfig(algo="rloo", source="offline")
    with pytest.raises(ConfigError, match="whole groups of 2"):
        TrainConfig(algo="dpo", micro_batch_size=3)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["dpo", "copg"])
def test_two_processes_match_one_for_grouped_losses(algo, tiny_model_dir, pair_file,
                                                    tmp_path, monkeypatch):
    """torchrun --nproc_per_node 2 (gloo): DPO pairs (offline, cached reference) and online CoPG
    groups split over two processes give one process's update (the loss is a mean over the
    GLOBAL groups); the forward packs each group in both runs (the lean forward is off: DDP's
    wrapped policy takes the transformers forward, and the two differ in round-off)."""
    import os
    import subprocess

    from safetensors.torch import load_file

    from scorealign.core.config import save_config

    monkeypatch.setenv("SCOREALIGN_LEAN_FORWARD", "0")

    extra = (dict(dataset=str(pair_file)) if algo == "dpo"
             else dict(k=2, rewards=("builtin:length",)))
    cfg = TrainConfig(model=tiny_model_dir("llama"), algo=algo, beta=0.1, lr=1e-3, steps=2,
                      prompts_per_step=4, micro_batch_size=2, max_new_tokens=6,
                      output_dir=str(tmp_path / "one"), **extra)
    one = train(cfg)
    save_config(cfg, tmp_path / "cfg.yaml")
    cmd = [*torchrun(2), "-m", "scorealign.cli", "train", str(tmp_path / "cfg.yaml"),
           "--output_dir", str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(str(one / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    # DPO's reference log-probs come from one inference pass over each process's rows: 8 rows
    # padded together in one process, 4 in each of two. On the transformers forward that moves
    # them by round-off (~5e-7; the lean forward gives the same bits), which Adam's first steps
    # (update ~ lr * g / (|g| + eps)) can magnify to ~3e-5 on near-zero gradient entries at
    # lr 1e-3. The losses below are compared before the optimizer, at 1e-5.
    tolerance = 1e-4 if algo == "dpo" else 1e-5
    assert max((a[n] - b[n]).abs().max().item() for n in a) < tolerance
    assert max((a[n] - load_file(str(Path(tiny_model_dir("llama")) / "model.safetensors"))[n]
                ).abs().max().item() for n in a) > 1e-4                # and it trained
    keys = ("loss/policy",)
    assert ([r[k] for r in read_jsonl(one / "metrics.jsonl") for k in keys] == pytest.approx(
        [r[k] for r in read_jsonl(tmp_path / "two" / "metrics.jsonl") for k in keys], abs=1e-5))
