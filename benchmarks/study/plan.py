"""What the study runs: presets, the training runs of each experiment, the cells, the claims.

A **cell** is one unit of work whose result is one JSON file: ``prep`` of a seed (task split,
SFT policy, offline data, the SFT policy's gold evaluation) or one training **run** of a seed
(``method.reward.languages``, trained from that seed's SFT policy and judged by the gold judge).
Experiments share runs: RLOO k = 4 on the proxy over all languages is a row of 2402.14740's
table and the "all languages" arm of 2407.02552's; DPO likewise for 2406.19185 and 2407.02552.
"""

from __future__ import annotations

import dataclasses

SAMPLES_PER_STEP = 16            # every method draws (or reads) 16 samples per step (real_demo)
SELECT_METHODS = ("reinforce", "dpo")   # the shared lr is chosen on these (neither is a claimed winner)

PRESETS = {
    "full": dict(model="smollm2-135m", seeds=(0, 1, 2), select_seed=100,
                 lrs=(1e-5, 2e-5, 5e-5), select_methods=SELECT_METHODS, beta=0.05,
                 n_train=192, n_eval=128, sft_steps=24, steps=16, max_new_tokens=32,
                 curve_prompts=48, curve_points=4),
    "smoke": dict(model="tiny", seeds=(0,), select_seed=100, lrs=(1e-4, 3e-4),
                  select_methods=("reinforce",), beta=0.05, n_train=16, n_eval=8, sft_steps=2,
                  steps=2, max_new_tokens=6, curve_prompts=4, curve_points=2),
    # one prep and one small cell on the real model, to measure the per-step costs
    "measure": dict(model="smollm2-135m", seeds=(0,), select_seed=None, lrs=(2e-5,),
                    select_methods=(), beta=0.05, n_train=192, n_eval=128, sft_steps=4,
                    steps=4, max_new_tokens=32, curve_prompts=48, curve_points=2),
}

E1_METHODS = ("pg", "reinforce", "rloo-k2", "rloo-k4", "ppo", "raft-k4")
E2_METHODS = ("copg-offline", "ipo", "dpo", "copg-online")
E3_METHODS = ("dpo", "rloo-k4")
LANGS = ("en", "fr", "es", "ru")


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: ``method`` (a real_demo METHODS name), the reward it trains on
    (``proxy`` or ``gold``), the languages of its training prompts (``all`` or ``en``)."""

    method: str
    reward: str = "proxy"
    langs: str = "all"

    @property
    def name(self) -> str:
        return f"{self.method}.{self.reward}.{self.langs}"


EXPERIMENTS = {  # experiment -> its runs (every seed)
    "e1": [Run(m) for m in E1_METHODS],
    "e2-gold": [Run(m, "gold") for m in E2_METHODS],
    "e2-proxy": [Run(m) for m in E2_METHODS],
    "e3": [Run(m, "proxy", langs) for m in E3_METHODS for langs in ("en", "all")],
}
MEASURE_RUNS = [Run("rloo-k4")]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work: ``kind`` 'prep' or 'run'; ``lr`` None = the selected shared lr."""

    kind: str
    seed: int
    run: Run | None = None
    lr: float | None = None

    @property
    def id(self) -> str:
        if self.kind == "prep":
            return f"seed{self.seed}/prep"
        lr = "" if self.lr is None else f"@lr{self.lr:g}"
        return f"seed{self.seed}/{self.run.name}{lr}"


def unique_runs(preset_name: str) -> list[Run]:
    """Every distinct run of the main experiments, in a stable order."""
    if preset_name == "measure":
        return list(MEASURE_RUNS)
    seen: dict[str, Run] = {}
    for runs in EXPERIMENTS.values():
        for r in runs:
            seen.setdefault(r.name, r)
    return list(seen.values())


