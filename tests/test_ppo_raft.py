"""PPO and RAFT on the shared loop: hand-computed math, tiny-model equivalences, toy-task runs."""

from __future__ import annotations

import math
import os
import subprocess

import pytest
import torch
from multiproc import torchrun
from safetensors.torch import load_file
from toyruns import metrics, run_cfg

from scorealign.algorithms import ALGORITHMS, losses
from scorealign.core.config import save_config
from scorealign.core.tiny import build_tiny_model
from scorealign.engine.rollout import completion_logprobs, generate_rollout
from scorealign.errors import ConfigError
from scorealign.train import TrainConfig, train


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# --------------------------------------------------------------------------- GAE (arXiv 1506.02438)

R3, V3 = [[1.0, 2.0, 3.0]], [[0.5, 1.0, 1.5]]


def test_gae_lambda_zero_is_one_step_td():
    adv, ret = losses.gae_advantages(t(R3), t(V3), t([[1, 1, 1]]), gamma=1.0, lam=0.0)
    # delta_t = r_t + V_{t+1} - V_t, V after the last token = 0
    assert adv.tolist() == [[1 + 1.0 - 0.5, 2 + 1.5 - 1.0, 3 + 0 - 1.5]]
    assert ret.tolist() == [[2.0, 3.5, 3.0]]


def test_gae_lambda_one_is_return_minus_value():
    adv, ret = losses.gae_advantages(t(R3), t(V3), t([[1, 1, 1]]), gamma=1.0, lam=1.0)
    assert ret.tolist() == [[6.0, 5.0, 3.0]]                    # reward-to-go
    assert adv.tolist() == [[5.5, 4.0, 1.5]]
    adv, ret = losses.gae_advantages(t(R3), t(V3), t([[1, 1, 1]]), gamma=0.5, lam=1.0)
    assert ret.tolist() == [[2.75, 3.5, 3.0]]                   # G_t = r_t + 0.5 G_{t+1}


def test_gae_general_gamma_lambda():
    adv, _ = losses.gae_advantages(t(R3), t(V3), t([[1, 1, 1]]), gamma=0.5, lam=0.5)
    # deltas 1 + .5 - .5 = 1, 2 + .75 - 1 = 1.75, 3 - 1.5 = 1.5; gamma * lam = .25
    assert adv.tolist() == [[1.0 + 0.25 * (1.75 + 0.25 * 1.5), 1.75 + 0.25 * 1.5, 1.5]]


def test_gae_masked_padded_batch():
    rewards = t([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])             # row 2: one padding token
    values = t([[0.5, 1.0, 1.5], [1.0, 2.0, 77.0]])               # junk on padding
    mask = t([[1, 1, 1], [1, 1, 0]])
    for lam in (0.0, 1.0):
        adv, ret = losses.gae_advantages(rewards, values, mask, 1.0, lam)
        alone, alone_ret = losses.gae_advantages(rewards[1:, :2], values[1:, :2], mask[1:, :2],
                                                 1.0, lam)
        assert adv[1, 2] == 0 and ret[1, 2] == 0                  # zero on padding
        assert torch.equal(adv[1, :2], alone[0]) and torch.equal(ret[1, :2], alone_ret[0])
    adv, ret = losses.gae_advantages(rewards, values, mask, 1.0, 1.0)
    assert adv[1].tolist() == [9.0 - 1.0, 5.0 - 2.0, 0.0]         # V after the last real token = 0
    adv, _ = losses.gae_advantages(rewards, values, mask, 1.0, 0.0)
    assert adv[1].tolist() == [4.0 + 2.0 - 1.0, 5.0 - 2.0, 0.0]


