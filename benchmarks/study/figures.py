"""The study's plots (matplotlib, Agg): held-out gold vs KL to the start, gold vs samples
drawn (the held-out curve during training), and per-language win-rate bars (2407.02552)."""

from __future__ import annotations

from pathlib import Path

from scorealign.eval.reports import require_matplotlib, save_figure

from .plan import EXPERIMENTS, LANGS
from .stats import mean_ci


def short(name: str) -> str:
    return name.removesuffix(".proxy.all").removesuffix(".gold.all")


def reward_vs_kl(plt, exp: str, results: dict, path: Path) -> None:
    """One point per run: mean final KL to the start and mean gold, 95% intervals as bars."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for run in EXPERIMENTS[exp]:
        got = list(results.get(run.name, {}).values())
        if not got:
            continue
        kl, kl_h = mean_ci([r["final"]["kl"] for r in got])
        gold, gold_h = mean_ci([r["final"]["gold"] for r in got])
        ax.errorbar([kl], [gold], xerr=[kl_h or 0], yerr=[gold_h or 0], fmt="o", capsize=3,
                    label=short(run.name))
    ax.set_xlabel("KL to the SFT start (own eval replies)")
    ax.set_ylabel("gold score, eval prompts")
    ax.set_title(f"{exp}: reward vs KL (mean ± 95% CI over seeds)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    save_figure(fig, path)


def reward_vs_samples(plt, exp: str, results: dict, path: Path) -> None:
    """Held-out gold along training against samples drawn, mean over seeds with its band."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for run in EXPERIMENTS[exp]:
        got = list(results.get(run.name, {}).values())
        if not got:
            continue
        xs = [c["samples"] for c in got[0]["curve"]]
        stats = [mean_ci([r["curve"][i]["gold"] for r in got if len(r["curve"]) > i])
                 for i in range(len(xs))]
        mean = [m for m, _ in stats]
        half = [h or 0.0 for _, h in stats]
        line = ax.plot(xs, mean, marker="o", label=short(run.name))[0]
        ax.fill_between(xs, [m - h for m, h in zip(mean, half)],
                        [m + h for m, h in zip(mean, half)], color=line.get_color(), alpha=0.12)
    ax.set_xlabel("samples drawn (or read)")
    ax.set_ylabel("held-out gold score")
    ax.set_title(f"{exp}: sample efficiency (mean ± 95% CI over seeds)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    save_figure(fig, path)


def per_language(plt, results: dict, path: Path) -> None:
    """Win-rate vs the SFT start per eval language, one bar per run, 95% intervals."""
    import numpy as np

    runs = [r for r in EXPERIMENTS["e3"] if results.get(r.name)]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / max(len(runs), 1)
    for i, run in enumerate(runs):
        got = list(results[run.name].values())
        stats = [mean_ci([r["final"][f"win_vs_sft/{x}"] for r in got
                          if r["final"].get(f"win_vs_sft/{x}") is not None]) for x in LANGS]
        ax.bar(np.arange(len(LANGS)) + i * width, [m for m, _ in stats], width,
               yerr=[h or 0 for _, h in stats], capsize=3, label=run.name.replace(".proxy", ""))
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(LANGS)) + width * (len(runs) - 1) / 2, LANGS)
    ax.set_ylabel("win-rate vs SFT start")
    ax.set_title("e3: per-language win-rate (training languages in the legend)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    save_figure(fig, path)


def draw(results: dict, preset_name: str, out: Path) -> dict[str, Path]:
    """Every plot into ``out``; -> {key: path}, keys prefixed by their experiment."""
    plt = require_matplotlib()
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for exp in ("e1", "e2-gold", "e2-proxy"):
        paths[f"{exp}-reward-vs-kl"] = out / f"{exp}_reward_vs_kl.png"
        reward_vs_kl(plt, exp, results, paths[f"{exp}-reward-vs-kl"])
        paths[f"{exp}-reward-vs-samples"] = out / f"{exp}_reward_vs_samples.png"
        reward_vs_samples(plt, exp, results, paths[f"{exp}-reward-vs-samples"])
    paths["e3-per-language"] = out / "e3_per_language.png"
    per_language(plt, results, paths["e3-per-language"])
    return paths
