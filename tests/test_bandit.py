"""Toy bandit of arXiv 2406.19185 §5: exact pieces by hand, then the default run end to end."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from scorealign.algorithms.losses import (
    copg_loss,
    ipo_loss,
    kl_penalized_rewards,
    policy_gradient_loss,
)
from scorealign.recipes import bandit as B

# ---- exact quantities ----


def test_optimal_policy_and_regret_by_hand():
    z = math.exp(5) + math.exp(4) + math.exp(2)
    assert B.optimal_policy().tolist() == pytest.approx([math.exp(5) / z, math.exp(4) / z,
                                                         math.exp(2) / z], abs=1e-12)
    j_star = 0.5 * math.log(z / 3)                      # beta log E_ref[exp(r / beta)]
    assert float(B.regret(torch.zeros(3, dtype=B.DTYPE))) == pytest.approx(j_star - 11 / 6)
    assert float(B.regret(B.optimal_policy().log())) == pytest.approx(0, abs=1e-14)
    logits = torch.randn(100, 3, dtype=B.DTYPE, generator=torch.Generator().manual_seed(0))
    assert (B.regret(logits) > 0).all()


def test_ipo_fixed_point_matches_ipo_paper_closed_form_when_mu1_equals_mu2():
    """Same law mu for y and y': pi(a) ∝ pi_ref(a) exp(E_{y'~mu}[p(a > y')] / tau), the IPO
    paper's closed form (arXiv 2310.12036)."""
    mu = torch.tensor([0.2, 0.3, 0.5], dtype=B.DTYPE)
    pref = torch.sigmoid(B.REWARDS[:, None] - B.REWARDS[None, :])              # p(a > b)
    win = 2 * mu[:, None] * mu[None, :] * pref
    expected = torch.softmax((pref @ mu) / B.BETA, -1)
    assert torch.allclose(B.ipo_fixed_point(win), expected, atol=1e-12)


def test_ipo_fixed_point_is_stationary_for_the_library_loss():
    """Gradient of sum_{a,b} W[a,b] ipo_loss(h(a) - h(b)) vanishes at the derived fixed point."""
    win = B.population_win_weights()
    theta = B.ipo_fixed_point(win).log().requires_grad_()
    h = torch.log_softmax(theta, -1) - B.LOG_REF
    loss = (win * ipo_loss(h[:, None] - h[None, :], tau=B.BETA)).sum()
    (grad,) = torch.autograd.grad(loss, theta)
    assert grad.abs().max() < 1e-12
    assert (B.ipo_fixed_point(win) - B.optimal_policy()).abs().max() > 0.1   # biased


@pytest.mark.parametrize("value_baseline", [False, True])
def test_pg_fixed_point(value_baseline):
    weights = (B.MU1 + B.MU2) / 2
    fixed = B.pg_fixed_point(weights, value_baseline)
    assert B.pg_mean_field(fixed.log(), weights, value_baseline).abs().max() < 1e-12
    assert (fixed - B.optimal_policy()).abs().max() > 0.05                   # off-policy bias
    on_policy = B.pg_fixed_point(B.optimal_policy(), value_baseline)          # data ~ pi*
    assert torch.allclose(on_policy, B.optimal_policy(), atol=1e-12)


# ---- the 18-type batch summary equals the per-pair batch mean of the library's losses ----


def _per_pair_means(logp, y, y2, first):
    """Straightforward per-pair losses (no type trick), mean over one seed's batch. -> [4]."""
    h, h2 = logp[y] - B.LOG_REF, logp[y2] - B.LOG_REF
    r, r2 = B.REWARDS[y], B.REWARDS[y2]
    copg = copg_loss(torch.stack([h, h2], 1), torch.stack([r, r2], 1), B.BETA).mean()
    ipo = ipo_loss(torch.where(first, h - h2, h2 - h), B.BETA).mean()
    lp, rr = torch.cat([logp[y], logp[y2]]), torch.cat([r, r2])
    rew = kl_penalized_rewards(rr, lp - B.LOG_REF, B.BETA)
    pg = policy_gradient_loss(lp, rew).mean()
    pgv = policy_gradient_loss(lp, rew - (logp.exp() * B.REWARDS).sum().detach()).mean()
    return torch.stack([copg, ipo, pg, pgv])


def test_type_counts_reproduce_per_pair_losses_and_gradients():
    data = B.sample_pairs(2, n_pairs=700)                  # batches of 512 and 188
    counts = B.batch_type_counts(data, [torch.Generator().manual_seed(9) for _ in range(2)])
    order = [torch.randperm(700, generator=torch.Generator().manual_seed(9)) for _ in range(2)]
    assert counts.shape == (2, 2, 18) and counts.sum(-1).tolist() == [[512, 188], [512, 188]]
    logits = torch.randn(4, 2, 3, dtype=B.DTYPE, generator=torch.Generator().manual_seed(1))
    logits.requires_grad_()
    for b, sl in enumerate([slice(0, 512), slice(512, 700)]):
        logp = torch.log_softmax(logits, -1)
        h, h2 = logp[..., B.TYPE_Y] - B.LOG_REF, logp[..., B.TYPE_Y2] - B.LOG_REF
        per_type = torch.stack([fn(logp[m], h[m], h2[m])
                                for m, fn in enumerate(B.METHODS.values())])
        fast = (per_type * counts[:, b] / counts[:, b].sum(-1, keepdim=True)).sum(-1)   # [4, S]
        pairs = [[t[s][order[s][sl]] for t in (data.y, data.y2, data.first_preferred)]
                 for s in range(2)]
        slow = torch.stack([torch.stack([_per_pair_means(logp[m, s], *pairs[s])[m]
                                         for s in range(2)]) for m in range(4)])   # [4, S]
        assert torch.allclose(fast, slow, atol=1e-12)
        g_fast = torch.autograd.grad(fast.sum(), logits, retain_graph=True)[0]
        g_slow = torch.autograd.grad(slow.sum(), logits)[0]
        assert torch.allclose(g_fast, g_slow, atol=1e-12)


def test_seed_runs_do_not_depend_on_the_other_seeds():
    regrets_3, _ = B.train(B.sample_pairs(3, n_pairs=1000), epochs=2)
    regrets_1, _ = B.train(B.sample_pairs(1, n_pairs=1000), epochs=2)
    assert torch.equal(regrets_3[:, :, :1], regrets_1)


def test_main_rejects_bad_arguments(capsys):
    """One flag style (--key value) as every command; bad values and the old --out are one line."""
    from scorealign.cli import main as cli

    for argv, message in [(["--seeds", "0"], "need epochs >= 1, seeds >= 1"),
                          (["--out", "x"], "--out was renamed: use --output_dir DIR"),
                          (["--epoch", "3"], "unknown key 'epoch' (did you mean 'epochs'?)"),
                          (["--seeds", "two"], "seeds: expected int")]:
        assert cli(["bandit", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
    assert cli(["bandit", "--help"]) == 0
    assert "--output_dir" in capsys.readouterr().out


# ---- the default run: 100 epochs reported, continued to 500, 5 seeds ----


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bandit")
    assert B.main(["--output_dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "bandit.csv") as f:
        rows = list(csv.DictReader(f))
    return out, summary, rows


def _policies(summary, method, key="final_policy"):
    return np.array(summary["methods"][method][key])                  # [S, 3]


@pytest.mark.slow
def test_outputs(default_run):
    out, summary, rows = default_run
    assert summary["horizon"] == 100 and summary["epochs_run"] == 500
    assert len(rows) == 501 * 4 * 5 and set(rows[0]) == {"epoch", "method", "seed", "regret"}
    assert 0 < (out / "bandit.png").stat().st_size < 150_000
    assert not list(out.glob(".*tmp"))                                 # atomic writes cleaned


@pytest.mark.slow
def test_copg_reaches_the_optimum(default_run):
    _, summary, _ = default_run
    pi_star = np.array(summary["pi_star"])
    assert np.abs(_policies(summary, "copg") - pi_star).max() < 1e-3
    assert max(summary["methods"]["copg"]["regret_final"]) < 1e-8


@pytest.mark.slow
def test_ipo_reaches_its_own_biased_fixed_point(default_run):
    _, summary, _ = default_run
    final = _policies(summary, "ipo")
    assert np.abs(final - _policies(summary, "ipo", "fixed_point_on_data")).max() < 1e-2
    population = np.array(summary["methods"]["ipo"]["fixed_point"])
    assert np.abs(final.mean(0) - population).max() < 1e-2
    assert (np.abs(final - np.array(summary["pi_star"])).max(1) > 1e-2).all()


@pytest.mark.slow
def test_pg_without_baseline_gets_worse(default_run):
    _, summary, _ = default_run
    m = summary["methods"]["pg"]
    assert (np.array(m["regret_final"]) > np.array(m["regret_initial"]) + 0.1).all()
    assert np.abs(_policies(summary, "pg") - _policies(summary, "pg", "fixed_point_on_data")
                  ).max() < 1e-2


@pytest.mark.slow
def test_pg_with_value_baseline_plateaus_above_zero(default_run):
    _, summary, rows = default_run
    last = np.array([float(r["regret"]) for r in rows
                     if r["method"] == "pg_value" and int(r["epoch"]) >= 400]).reshape(101, -1)
    assert (last > 1e-2).all()                                         # [epochs 400-500, seeds]
    assert (last.max(0) - last.min(0) < 1e-3).all()                    # nearly constant
    assert np.abs(_policies(summary, "pg_value")
                  - _policies(summary, "pg_value", "fixed_point_on_data")).max() < 1e-2
