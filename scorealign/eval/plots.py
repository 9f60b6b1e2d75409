"""`scorealign plot RUN_DIR [RUN_DIR ...] [--output_dir DIR]`: training curves of one or more runs.

What a run directory holds (``core/metrics.py``): ``metrics.jsonl``, one line per step with
``reward/mean`` and ``kl`` (among others), and, with ``eval_every``, ``eval.jsonl`` with
``eval/reward`` on held-out prompts (the gold judge in ``scorealign demo --toy``). Each quantity
gets one PNG with two panels: against the optimizer step (left) and against the samples drawn so
far (right: step x sequences per step, ``prompts_per_step`` x the algorithm's group size, read
from the run's ``config.yaml``). Every run keeps one colour in every figure; the legend sits
outside the axes, right of the panels.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import yaml

from ..core.config import config_from_argv
from ..errors import ConfigError
from .reports import require_matplotlib, save_figure

# (file stem, metrics file, key, y label); a figure is drawn when at least one run has its key.
QUANTITIES = (("reward", "metrics.jsonl", "reward/mean", "reward (mean over the step's samples)"),
              ("kl", "metrics.jsonl", "kl", "KL to the reference (nats per sequence)"),
              ("eval_reward", "eval.jsonl", "eval/reward", "held-out reward (eval prompts)"))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


@dataclasses.dataclass
class Curves:
    """One run's logged series: {metrics file: rows}, and the sequences drawn per step."""

    name: str
    rows: dict[str, list[dict]]
    samples_per_step: int | None

    def series(self, file: str, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of ``key`` in ``file``, rows without it skipped."""
        pts = [(r["step"], r[key]) for r in self.rows.get(file, []) if key in r]
        return [s for s, _ in pts], [v for _, v in pts]


def samples_per_step(config: dict) -> int | None:
    """Sequences in one step's batch (global): prompts_per_step x the algorithm's group size;
    None for a run that is not a `scorealign train` run."""
    from ..algorithms.registry import ALGORITHMS

    algo = ALGORITHMS.get(config.get("algo"))
    if algo is None or "prompts_per_step" not in config:
        return None
    return config["prompts_per_step"] * algo.group_size(SimpleNamespace(**config))


def read_run(run_dir: str | Path, name: str | None = None) -> Curves:
    """A run directory's curves; a ConfigError naming the directory when it holds no metrics."""
    run = Path(run_dir)
    if not (run / "metrics.jsonl").is_file():
        raise ConfigError(f"{run}: not a run directory (no metrics.jsonl)")
    rows = {}
    for file in ("metrics.jsonl", "eval.jsonl"):
        path = run / file
        if path.is_file():
            try:
                rows[file] = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: unreadable line ({e.msg})") from None
    config = run / "config.yaml"
    per_step = samples_per_step(yaml.safe_load(config.read_text()) or {}) if config.is_file() else None
    return Curves(name or run.name, rows, per_step)


def run_colors(names) -> dict[str, str]:
    """One colour per name, in order (tab10, then tab20): the same name, the same colour in every
    figure of one call."""
    palette = [f"C{i}" for i in range(10)] + [f"tab20:{i}" for i in range(1, 20, 2)]
    out = {}
    for i, name in enumerate(names):
        c = palette[i % len(palette)]
        if c.startswith("tab20:"):
            import matplotlib

            c = matplotlib.colormaps["tab20"](int(c.split(":")[1]))
        out[name] = c
    return out


def marker_of(colors: dict, name: str) -> str:
    """The marker of ``name``: by its place in ``colors``, so it matches in every figure."""
    return MARKERS[list(colors).index(name) % len(MARKERS)] if name in colors else "o"


def plot_quantity(runs: list[Curves], colors: dict, file: str, key: str, ylabel: str,
                  path: Path, baselines: dict[str, float] | None = None) -> bool:
    """One figure: ``key`` vs step and vs samples drawn, one line per run; False if no run has it."""
    plt = require_matplotlib()
    have = [r for r in runs if r.series(file, key)[0]]
    if not have:
        return False
    fig, (by_step, by_samples) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for run in have:                      # a marker per run too: coinciding lines stay apart
        steps, values = run.series(file, key)
        style = dict(color=colors[run.name], marker=marker_of(colors, run.name), ms=4, lw=1.2,
                     markevery=max(1, len(steps) // 12), fillstyle="none")
        by_step.plot(steps, values, label=run.name, **style)
        if run.samples_per_step:
            by_samples.plot([s * run.samples_per_step for s in steps], values, **style)
    for name, value in (baselines or {}).items():
        for ax in (by_step, by_samples):
            ax.axhline(value, color=colors.get(name, "gray"), ls="--", lw=1)
        by_step.plot([], [], color=colors.get(name, "gray"), ls="--", label=f"{name} (start)")
    by_step.set(xlabel="optimizer step", ylabel=ylabel)
    by_samples.set(xlabel="samples drawn (sequences per step x steps; offline: rows read)")
    missing = [r.name for r in have if not r.samples_per_step]
    if missing:
        by_samples.set_title(f"not shown (no train config): {', '.join(missing)}", fontsize=7)
    absent = [r.name for r in runs if r not in have]
    if absent:
        by_step.set_title(f"{key} not logged by: {', '.join(absent)}", fontsize=7)
    from matplotlib.ticker import MaxNLocator

    for ax in (by_step, by_samples):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(left=0)                              # training starts at step 0
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def plot_runs(runs: dict[str, str | Path], out_dir: str | Path, colors: dict | None = None,
              eval_name: str = "eval_reward", eval_label: str | None = None,
              baselines: dict[str, float] | None = None) -> list[Path]:
    """``reward.png``, ``kl.png`` and ``<eval_name>.png`` (where some run evaluated) in
    ``out_dir`` for ``runs`` ({legend name: run dir}); returns the paths written.
    ``baselines`` ({name: value}) are dashed lines on the held-out figure (the demo's SFT gold)."""
    curves = [read_run(path, name) for name, path in runs.items()]
    colors = colors or run_colors(runs)
    out, written = Path(out_dir), []
    for stem, file, key, ylabel in QUANTITIES:
        if file == "eval.jsonl":
            stem, ylabel = eval_name, eval_label or ylabel
        path = out / f"{stem}.png"
        extra = baselines if file == "eval.jsonl" else None
        if plot_quantity(curves, colors, file, key, ylabel, path, extra):
            written.append(path)
    return written


def plot_points(points: dict[str, tuple[float, float]], colors: dict, xlabel: str, ylabel: str,
                title: str, path: Path) -> None:
    """A scatter of one point per policy ({name: (x, y)}), colour and marker as in the curves
    (hollow, so coinciding points stay visible), each named in a legend outside the axes (no
    labels drawn over each other)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, (x, y) in points.items():
        ax.plot([x], [y], ls="none", color=colors.get(name, "gray"), ms=8, mew=1.5, label=name,
                marker=marker_of(colors, name), fillstyle="none")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    save_figure(fig, path)


@dataclasses.dataclass(frozen=True)
class PlotConfig:
    """`scorealign plot RUN_DIR [RUN_DIR ...]`: reward, KL and held-out reward of runs, against
    the optimizer step and the samples drawn, one colour per run."""

    runs: tuple[str, ...] = ()  # run directories (given as positional arguments)
    output_dir: str = "runs/plots"  # where reward.png, kl.png and eval_reward.png are written


def main(argv: list[str]) -> int:
    """``scorealign plot RUN_DIR [RUN_DIR ...] [--output_dir DIR]``."""
    usage = "scorealign plot RUN_DIR [RUN_DIR ...] [--output_dir DIR]"
    n = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    cfg = config_from_argv(PlotConfig, ["--runs", ",".join(argv[:n]), *argv[n:]] if n else argv,
                           usage)
    if cfg is None:
        return 0
    if not cfg.runs:
        raise ConfigError(f"no run directory given; usage: {usage}")
    names = [Path(r).name or r for r in cfg.runs]
    if len(set(names)) < len(names):                    # same leaf name: use the whole path
        names = list(cfg.runs)
    require_matplotlib()
    written = plot_runs(dict(zip(names, cfg.runs)), cfg.output_dir)
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
