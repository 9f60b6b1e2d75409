"""The toy bandit of arXiv 2406.19185 §5: CoPG, IPO and off-policy PG on three arms.

Setting (paper §5): rewards r = (2.5, 2, 1), pi_ref uniform, beta = 0.5, ONE fixed offline set of
10^4 unranked pairs (y ~ mu1, y' ~ mu2) drawn per seed, mu1 = (0.1, 0.2, 0.7),
mu2 = (0.05, 0.05, 0.9), Adam lr 1e-3, mini-batches of 512, 100 epochs. The paper does not state
the policy; here it is a softmax over 3 logits initialised at 0. Reported: the regret
J(pi*) - J(pi), J(pi) = E_pi[r] - beta * KL(pi || pi_ref), computed exactly (3 arms).

Each method is a loss of ``scorealign.losses`` fed the log-probabilities of arms
(h(y) = log pi(y) - log pi_ref(y)):
  copg      copg_loss([h(y), h(y')], [r(y), r(y')], beta)                       paper eq. (7)
  ipo       ipo_loss(h(y_w) - h(y_l), tau=beta); the preferred arm of each pair is DRAWN ONCE
            with the data, P(y > y') = sigmoid(r(y) - r(y')) (Bradley-Terry)
  pg        policy_gradient_loss(log pi(y), R_beta(y)) on both samples of each pair, no baseline
  pg_value  the same with advantages R_beta(y) - E_pi[r] (exact value of r, current policy)
Both PG variants are "naive off-policy" (no importance sampling) and put the KL penalty into the
reward, R_beta(y) = r(y) - beta * h(y), detached (``kl_penalized_rewards``, arXiv 2402.14740):
on-policy both would follow grad J. Deviation from a literal "A = r(y)": without the KL term no PG
variant targets J at all, and with A = r(y) - E_pi[r] Adam drives the policy to the simplex's
edge instead of a plateau (see docs/bandit.md).

All methods and seeds train together: logits [methods, seeds, 3], one Adam. Adam is elementwise
and each (method, seed) contributes its own mean loss, so this equals independent runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from scorealign.losses import (copg_loss, ipo_loss, kl_penalized_rewards, policy_gradient_loss,
                               preference_margin)

Tensor = torch.Tensor
DTYPE = torch.float64
REWARDS = torch.tensor([2.5, 2.0, 1.0], dtype=DTYPE)   # r(arm)
MU1 = torch.tensor([0.1, 0.2, 0.7], dtype=DTYPE)       # distribution of y
MU2 = torch.tensor([0.05, 0.05, 0.9], dtype=DTYPE)     # distribution of y'
BETA = 0.5
LOG_REF = math.log(1.0 / 3.0)                          # log pi_ref(arm), uniform
N_PAIRS = 10_000
BATCH = 512
LR = 1e-3


@dataclass(frozen=True)
class BanditConfig:
    epochs: int = 100          # the paper's horizon: regrets are reported at this epoch
    long_epochs: int = 2000    # total length of the run, to show the asymptotes (<= epochs: none)
    seeds: int = 5             # seeds 0..seeds-1; each draws its own dataset and shuffles
    out: str = "runs/bandit"   # output folder: bandit.csv, bandit.png, summary.json


# --------------------------------------------------------------------------------------------
# Exact quantities (3 arms: everything in closed form or by a tiny exact solver)
# --------------------------------------------------------------------------------------------


def kl_regularised_value(logits: Tensor) -> Tensor:
    """J(pi) = E_pi[r] - beta * KL(pi || pi_ref), exactly. logits [..., 3] -> [...]."""
    logp = torch.log_softmax(logits, -1)
    return (logp.exp() * (REWARDS - BETA * (logp - LOG_REF))).sum(-1)


def optimal_policy() -> Tensor:
    """pi* = pi_ref * exp(r / beta) / Z, the unique maximiser of J; J(pi*) = beta * log Z."""
    return torch.softmax(REWARDS / BETA, -1)


def regret(logits: Tensor) -> Tensor:
    """J(pi*) - J(pi) for logits [..., 3] -> [...]."""
    return kl_regularised_value(torch.log(optimal_policy())) - kl_regularised_value(logits)


def ipo_fixed_point(win_weights: Tensor) -> Tensor:
    """Minimiser of IPO's loss over a pair distribution (arXiv 2310.12036 eq. 17, tau = beta).

    win_weights[a, b]: probability mass of pairs whose PREFERRED arm is a and other arm b.
    With pi = softmax(theta), h(a) - h(b) = theta_a - theta_b, so the population loss
    sum_{a != b} W[a, b] * (theta_a - theta_b - 1/(2 tau))^2 (pairs a == b are constant) is a
    weighted least-squares problem in the logits: solved exactly with the gauge sum(theta) = 0.
    Returns the policy [3].
    """
    rows, rhs = [], []
    for a in range(3):
        for b in range(3):
            if a != b and win_weights[a, b] > 0:
                w = math.sqrt(float(win_weights[a, b]))
                rows.append([w * ((i == a) - (i == b)) for i in range(3)])
                rhs.append(w / (2.0 * BETA))
    rows.append([1.0, 1.0, 1.0])  # gauge: orthogonal to every other row, so it costs nothing
    rhs.append(0.0)
    theta = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return torch.softmax(torch.tensor(theta, dtype=DTYPE), -1)


def population_win_weights() -> Tensor:
    """W[a, b] = (mu1(a) mu2(b) + mu2(a) mu1(b)) * sigmoid(r(a) - r(b)): the exact pair law."""
    pair = MU1[:, None] * MU2[None, :]
    return (pair + pair.T) * torch.sigmoid(REWARDS[:, None] - REWARDS[None, :])


def pg_mean_field(theta: Tensor, arm_weights: Tensor, value_baseline: bool) -> Tensor:
    """Expected PG update over the data: sum_a w(a) * A(a) * (e_a - pi), A = R_beta - b."""
    logp = torch.log_softmax(theta, -1)
    baseline = (logp.exp() * REWARDS).sum() if value_baseline else 0.0
    weighted = arm_weights * (REWARDS - BETA * (logp - LOG_REF) - baseline)
    return weighted - logp.exp() * weighted.sum()


def pg_fixed_point(arm_weights: Tensor, value_baseline: bool) -> Tensor:
    """Zero of ``pg_mean_field`` (Newton, gauge sum(theta) = 0): where naive off-policy PG stops.

    arm_weights: frequency of each arm among all samples y and y' (population: (mu1 + mu2) / 2).
    Stationarity reads w(a) (R_beta(a) - b) = pi(a) * sum_c w(c) (R_beta(c) - b); at pi* the
    regularised reward R_beta is constant, so pi* solves it only if that constant equals b
    (b = J(pi*)); b = 0 or b = E_pi[r] leaves a bias that moves the policy toward the data.
    """
    theta = torch.zeros(3, dtype=DTYPE)
    gauge = torch.ones(1, 3, dtype=DTYPE)
    for _ in range(100):
        field = pg_mean_field(theta, arm_weights, value_baseline)
        if field.abs().max() < 1e-13:
            return torch.softmax(theta, -1)
        jac = torch.autograd.functional.jacobian(
            lambda t: pg_mean_field(t, arm_weights, value_baseline), theta)
        step = torch.linalg.lstsq(torch.cat([jac, gauge]), torch.cat([field, theta.sum()[None]]))
        theta = theta - step.solution.clamp(-1.0, 1.0)  # damped: the field is not quadratic
    raise RuntimeError("pg_fixed_point: Newton did not converge")


# --------------------------------------------------------------------------------------------
# Data and the four methods' losses
# --------------------------------------------------------------------------------------------


# A pair's TYPE is (y, y', label): 3 * 3 * 2 = 18 types, t = 6 y + 2 y' + first_preferred.
# A mini-batch is summarised by its count of each type, and every method's batch-mean loss is
# sum_t count_t * loss(type t) / batch size: the library's per-pair losses, evaluated once per
# type instead of once per pair (same value, same gradient; 28x smaller tensors).
TYPE_Y = torch.arange(18) // 6                       # [T] arm of y
TYPE_Y2 = torch.arange(18) // 2 % 3                  # [T] arm of y'
TYPE_FIRST = torch.arange(18) % 2 == 1               # [T] y is the preferred one


@dataclass
class PairData:
    y: Tensor                  # [S, N] arm of the first sample, y ~ mu1
    y2: Tensor                 # [S, N] arm of the second sample, y' ~ mu2
    first_preferred: Tensor    # [S, N] bool, Bradley-Terry label drawn once
    generators: list           # one torch.Generator per seed, reused for the shuffles

    @property
    def pair_type(self) -> Tensor:
        """[S, N] type index of each pair."""
        return self.y * 6 + self.y2 * 2 + self.first_preferred.long()


def sample_pairs(seeds: int, n_pairs: int = N_PAIRS) -> PairData:
    """Draw each seed's fixed dataset with its own generator (seed s gives the same data alone)."""
    ys, y2s, prefs, gens = [], [], [], []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        y = torch.multinomial(MU1, n_pairs, replacement=True, generator=g)
        y2 = torch.multinomial(MU2, n_pairs, replacement=True, generator=g)
        p_first = torch.sigmoid(REWARDS[y] - REWARDS[y2])
        prefs.append(torch.rand(n_pairs, generator=g, dtype=DTYPE) < p_first)
        ys.append(y)
        y2s.append(y2)
        gens.append(g)
    return PairData(torch.stack(ys), torch.stack(y2s), torch.stack(prefs), gens)