def cells(preset_name: str, seeds: tuple[int, ...] | None = None) -> list[Cell]:
    """All cells in execution order: the selection seed's prep and lr grid first, then each
    seed's prep and runs (seed-major, so a stopped study has whole seeds)."""
    p = PRESETS[preset_name]
    out: list[Cell] = []
    if p["select_seed"] is not None and p["select_methods"]:
        out.append(Cell("prep", p["select_seed"]))
        out += [Cell("run", p["select_seed"], Run(m), lr) for lr in p["lrs"]
                for m in p["select_methods"]]
    for seed in seeds or p["seeds"]:
        out.append(Cell("prep", seed))
        out += [Cell("run", seed, r) for r in unique_runs(preset_name)]
    return out


@dataclasses.dataclass(frozen=True)
class Claim:
    """A paper's claim as ordered comparisons: each (a, b) says run a beats run b on
    ``metric`` (b None: beats ``threshold``), in experiment ``experiment``."""

    experiment: str
    paper: str
    short: str                  # the claim in a few words (the closing table)
    text: str
    metric: str
    pairs: tuple[tuple[str, str | None], ...]
    threshold: float = 0.0


CLAIMS = [
    Claim("e1", "2402.14740", "RLOO k=4 above RAFT, REINFORCE, PG, PPO",
          "Table 1: RLOO k=4 above RAFT k=4, REINFORCE, vanilla PG and PPO "
          "(TL;DR win-rates 77.9 / 73.2 / 70.7 / 70.4 / 67.6%)", "win_vs_sft",
          (("rloo-k4", "raft-k4"), ("rloo-k4", "reinforce"), ("rloo-k4", "pg"),
           ("rloo-k4", "ppo"))),
    Claim("e1", "2402.14740", "REINFORCE > PG > PPO; RLOO k=4 > k=2",
          "Table 1: REINFORCE with a baseline above vanilla PG above PPO; "
          "RLOO k=4 above k=2 on TL;DR (70.7 > 70.4 > 67.6; 77.9 > 74.2)", "win_vs_sft",
          (("reinforce", "pg"), ("pg", "ppo"), ("rloo-k4", "rloo-k2"))),
    Claim("e1", "2402.14740", "RLOO k=4 most sample-efficient",
          "RLOO k=4 is the most sample-efficient: higher held-out reward "
          "along the samples drawn (mean gold over the curve's points)", "curve_mean",
          (("rloo-k4", "raft-k4"), ("rloo-k4", "reinforce"), ("rloo-k4", "pg"),
           ("rloo-k4", "ppo"))),
    Claim("e2-gold", "2406.19185", "offline CoPG > IPO > DPO (gold as reward)",
          "offline CoPG reaches a higher reward than IPO, and IPO than "
          "DPO, the training scorer being the ground truth", "gold",
          (("copg-offline", "ipo"), ("ipo", "dpo"))),
    Claim("e2-proxy", "2406.19185", "offline CoPG > IPO > DPO (proxy, judged by gold)",
          "the same ranking (offline CoPG > IPO > DPO) when trained on "
          "the proxy and judged by gold (not the paper's setting)", "gold",
          (("copg-offline", "ipo"), ("ipo", "dpo"))),
    Claim("e3", "2407.02552", "English-only training transfers",
          "English-only preference training transfers: it beats the SFT "
          "start on French, Spanish and Russian prompts (win-rate > 0.5)", "win_vs_sft/non_en",
          (("dpo.en", None), ("rloo-k4.en", None)), 0.5),
    Claim("e3", "2407.02552", "all languages transfer more than English only",
          "training on all languages transfers more than English only, on "
          "the non-English prompts", "win_vs_sft/non_en",
          (("dpo.all", "dpo.en"), ("rloo-k4.all", "rloo-k4.en"))),
    Claim("e3", "2407.02552", "online RLOO > offline DPO",
          "online RLOO beats offline DPO (54.4% vs 43.8% win-rate)",
          "win_vs_sft", (("rloo-k4.all", "dpo.all"),)),
]


def run_of(experiment: str, label: str) -> Run:
    """The run a claim's label names inside ``experiment`` (e3 labels carry the languages)."""
    for r in EXPERIMENTS[experiment]:
        if label in (r.method, f"{r.method}.{r.langs}"):
            return r
    raise KeyError(f"{experiment}: no run {label!r}")