def test_token_level_rewards_put_score_on_last_token():
    lp, ref = t([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]]), t([[-2.0, -2.0, -1.0], [0.0, -3.0, 0.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    r = losses.token_level_rewards(t([10.0, -5.0]), lp, ref, mask, beta=0.5)
    assert r.tolist() == [[-0.5, 0.0, 1.0 + 10.0], [0.5, -1.0 - 5.0, 0.0]]
    # summed over tokens it is the sequence reward r - beta * KL
    kl = losses.sequence_kl(lp, ref, mask)
    assert torch.allclose(r.sum(1), losses.kl_penalized_rewards(t([10.0, -5.0]), kl, 0.5))


# --------------------------------------------------------------------------- PPO clipping


@pytest.mark.parametrize("ratio, adv, loss, clipped, grad", [
    (1.5, 2.0, -1.2 * 2.0, 1.0, 0.0),       # A > 0, above 1 + eps: clipped, no gradient
    (0.5, 2.0, -0.5 * 2.0, 0.0, -0.5 * 2),  # A > 0, below 1 - eps: unclipped (pessimistic)
    (0.5, -2.0, 0.8 * 2.0, 1.0, 0.0),       # A < 0, below 1 - eps: clipped
    (1.5, -2.0, 1.5 * 2.0, 0.0, 1.5 * 2),   # A < 0, above 1 + eps: unclipped
    (1.1, 2.0, -1.1 * 2.0, 0.0, -1.1 * 2),  # inside the range
    (1.0, 2.0, -2.0, 0.0, -2.0),            # ratio 1: the REINFORCE gradient
])
def test_clipped_surrogate_hand_values(ratio, adv, loss, clipped, grad):
    lp = t([math.log(ratio)]).requires_grad_()
    out, active = losses.clipped_surrogate_loss(lp, t([0.0]), t([adv]), clip_eps=0.2)
    out.sum().backward()
    assert out.item() == pytest.approx(loss) and active.item() == clipped
    assert lp.grad.item() == pytest.approx(grad)                  # d loss / d log pi = -rho * A


@pytest.mark.parametrize("adv", [2.0, -2.0])
def test_clipped_surrogate_boundaries(adv):
    """Just inside 1 +- eps the gradient flows; just outside (on the pessimistic side) it stops."""
    for bound, sign in ((1.2, 1.0), (0.8, -1.0)):
        inside = t([math.log(bound - sign * 1e-6), math.log(bound + sign * 1e-6)]).requires_grad_()
        out, active = losses.clipped_surrogate_loss(inside, t([0.0, 0.0]), t([adv, adv]), 0.2)
        out.sum().backward()
        outside_clips = (adv > 0) == (sign > 0)         # A > 0 clips above, A < 0 clips below
        assert active.tolist() == [0.0, 1.0 if outside_clips else 0.0]
        assert inside.grad[0] != 0 and (inside.grad[1] == 0) == outside_clips
        rho = bound if outside_clips else bound + sign * 1e-6
        assert out[1].item() == pytest.approx(-adv * rho)


def test_clipped_surrogate_without_clip():
    out, active = losses.clipped_surrogate_loss(t([math.log(3.0)]), t([0.0]), t([2.0]), None)
    assert out.item() == pytest.approx(-6.0) and active.item() == 0.0


def test_clipped_value_loss_hand_values():
    def run(v, old, ret, eps):
        v = t([v]).requires_grad_()
        out = losses.clipped_value_loss(v, t([old]), t([ret]), eps)
        out.sum().backward()
        return out.item(), v.grad.item()

    # V moved past V_old + eps towards G: the clipped error (1.5 - 4)^2 is the larger, no gradient
    assert run(3.0, 1.0, 4.0, 0.5) == (pytest.approx(0.5 * 6.25), 0.0)
    assert run(2.0, 1.0, 0.0, 0.5) == (pytest.approx(2.0), pytest.approx(2.0))  # unclipped larger
    assert run(1.2, 1.0, 2.0, 0.5) == (pytest.approx(0.5 * 0.64), pytest.approx(-0.8))  # inside
    assert run(1.5, 1.0, 4.0, 0.5)[1] == pytest.approx(-2.5)     # on the boundary: grad flows
    assert run(3.0, 1.0, 4.0, None) == (pytest.approx(0.5), pytest.approx(-1.0))


def test_approx_kl_is_zero_at_ratio_one_and_positive_elsewhere():
    assert losses.approx_kl(t([0.3, -1.0]), t([0.3, -1.0])).tolist() == [0.0, 0.0]
    assert (losses.approx_kl(t([0.5, -0.5]), t([0.0, 0.0])) > 0).all()


# --------------------------------------------------------------------------- RAFT selection


def test_raft_selection_argmax_with_ties_lowest_index():
    rewards = t([1.0, 3.0, 3.0, 0.0, 2.0, 2.0, 2.0, 2.0, -1.0, 5.0, 0.0, 5.0])
    keep = losses.raft_selection(rewards, k=4, top_m=1).view(3, 4)
    assert keep.nonzero().tolist() == [[0, 1], [1, 0], [2, 1]]
    keep = losses.raft_selection(rewards, k=4, top_m=2).view(3, 4)
    assert keep.nonzero().tolist() == [[0, 1], [0, 2], [1, 0], [1, 1], [2, 1], [2, 3]]


def test_aggregate_token_mean_over_micro_batches():
    per_token = t([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0], [4.0, 5.0, 6.0]])     # zero on padding
    n_tokens = 6
    summed = sum(losses.aggregate(per_token[rows], n_tokens) for rows in ([0], [1, 2]))
    assert summed.item() == pytest.approx(21.0 / 6)


# --------------------------------------------------------------------------- tiny-model checks


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def rollout(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    policy = AutoModelForCausalLM.from_pretrained(tiny)
    ref = AutoModelForCausalLM.from_pretrained(tiny).eval()
    prompts = ["yes cat", "dog", "one two three"]
    uniforms = torch.rand(len(prompts) * 4, 8, generator=torch.Generator().manual_seed(0))
    batch = generate_rollout(policy, ref, tok, prompts, prompts, 4, uniforms, 32, 1.0, 1.0,
                             [False] * 3)
    return policy, batch


def _grads(policy, loss):
    policy.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])


def _token_lp(policy, b):
    return completion_logprobs(policy, b.prompt_ids, b.prompt_mask, b.completion_ids,
                               b.completion_mask)


def test_ppo_with_lambda_one_zero_value_no_clip_equals_vanilla_pg(rollout):
    """arXiv 2402.14740: vanilla PG is PPO with lambda = 1 and no clipping. With gamma = 1, V = 0
    and beta = 0 every token's advantage is the sequence reward, so the per-token surrogate summed
    over tokens has exactly the vanilla PG gradient; the loop only averages it over tokens instead
    of sequences (the declared unit)."""
    policy, batch = rollout
    cfg = TrainConfig(algo="ppo", beta=0.0, gamma=1.0, lam=1.0, clip_eps=None)
    scores = torch.linspace(-1.0, 2.0, batch.size)
    ppo, pg = ALGORITHMS["ppo"], ALGORITHMS["pg"]

    b = batch.select(torch.arange(batch.size))
    b.scores, b.values = scores, torch.zeros_like(b.logprobs)
    b.advantages, b.returns = ppo.token_advantages(b, cfg)
    token_lp = _token_lp(policy, b)
    per_token, stats = ppo.loss(token_lp, token_lp.detach(), torch.zeros_like(token_lp), b, cfg)
    assert ppo.unit == "token" and per_token.shape == token_lp.shape
    assert stats["clip_frac"].sum() == 0 and stats["approx_kl"].abs().sum() == 0
    g_ppo = _grads(policy, losses.aggregate(per_token, batch.size))

    kl = losses.sequence_kl(b.logprobs, b.ref_logprobs, b.completion_mask)
    rewards = losses.kl_penalized_rewards(scores, kl, cfg.beta)
    b.advantages, _ = pg.advantages(rewards, b.k, {}, cfg)
    token_lp = _token_lp(policy, b)
    per_seq, _ = pg.loss(token_lp, token_lp.detach(), None, b, cfg)
    g_pg = _grads(policy, losses.aggregate(per_seq, batch.size))
    assert g_pg.abs().max() > 0
    assert torch.allclose(g_ppo, g_pg, rtol=1e-4, atol=1e-7)


def test_raft_trains_on_argmax_and_its_loss_is_the_mean_token_nll(rollout):
    policy, batch = rollout
    cfg = TrainConfig(algo="raft", k=4, beta=0.0, raft_top_m=1)
    raft = ALGORITHMS["raft"]
    rewards = torch.tensor([0.0, 2.0, 1.0, 2.0, 5.0, 0.0, 0.0, 0.0, -1.0, -1.0, -1.0, -0.5])
    keep = raft.select(rewards, cfg.k, cfg)
    assert keep.nonzero().squeeze(1).tolist() == [1, 4, 11]       # argmax, ties -> lowest index
    b = batch.select(torch.arange(batch.size))
    b.advantages, _ = raft.advantages(rewards, cfg.k, {}, cfg)
    kept = b.select(keep.nonzero().squeeze(1))
    token_lp = _token_lp(policy, kept)
    per_token, _ = raft.loss(token_lp, token_lp.detach(), None, kept, cfg)
    loss = losses.aggregate(per_token, kept.completion_mask.sum().item())
    mask = batch.completion_mask[keep].bool()
    expected = -batch.logprobs[keep][mask].mean()                 # sampling-time NLL, mean/token
    assert raft.unit == "token"
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


# --------------------------------------------------------------------------- training runs


def mean_reward(rows) -> float:
    return sum(r["reward/mean"] for r in rows) / len(rows)


@pytest.mark.slow
def test_ppo_raises_toy_reward(tiny, tmp_path):
    cfg = run_cfg(tiny, tmp_path, algo="ppo", steps=20, num_epochs=2, num_minibatches=2)
    rows = metrics(train(cfg))
    first, last = mean_reward(rows[:5]), mean_reward(rows[-5:])
    assert first < 0.5 and last > first + 2.0, (first, last)
    for name in ("clip_frac", "approx_kl", "value_loss", "explained_variance", "reward/mean",
                 "kl", "loss/policy", "grad_norm"):
        assert all(math.isfinite(r[name]) for r in rows), name
    assert any(r["clip_frac"] > 0 for r in rows)                  # reused batch: ratio != 1
    assert (tmp_path / "checkpoints" / "value-step-000020" / "value_model.safetensors").is_file()


@pytest.mark.slow
def test_raft_raises_toy_reward(tiny, tmp_path):
    cfg = run_cfg(tiny, tmp_path, algo="raft", k=8, steps=25, lr=1e-2, num_epochs=2)
    rows = metrics(train(cfg))
    first, last = mean_reward(rows[:5]), mean_reward(rows[-5:])
    assert first < 0.5 and last > first + 2.0, (first, last)
    assert all(r["clip_frac"] == 0 for r in rows)


@pytest.mark.parametrize("algo", ["rloo", "ppo"])
def test_one_pass_ratio_is_one_and_token_loss_is_accumulation_invariant(tiny, tmp_path, algo):
    """One epoch, one minibatch: clip_frac = approx_kl = 0; micro-batches of 4 vs 16 give the
    same update (tokens counted over the whole minibatch) for policy and value model alike."""
    runs = {m: train(run_cfg(tiny, tmp_path / str(m), algo=algo, steps=2, micro_batch_size=m))
            for m in (4, 16)}
    for m, run_dir in runs.items():
        assert all(r["clip_frac"] == 0 and r["approx_kl"] == 0 for r in metrics(run_dir))
    w = {m: load_file(str(d / "final" / "model.safetensors")) for m, d in runs.items()}
    for name in w[4]:
        assert torch.allclose(w[4][name], w[16][name], atol=1e-5), name
    if algo == "ppo":
        v = {m: load_file(str(d / "checkpoints" / "value-step-000002" / "value_model.safetensors"))
             for m, d in runs.items()}
        assert all(torch.allclose(v[4][n], v[16][n], atol=1e-5) for n in v[4])


def test_ppo_resume_is_bit_identical(tiny, tmp_path):
    kw = dict(algo="ppo", num_epochs=2, num_minibatches=2, max_new_tokens=8)
    straight = train(run_cfg(tiny, tmp_path / "a", steps=4, **kw))
    train(run_cfg(tiny, tmp_path / "b", steps=2, **kw))
    resumed = train(run_cfg(tiny, tmp_path / "b", steps=4, **kw), resume=True)
    drop = ("time/step_s", "throughput/completions_per_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(metrics(straight)) == strip(metrics(resumed))
    for rel in ("final/model.safetensors",
                "checkpoints/value-step-000004/value_model.safetensors"):
        a, b = load_file(str(straight / rel)), load_file(str(resumed / rel))
        assert all(torch.equal(a[n], b[n]) for n in a), rel


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "raft"])
def test_two_processes_match_one_for_token_level_losses(tiny, tmp_path, algo):
    """torchrun --nproc_per_node 2 (gloo): the token normaliser is summed over processes, so the
    update (policy, and PPO's value model) equals one process's, though ranks hold different
    token counts; RAFT keeps its best rows per rank."""
    kw = dict(algo=algo, steps=2, prompts_per_step=4, micro_batch_size=4, max_new_tokens=8,
              lr=1e-3, num_epochs=2)
    if algo == "raft":
        # Most rewards tie (0 'yes'); with beta > 0 the ties would be broken by R = r - beta * KL
        # with a round-off-sized KL (pi = pi_ref at step 1; 16 rows share one reference pass in
        # one process, 8 in each of two), so which row RAFT keeps would depend on round-off.
        kw["beta"] = 0.0
    cfg = run_cfg(tiny, tmp_path / "one", **kw)
    one = train(cfg)
    cfg_file = tmp_path / "cfg.yaml"
    save_config(cfg, cfg_file)                                    # the same config, as YAML
    cmd = [*torchrun(2), "-m", "scorealign.cli", "train", str(cfg_file), "--output_dir",
           str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = tmp_path / "two"
    files = ["final/model.safetensors"]
    files += ["checkpoints/value-step-000002/value_model.safetensors"] if algo == "ppo" else []
    for rel in files:
        a, b = load_file(str(one / rel)), load_file(str(two / rel))
        assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-5, rel
    keys = ("reward/mean", "kl", "loss/policy", "clip_frac")
    assert ([r[k] for r in metrics(one) for k in keys]
            == pytest.approx([r[k] for r in metrics(two) for k in keys], abs=1e-5))


def test_config_rejects_bad_ppo_raft_settings():
    with pytest.raises(ConfigError, match="raft_top_m"):
        TrainConfig(algo="raft", k=4, raft_top_m=4)
    with pytest.raises(ConfigError, match="whiten_rewards"):
        TrainConfig(algo="ppo", whiten_rewards=True)
    with pytest.raises(ConfigError, match="clip_eps"):
        TrainConfig(clip_eps=0.0)
    with pytest.raises(ConfigError, match="lam"):
        TrainConfig(lam=1.5)
    with pytest.raises(ConfigError, match="ppo"):
        TrainConfig(algo="trpo")
    assert TrainConfig(algo="ppo").value_clip_eps is None and TrainConfig().num_epochs == 1