def empirical_weights(data: PairData, seed: int) -> tuple[Tensor, Tensor]:
    """(win_weights [3, 3], arm_weights [3]) of one seed's dataset, as frequencies."""
    y, y2, first = data.y[seed], data.y2[seed], data.first_preferred[seed]
    winner, loser = torch.where(first, y, y2), torch.where(first, y2, y)
    wins = torch.bincount(winner * 3 + loser, minlength=9).to(DTYPE).view(3, 3) / y.numel()
    arms = torch.bincount(torch.cat([y, y2]), minlength=3).to(DTYPE) / (2 * y.numel())
    return wins, arms


def epoch_batches(data: PairData) -> Tensor:
    """Shuffle each seed's pairs; return type counts per mini-batch, [S, n_batches, T]."""
    n_seeds, n = data.y.shape
    order = torch.stack([torch.randperm(n, generator=g) for g in data.generators])   # [S, N]
    n_batches = -(-n // BATCH)
    slot = (torch.arange(n) // BATCH) * 18 + data.pair_type.gather(1, order)         # [S, N]
    counts = torch.zeros(n_seeds, n_batches * 18, dtype=DTYPE)
    return counts.scatter_add_(1, slot, torch.ones_like(slot, dtype=DTYPE)).view(n_seeds, -1, 18)


def _arm_logratios(logp: Tensor) -> tuple[Tensor, Tensor]:
    """h(y), h(y') of every pair type: logp [S, 3] -> [S, T] each."""
    return logp[:, TYPE_Y] - LOG_REF, logp[:, TYPE_Y2] - LOG_REF


def copg_method(logp: Tensor) -> Tensor:
    """CoPG, paper eq. (7), on unranked pairs (labels unused). logp [S, 3] -> loss [S, T]."""
    h, h2 = _arm_logratios(logp)
    scores = torch.stack([REWARDS[TYPE_Y], REWARDS[TYPE_Y2]], -1).expand(*h.shape, 2)
    return copg_loss(torch.stack([h, h2], -1).view(-1, 2), scores.reshape(-1, 2),
                     BETA).view(h.shape)


def ipo_method(logp: Tensor) -> Tensor:
    """IPO on the drawn Bradley-Terry labels, tau = beta. logp [S, 3] -> loss [S, T]."""
    h, h2 = _arm_logratios(logp)
    margin = preference_margin(torch.where(TYPE_FIRST, h, h2), torch.where(TYPE_FIRST, h2, h))
    return ipo_loss(margin, tau=BETA)


def _pg_loss(logp: Tensor, value: Tensor | float) -> Tensor:
    """Mean over both samples of policy_gradient_loss with A = R_beta - value. -> [S, T]."""
    losses = []
    for arms in (TYPE_Y, TYPE_Y2):
        seq_logprobs = logp[:, arms]                                           # [S, T]
        rewards = kl_penalized_rewards(REWARDS[arms], seq_logprobs - LOG_REF, BETA)
        losses.append(policy_gradient_loss(seq_logprobs, rewards - value))
    return (losses[0] + losses[1]) / 2


def pg_method(logp: Tensor) -> Tensor:
    """Naive off-policy PG without baseline, A = R_beta(y). logp [S, 3] -> loss [S, T]."""
    return _pg_loss(logp, 0.0)


def pg_value_method(logp: Tensor) -> Tensor:
    """Naive off-policy PG with the exact value baseline, A = R_beta(y) - E_pi[r]. -> [S, T]."""
    return _pg_loss(logp, (logp.exp() * REWARDS).sum(-1, keepdim=True).detach())


METHODS = {"copg": copg_method, "ipo": ipo_method, "pg": pg_method, "pg_value": pg_value_method}


def train(data: PairData, epochs: int) -> tuple[Tensor, Tensor]:
    """Adam on every method and seed at once. Returns (regrets [epochs+1, M, S], logits [M, S, 3]);
    regrets[0] is the initial (uniform) policy, regrets[e] the policy after epoch e.
    Runs on one thread: the tensors are tiny and thread wake-ups cost more than the maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logits = torch.zeros(len(METHODS), data.y.shape[0], 3, dtype=DTYPE, requires_grad=True)
        opt = torch.optim.Adam([logits], lr=LR)
        regrets = torch.empty(epochs + 1, *logits.shape[:2], dtype=DTYPE)
        regrets[0] = regret(logits.detach())
        for epoch in range(1, epochs + 1):
            counts = epoch_batches(data)                                       # [S, nb, T]
            weights = counts / counts.sum(-1, keepdim=True)                    # batch means
            for b in range(counts.shape[1]):
                logp = torch.log_softmax(logits, -1)                           # [M, S, 3]
                loss = sum((fn(logp[m]) * weights[:, b]).sum()
                           for m, fn in enumerate(METHODS.values()))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            regrets[epoch] = regret(logits.detach())
        return regrets, logits.detach()
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(file)`` to a temp file in the same folder, then os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def summarise(cfg: BanditConfig, data: PairData, regrets: Tensor, logits: Tensor) -> dict:
    """Final policies, predicted fixed points (population and per-seed data), regrets."""
    per_seed = [empirical_weights(data, s) for s in range(cfg.seeds)]
    population = {"copg": optimal_policy(), "ipo": ipo_fixed_point(population_win_weights()),
                  "pg": pg_fixed_point((MU1 + MU2) / 2, False),
                  "pg_value": pg_fixed_point((MU1 + MU2) / 2, True)}
    on_data = {"copg": lambda w, a: optimal_policy(), "ipo": lambda w, a: ipo_fixed_point(w),
               "pg": lambda w, a: pg_fixed_point(a, False),
               "pg_value": lambda w, a: pg_fixed_point(a, True)}
    horizon = min(cfg.epochs, regrets.shape[0] - 1)
    methods = {}
    for m, name in enumerate(METHODS):
        methods[name] = {
            "final_policy": torch.softmax(logits[m], -1).tolist(),
            "fixed_point_population": population[name].tolist(),
            "fixed_point_on_data": [on_data[name](*w).tolist() for w in per_seed],
            f"regret_epoch_{horizon}": regrets[horizon, m].tolist(),
            "regret_initial": regrets[0, m].tolist(),
            "regret_final": regrets[-1, m].tolist()}
    return {"config": asdict(cfg), "epochs_run": regrets.shape[0] - 1, "horizon": horizon,
            "pi_star": optimal_policy().tolist(), "J_star": float(BETA * torch.logsumexp(
                REWARDS / BETA + LOG_REF, 0)), "methods": methods}


def plot(regrets: Tensor, horizon: int, path: Path) -> None:
    """Regret vs epoch, mean over seeds with a min-max band, log y; left panel = paper horizon."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = regrets.shape[0] - 1
    panels = [horizon, total] if total > horizon else [horizon]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, last in zip(axes[0], panels):
        epochs = np.arange(last + 1)
        for m, name in enumerate(METHODS):
            r = regrets[: last + 1, m].clamp(min=1e-9).numpy()                 # [E, S]
            ax.plot(epochs, r.mean(1), label=name)
            ax.fill_between(epochs, r.min(1), r.max(1), alpha=0.25)
        ax.set(yscale="log", xlabel="epoch", ylabel="regret J(pi*) - J(pi)",
               title=f"toy bandit, {regrets.shape[2]} seeds, epochs 0-{last}")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    plt.close(fig)


def write_outputs(out: Path, regrets: Tensor, summary: dict) -> None:
    """bandit.csv (epoch, method, seed, regret), bandit.png, summary.json, each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["epoch,method,seed,regret"]
    for e in range(regrets.shape[0]):
        for m, name in enumerate(METHODS):
            lines += [f"{e},{name},{s},{float(v):.10g}" for s, v in enumerate(regrets[e, m])]
    _atomic_write(out / "bandit.csv", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    _atomic_write(out / "summary.json", lambda f: f.write(json.dumps(summary, indent=1).encode()))
    plot(regrets, summary["horizon"], out / "bandit.png")


def format_table(summary: dict) -> str:
    """Mean regrets at the paper's horizon and at the end, mean final policy vs fixed point."""
    fmt = lambda p: "(" + ", ".join(f"{x:.4f}" for x in p) + ")"  # noqa: E731
    head = (f"{'method':<9} {'regret@' + str(summary['horizon']):>12} "
            f"{'regret@' + str(summary['epochs_run']):>12}  {'final policy (mean)':<26} "
            "predicted fixed point")
    rows = [head]
    for name, m in summary["methods"].items():
        pol = np.mean(m["final_policy"], 0)
        rows.append(f"{name:<9} {np.mean(m['regret_epoch_' + str(summary['horizon'])]):>12.3e} "
                    f"{np.mean(m['regret_final']):>12.3e}  {fmt(pol):<26} "
                    f"{fmt(m['fixed_point_population'])}")
    return "\n".join(rows + [f"pi* = {fmt(summary['pi_star'])}"])


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """``scorealign bandit``: run the toy bandit of arXiv 2406.19185 §5 and write its outputs."""
    d = BanditConfig()
    p = argparse.ArgumentParser(prog="scorealign bandit", description=main.__doc__)
    p.add_argument("--epochs", type=_positive_int, default=d.epochs,
                   help=f"the paper's horizon, regrets reported there (default {d.epochs})")
    p.add_argument("--long-epochs", type=int, default=d.long_epochs,
                   help=f"total epochs run, for the asymptotes; <= --epochs: none "
                        f"(default {d.long_epochs})")
    p.add_argument("--seeds", type=_positive_int, default=d.seeds,
                   help=f"number of seeds, 0..N-1 (default {d.seeds})")
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    a = p.parse_args(argv)
    cfg = BanditConfig(epochs=a.epochs, long_epochs=a.long_epochs, seeds=a.seeds, out=a.out)
    start = time.perf_counter()
    data = sample_pairs(cfg.seeds)
    regrets, logits = train(data, max(cfg.epochs, cfg.long_epochs))
    summary = summarise(cfg, data, regrets, logits)
    summary["train_seconds"] = round(time.perf_counter() - start, 2)
    write_outputs(Path(cfg.out), regrets, summary)
    print(format_table(summary))
    print(f"trained {summary['epochs_run']} epochs x {cfg.seeds} seeds x {len(METHODS)} methods "
          f"in {summary['train_seconds']} s; wrote {cfg.out}/bandit.csv, bandit.png, summary.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
