"""The toy bandit of arXiv 2406.19185 §5: CoPG, IPO and naive off-policy PG on three arms.

Paper §5: r = (2.5, 2, 1), pi_ref uniform, beta = 0.5, one fixed set of 10^4 unranked pairs
(y ~ mu1 = (.1, .2, .7), y' ~ mu2 = (.05, .05, .9)) per seed, Adam lr 1e-3, batches of 512, 100
epochs, regret J(pi*) - J(pi), J = E_pi[r] - beta KL(pi || pi_ref). Not in the paper: the policy
is a softmax over 3 logits from 0. Each method is a ``scorealign.algorithms.losses`` loss fed the arms'
log-ratios h = log pi - log pi_ref (copg_loss; ipo_loss on Bradley-Terry labels drawn once with
the data; policy_gradient_loss on y and y' without / with the baseline E_pi[r]).
Deviation: PG's reward is R_beta = r - beta h, detached (``kl_penalized_rewards``), not bare r, so
that on-policy it would follow grad J and only the off-policy data bias it (docs/bandit.md).
Speed: all (method, seed) pairs share one logits tensor [M, S, 3] and one Adam (elementwise, each
has its own mean loss: same as separate runs), and a batch is summarised by the counts of its 18
pair types (y, y', label): each loss is evaluated per type and count-weighted (= the batch mean).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..algorithms.losses import (
    copg_loss,
    ipo_loss,
    kl_penalized_rewards,
    policy_gradient_loss,
    preference_margin,
)
from ..core.config import config_from_argv
from ..core.io import atomic_write, atomic_write_text
from ..errors import ConfigError
from ..eval.reports import require_matplotlib

Tensor = torch.Tensor
DTYPE = torch.float64
REWARDS = torch.tensor([2.5, 2.0, 1.0], dtype=DTYPE)   # r(arm)
MU1 = torch.tensor([0.1, 0.2, 0.7], dtype=DTYPE)       # law of y
MU2 = torch.tensor([0.05, 0.05, 0.9], dtype=DTYPE)     # law of y'
BETA = 0.5
LOG_REF = math.log(1.0 / 3.0)                          # log pi_ref(arm), uniform
N_PAIRS, BATCH, LR = 10_000, 512, 1e-3
TYPE_Y = torch.arange(18) // 6                         # pair type t = 6 y + 2 y' + label: [T]
TYPE_Y2 = torch.arange(18) // 2 % 3
TYPE_FIRST = torch.arange(18) % 2 == 1                 # y is the preferred arm
PG_ARMS = torch.cat([TYPE_Y, TYPE_Y2])                 # [2T]: y of each type, then y'


@dataclass(frozen=True)
class BanditConfig:
    """`scorealign bandit`: the toy bandit of arXiv 2406.19185 §5 (CoPG, IPO, off-policy PG)."""

    epochs: int = 100  # the paper's horizon: regrets are reported at this epoch
    long_epochs: int = 500  # the run goes on to this epoch, past the asymptotes (<= epochs: no)
    seeds: int = 5  # seeds 0..seeds-1, each with its own dataset and shuffles
    output_dir: str = "runs/bandit"  # output folder: bandit.csv, bandit.png, summary.json

    def __post_init__(self):
        if self.epochs < 1 or self.seeds < 1 or self.long_epochs < 0:
            raise ConfigError(f"epochs={self.epochs}, seeds={self.seeds}, long_epochs="
                              f"{self.long_epochs}: need epochs >= 1, seeds >= 1, long_epochs >= 0")


# ---- exact quantities (3 arms: closed forms, tiny exact solvers) ----


def kl_regularised_value(logits: Tensor) -> Tensor:
    """J(pi) = E_pi[r] - beta * KL(pi || pi_ref), exactly. logits [..., 3] -> [...]."""
    logp = torch.log_softmax(logits, -1)
    return (logp.exp() * (REWARDS - BETA * (logp - LOG_REF))).sum(-1)


def optimal_policy() -> Tensor:
    """pi* = pi_ref exp(r / beta) / Z, the unique maximiser of J; J(pi*) = beta log Z. -> [3]."""
    return torch.softmax(REWARDS / BETA, -1)


def regret(logits: Tensor) -> Tensor:
    """J(pi*) - J(pi). logits [..., 3] -> [...]."""
    return kl_regularised_value(torch.log(optimal_policy())) - kl_regularised_value(logits)


def ipo_fixed_point(win_weights: Tensor) -> Tensor:
    """Minimiser of IPO's loss (arXiv 2310.12036 eq. 17, tau = beta) over a law of labelled pairs.

    win_weights[a, b]: mass of pairs whose preferred arm is a and other arm b. With pi = softmax(
    theta), h(a) - h(b) = theta_a - theta_b, so the loss sum_{a != b} W[a, b] (theta_a - theta_b -
    1/(2 tau))^2 (pairs a == b are constant) is weighted least squares in the logits: solved
    exactly, gauge sum(theta) = 0 (a row orthogonal to all others). -> policy [3].
    """
    eye = torch.eye(3, dtype=DTYPE)
    sqrt_w = win_weights.sqrt().reshape(9, 1)                                   # [(a, b), 1]
    rows = sqrt_w * (eye[:, None, :] - eye[None, :, :]).reshape(9, 3)           # e_a - e_b
    lhs = torch.cat([rows, torch.ones(1, 3, dtype=DTYPE)])
    rhs = torch.cat([sqrt_w[:, 0] / (2 * BETA), torch.zeros(1, dtype=DTYPE)])
    rhs[:9] *= (~torch.eye(3, dtype=torch.bool)).reshape(9)                     # a == b: no term
    return torch.softmax(torch.linalg.lstsq(lhs, rhs[:, None]).solution[:, 0], -1)


def population_win_weights() -> Tensor:
    """W[a, b] = (mu1(a) mu2(b) + mu2(a) mu1(b)) sigmoid(r(a) - r(b)): the exact law. -> [3, 3]."""
    pair = MU1[:, None] * MU2[None, :]
    return (pair + pair.T) * torch.sigmoid(REWARDS[:, None] - REWARDS[None, :])


def pg_mean_field(theta: Tensor, arm_weights: Tensor, value_baseline: bool) -> Tensor:
    """Expected PG update over the data, sum_a w(a) (R_beta(a) - b) (e_a - pi). -> [3]."""
    logp = torch.log_softmax(theta, -1)
    baseline = (logp.exp() * REWARDS).sum() if value_baseline else 0.0
    weighted = arm_weights * (REWARDS - BETA * (logp - LOG_REF) - baseline)
    return weighted - logp.exp() * weighted.sum()


def _newton(field, theta: Tensor) -> Tensor:
    """Zero of a shift-invariant field R^3 -> R^3 whose components sum to 0; sum(theta) = 0."""
    gauge = torch.ones(1, 3, dtype=DTYPE)
    for _ in range(50):
        value = field(theta)
        if value.abs().max() < 1e-13:
            return theta
        jac = torch.autograd.functional.jacobian(field, theta)                   # rank 2
        step = torch.linalg.lstsq(torch.cat([jac, gauge]), torch.cat([value, theta.sum()[None]]))
        theta = theta - step.solution
    raise RuntimeError("Newton did not converge")


def pg_fixed_point(arm_weights: Tensor, value_baseline: bool) -> Tensor:
    """Zero of ``pg_mean_field``, where naive off-policy PG stops. -> policy [3].

    arm_weights: each arm's frequency among all y and y' (population: (mu1 + mu2) / 2).
    R_beta is constant (= J(pi*)) at pi*, so pi* is a zero if w = pi* (on-policy) or b = J(pi*);
    b = 0 or E_pi[r] biases pi toward the data. Continuation from w = pi* to w, Newton each stage.
    """
    theta = torch.log(optimal_policy())
    theta = theta - theta.mean()
    for t in torch.linspace(0.05, 1.0, 20, dtype=DTYPE):
        weights = (1 - t) * optimal_policy() + t * arm_weights
        theta = _newton(lambda th: pg_mean_field(th, weights, value_baseline), theta)
    return torch.softmax(theta, -1)


# ---- data, the four methods, training ----


@dataclass
class PairData:
    y: Tensor                  # [S, N] arm of the first sample, y ~ mu1
    y2: Tensor                 # [S, N] arm of the second sample, y' ~ mu2
    first_preferred: Tensor    # [S, N] bool, Bradley-Terry label drawn once with the data
    seeds: list[int]           # seed s: data from generator s, shuffles from generator 2^32 + s

    def weights(self, s: int) -> tuple[Tensor, Tensor]:
        """Seed s's (win_weights [3, 3], arm_weights [3]) as frequencies: its exact data law."""
        y, y2, first = self.y[s], self.y2[s], self.first_preferred[s]
        win = torch.where(first, y, y2) * 3 + torch.where(first, y2, y)
        wins = torch.bincount(win, minlength=9).to(DTYPE).view(3, 3) / y.numel()
        return wins, torch.bincount(torch.cat([y, y2]), minlength=3).to(DTYPE) / (2 * y.numel())


def sample_pairs(seeds: int, n_pairs: int = N_PAIRS) -> PairData:
    """Draw each seed's fixed dataset with its own generator (seed s's data do not depend on S)."""
    columns = []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        y = torch.multinomial(MU1, n_pairs, replacement=True, generator=g)
        y2 = torch.multinomial(MU2, n_pairs, replacement=True, generator=g)
        first = torch.rand(n_pairs, generator=g, dtype=DTYPE) < torch.sigmoid(
            REWARDS[y] - REWARDS[y2])
        columns.append((y, y2, first))
    y, y2, first = (torch.stack(c) for c in zip(*columns))
    return PairData(y, y2, first, list(range(seeds)))


def batch_type_counts(data: PairData, generators: list[torch.Generator]) -> Tensor:
    """Shuffle each seed's pairs; count the pair types of each mini-batch. -> [S, batches, T]."""
    n_seeds, n = data.y.shape
    order = torch.stack([torch.randperm(n, generator=g) for g in generators])        # [S, N]
    types = (data.y * 6 + data.y2 * 2 + data.first_preferred.long()).gather(1, order)
    slot = torch.arange(n) // BATCH * 18 + types                                       # [S, N]
    counts = torch.zeros(n_seeds, -(-n // BATCH) * 18, dtype=DTYPE)
    return counts.scatter_add_(1, slot, torch.ones_like(counts[:, :1]).expand(-1, n)).view(
        n_seeds, -1, 18)


def copg_method(logp: Tensor, h: Tensor, h2: Tensor) -> Tensor:
    """CoPG on unranked pairs. logp [S, 3]; h = h(y), h2 = h(y') [S, T] -> loss per type [S, T]."""
    scores = torch.stack([REWARDS[TYPE_Y], REWARDS[TYPE_Y2]], -1).expand(*h.shape, 2)
    return copg_loss(torch.stack([h, h2], -1).view(-1, 2), scores.reshape(-1, 2),
                     BETA).view(h.shape)


def ipo_method(logp: Tensor, h: Tensor, h2: Tensor) -> Tensor:
    """IPO on the drawn Bradley-Terry labels, tau = beta. -> [S, T]."""
    margin = preference_margin(torch.where(TYPE_FIRST, h, h2), torch.where(TYPE_FIRST, h2, h))
    return ipo_loss(margin, tau=BETA)


def _pg(logp: Tensor, baseline: Tensor | float) -> Tensor:
    """policy_gradient_loss with A = R_beta - baseline, mean over y and y'. -> [S, T]."""
    seq_logprobs = logp.index_select(-1, PG_ARMS)                                # [S, 2T]
    rewards = kl_penalized_rewards(REWARDS[PG_ARMS], seq_logprobs - LOG_REF, BETA)
    return policy_gradient_loss(seq_logprobs, rewards - baseline).view(-1, 2, 18).mean(1)


def pg_method(logp: Tensor, h: Tensor, h2: Tensor) -> Tensor:
    """Naive off-policy PG, no baseline: A = R_beta(y). -> [S, T]."""
    return _pg(logp, 0.0)


def pg_value_method(logp: Tensor, h: Tensor, h2: Tensor) -> Tensor:
    """Naive off-policy PG with the exact value baseline: A = R_beta(y) - E_pi[r]. -> [S, T]."""
    return _pg(logp, (logp.exp() * REWARDS).sum(-1, keepdim=True).detach())


METHODS = {"copg": copg_method, "ipo": ipo_method, "pg": pg_method, "pg_value": pg_value_method}


def train(data: PairData, epochs: int) -> tuple[Tensor, Tensor]:
    """Adam on every method and seed at once. -> (regrets [epochs+1, M, S], logits [M, S, 3]);
    regrets[e] is after epoch e (0: the uniform start). One thread: the tensors are tiny."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logits = torch.zeros(len(METHODS), len(data.seeds), 3, dtype=DTYPE, requires_grad=True)
        opt = torch.optim.Adam([logits], lr=LR)
        shuffles = [torch.Generator().manual_seed(2**32 + s) for s in data.seeds]
        regrets = torch.empty(epochs + 1, *logits.shape[:2], dtype=DTYPE)
        regrets[0] = regret(logits.detach())
        for epoch in range(1, epochs + 1):
            counts = batch_type_counts(data, shuffles)                           # [S, nb, T]
            for weights in (counts / counts.sum(-1, keepdim=True)).unbind(1):     # [S, T]
                # 1. log-probs and log-ratios of the arms of every pair type
                logp = torch.log_softmax(logits, -1)                             # [M, S, 3]
                h = logp.index_select(-1, TYPE_Y) - LOG_REF                      # [M, S, T]
                h2 = logp.index_select(-1, TYPE_Y2) - LOG_REF
                # 2. each method's library loss per type; batch mean = count-weighted sum
                per_type = torch.stack([fn(*args) for fn, *args in zip(
                    METHODS.values(), logp.unbind(0), h.unbind(0), h2.unbind(0))])
                # 3. one Adam step on the sum over (method, seed) of batch means
                opt.zero_grad(set_to_none=True)
                (per_type * weights).sum().backward()
                opt.step()
            regrets[epoch] = regret(logits.detach())
        return regrets, logits.detach()
    finally:
        torch.set_num_threads(threads)


# ---- outputs ----


def summarise(cfg: BanditConfig, data: PairData, regrets: Tensor, logits: Tensor) -> dict:
    """Final policies, fixed points (exact pair law and each seed's data), regrets."""
    solvers = {"copg": lambda w, a: optimal_policy(), "ipo": lambda w, a: ipo_fixed_point(w),
               "pg": lambda w, a: pg_fixed_point(a, False),
               "pg_value": lambda w, a: pg_fixed_point(a, True)}
    population = (population_win_weights(), (MU1 + MU2) / 2)
    horizon = min(cfg.epochs, len(regrets) - 1)
    methods = {}
    for m, (name, solve) in enumerate(solvers.items()):
        fixed = solve(*population)
        methods[name] = {
            "final_policy": torch.softmax(logits[m], -1).tolist(),           # per seed
            "fixed_point": fixed.tolist(), "fixed_point_regret": float(regret(fixed.log())),
            "fixed_point_on_data": [solve(*data.weights(s)).tolist() for s in data.seeds],
            "regret_initial": regrets[0, m].tolist(),
            "regret_at_horizon": regrets[horizon, m].tolist(),
            "regret_final": regrets[-1, m].tolist()}
    return {"config": asdict(cfg), "horizon": horizon, "epochs_run": len(regrets) - 1,
            "pi_star": optimal_policy().tolist(),
            "J_star": float(kl_regularised_value(optimal_policy().log())), "methods": methods}


def plot(regrets: Tensor, summary: dict, path: Path) -> None:
    """Regret vs epoch: seed mean, min-max band, dashed = predicted asymptote; log y."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ends = sorted({summary["horizon"], summary["epochs_run"]})          # paper's horizon, long run
    fig, axes = plt.subplots(1, len(ends), figsize=(5.2 * len(ends), 3.6), squeeze=False)
    for ax, end in zip(axes[0], ends):
        for m, (name, info) in enumerate(summary["methods"].items()):
            r = regrets[: end + 1, m].clamp(min=1e-9).numpy()                   # [E, S]
            line, = ax.plot(np.arange(end + 1), r.mean(1), label=name)
            ax.fill_between(np.arange(end + 1), r.min(1), r.max(1), alpha=0.25)
            if info["fixed_point_regret"] > 1e-9:
                ax.axhline(info["fixed_point_regret"], ls="--", lw=0.8, color=line.get_color())
        ax.set(yscale="log", xlabel="epoch", ylabel="regret J(pi*) - J(pi)  (floor 1e-9)",
               title=f"3-arm bandit, {regrets.shape[2]} seeds, epochs 0-{end}")
        ax.grid(alpha=0.3)
    axes[0][0].plot([], [], "k--", lw=0.8, label="predicted limit")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=80))
    plt.close(fig)


def write_outputs(out: Path, regrets: Tensor, summary: dict) -> None:
    """bandit.csv (epoch, method, seed, regret), summary.json, bandit.png; each atomically."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["epoch,method,seed,regret"] + [
        f"{e},{name},{s},{float(v):.10g}" for e in range(len(regrets))
        for m, name in enumerate(METHODS) for s, v in enumerate(regrets[e, m])]
    atomic_write_text(out / "bandit.csv", "\n".join(lines) + "\n")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    plot(regrets, summary, out / "bandit.png")


def format_table(summary: dict) -> str:
    """Seed-mean regrets (horizon, end), final policy, fixed point, distance to on-data one."""
    fmt = lambda p: "(" + ", ".join(f"{x:.4f}" for x in p) + ")"  # noqa: E731
    rows = [f"{'method':<9} {'regret@' + str(summary['horizon']):>11} "
            f"{'regret@' + str(summary['epochs_run']):>11}  {'final policy, seed mean':<25} "
            f"{'fixed point (mu1 x mu2)':<25} {'max|pi - fp(data)|':>18}"]
    for name, m in summary["methods"].items():
        gap = np.abs(np.array(m["final_policy"]) - np.array(m["fixed_point_on_data"])).max()
        rows.append(f"{name:<9} {np.mean(m['regret_at_horizon']):>11.3e} "
                    f"{np.mean(m['regret_final']):>11.3e}  {fmt(np.mean(m['final_policy'], 0)):<25}"
                    f" {fmt(m['fixed_point']):<25} {gap:>18.1e}")
    return "\n".join(rows + [f"pi* = {fmt(summary['pi_star'])}"])


def main(argv: list[str] | None = None) -> int:
    """``scorealign bandit [--key value ...]``: the toy bandit of arXiv 2406.19185 §5; writes csv,
    png, json. ``--out`` (the old name of ``--output_dir``) is one line pointing to the new one."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--out" or a.startswith("--out=") for a in argv):
        raise ConfigError("--out was renamed: use --output_dir DIR (every command takes --key "
                          "value; see scorealign bandit --help)")
    cfg = config_from_argv(BanditConfig, argv, "scorealign bandit [--key value ...]")
    if cfg is None:
        return 0
    require_matplotlib()                     # bandit.png is promised: check before training
    start = time.perf_counter()
    data = sample_pairs(cfg.seeds)
    regrets, logits = train(data, max(cfg.epochs, cfg.long_epochs))
    summary = summarise(cfg, data, regrets, logits)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    write_outputs(Path(cfg.output_dir), regrets, summary)
    print(format_table(summary))
    print(f"{summary['epochs_run']} epochs x {cfg.seeds} seeds x {len(METHODS)} methods in "
          f"{summary['seconds']} s; wrote bandit.csv, bandit.png, summary.json to {cfg.output_dir}")
    return 0

