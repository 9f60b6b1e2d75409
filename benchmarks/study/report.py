"""``study.md``: settings, one table per experiment (mean ± 95% interval over seeds), the
paper's claim beside the measured ranking, a verdict per claim, plots, and a closing note."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from scorealign.core.io import atomic_write_text
from scorealign.eval.reports import markdown_table

from . import figures
from .plan import CLAIMS, EXPERIMENTS, LANGS, PRESETS, SAMPLES_PER_STEP, Cell, run_of
from .runner import load, selection
from .stats import combine, comparison, describe, fmt, mean_ci

TITLES = {"e1": "2402.14740: REINFORCE-style methods, PPO and RAFT (proxy reward, gold judge)",
          "e2-gold": "2406.19185: CoPG, IPO, DPO with the gold judge as the training scorer "
                     "(the paper's \"learned reward considered as ground truth\")",
          "e2-proxy": "2406.19185, proxy variant: the same methods trained on the proxy, "
                      "judged by gold",
          "e3": "2407.02552: English-only vs all-language training, per language"}
COLUMNS = [("win vs SFT", "win_vs_sft"), ("gold", "gold"), ("KL to start", "kl"),
           ("gold along samples", "curve_mean"), ("harmful", "harmful"),
           ("in-language", "in_language")]


def record_invocation(root: Path, argv: list[str], t0: float) -> None:
    """Append this invocation (command, machine, load, wall time) to ``RESULTS/runs.json``."""
    path = root / "runs.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    runs.append({"command": " ".join(["python benchmarks/study.py", *argv]),
                 "start": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
                 "wall_s": time.time() - t0, "machine": machine(),
                 "load_avg": os.getloadavg()})
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(runs, indent=1))


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    return (f"{platform.machine()} {cpu}, {os.cpu_count()} CPU cores, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def study_seeds(todo: list[Cell]) -> list[int]:
    """The seeds of the main cells (the selection seed's cells carry an lr)."""
    return sorted({c.seed for c in todo if c.kind == "run" and c.lr is None})


def collect(root: Path, seeds: list[int]) -> dict[str, dict[int, dict]]:
    """{run name: {seed: result}} over ``seeds`` (main cells only)."""
    out: dict[str, dict] = {}
    for exp in EXPERIMENTS.values():
        for run in exp:
            for seed in seeds:
                r = load(root, Cell("run", seed, run))
                if r is not None:
                    out.setdefault(run.name, {})[seed] = r
    return out


def values(results: dict, run_name: str, metric: str, seeds: list[int] | None = None) -> list[float]:
    got = results.get(run_name, {})
    keep = seeds if seeds is not None else sorted(got)
    return [got[s]["final"][metric] for s in keep if s in got and got[s]["final"].get(metric)
            is not None]


def judge(claim, results: dict) -> tuple[str, list[str], list[dict]]:
    """(overall verdict, one line per comparison, the comparisons) of a claim."""
    lines, verdicts, comps = [], [], []
    for a, b in claim.pairs:
        ra = run_of(claim.experiment, a).name
        if b is None:
            c = comparison(values(results, ra, claim.metric), claim.threshold)
            label = f"{a} − {claim.threshold:g}"
        else:
            rb = run_of(claim.experiment, b).name
            seeds = sorted(set(results.get(ra, {})) & set(results.get(rb, {})))
            c = comparison(values(results, ra, claim.metric, seeds),
                           values(results, rb, claim.metric, seeds))
            label = f"{a} − {b}"
        verdicts.append(c["verdict"])
        comps.append(c)
        lines.append(f"  - {label} ({claim.metric}): {describe(c)} → {c['verdict']}")
    return combine(verdicts), lines, comps


def ranking(exp: str, results: dict, metric: str) -> str:
    label = (lambda r: f"{r.method}.{r.langs}") if exp == "e3" else (lambda r: r.method)
    rows = [(label(r), mean_ci(values(results, r.name, metric))[0]) for r in EXPERIMENTS[exp]
            if values(results, r.name, metric)]
    rows.sort(key=lambda x: -x[1])
    return " > ".join(f"{n} {v:.3f}" for n, v in rows) or "(no results)"


def experiment_table(exp: str, results: dict) -> str:
    if exp == "e3":
        cols = [(f"win vs SFT {x}", f"win_vs_sft/{x}") for x in (*LANGS, "non_en")]
        cols.append(("win vs SFT all", "win_vs_sft"))
    else:
        cols = COLUMNS
    rows = [[r.name, *(fmt(values(results, r.name, key)) for _, key in cols)]
            for r in EXPERIMENTS[exp]]
    return markdown_table(["run (method.reward.languages)", *(c for c, _ in cols)], rows)


def section(exp: str, results: dict, images: dict[str, str]) -> tuple[str, list[tuple]]:
    parts, verdicts = [f"## {TITLES[exp]}\n", experiment_table(exp, results)], []
    for claim in (c for c in CLAIMS if c.experiment == exp):
        verdict, lines, comps = judge(claim, results)
        verdicts.append((claim, verdict, comps))
        parts.append(f"**Paper ({claim.paper})**: {claim.text}.  \n"
                     f"**Measured ranking** ({claim.metric}): "
                     f"{ranking(exp, results, claim.metric)}.  \n"
                     f"**Verdict: {verdict}.**\n\n" + "\n".join(lines) + "\n")
    parts += [f"![{name}]({path})\n" for name, path in images.items()]
    return "\n".join(parts), verdicts


def header(root: Path, preset_name: str, budget: str, sel: dict | None, seeds: list[int]) -> str:
    p = PRESETS[preset_name]
    runs = json.loads((root / "runs.json").read_text()) if (root / "runs.json").exists() else []
    wall = sum(r["wall_s"] for r in runs)
    done = [json.loads(f.read_text()) for f in sorted((root / "cells").glob("**/*.json"))]
    cell_wall = sum(d.get("cell_s", 0.0) for d in done) / 3600
    cell_cpu = sum(sum(d.get("cpu_s", {}).values()) for d in done) / 3600
    lines = [f"# The papers' claims on {p['model']}, with seeds and 95% intervals (issue 25)\n",
             "Generated by: " + ("; then ".join(f"`{r['command']}` ({r['start']}, "
                                                 f"{r['wall_s'] / 60:.1f} min, load "
                                                 f"{r['load_avg'][0]:.1f})" for r in runs)
                                 or "(no run recorded)") + ".  ",
             f"Machine: {runs[-1]['machine'] if runs else machine()}. Wall time, all "
             f"invocations: {wall / 3600:.2f} h; {len(done)} cells done, {cell_wall:.2f} h of "
             f"wall and {cell_cpu:.2f} h of CPU summed over cells. Budget stated up front: "
             f"{budget}.\n",
             f"Setting: preset `{preset_name}`; seeds {', '.join(map(str, seeds))}; "
             f"{p['n_train']} train / {p['n_eval']} eval chat prompts (en fr es ru) per seed; "
             f"SFT {p['sft_steps']} steps; every method {p['steps']} steps x "
             f"{SAMPLES_PER_STEP} samples = {p['steps'] * SAMPLES_PER_STEP} generated (or read) "
             f"samples from the seed's SFT policy; {p['max_new_tokens']} new tokens; temperature "
             f"0.7; held-out gold curve on {p['curve_prompts']} eval prompts at "
             f"{p['curve_points']} points. Win vs SFT: per eval prompt 1 / ½ / 0 against the "
             f"SFT start's reply (same sampling draws), mean over prompts; then mean ± 95% "
             f"Student-t interval over seeds (`study/stats.py`).\n"]
    if sel is not None and sel["table"]:
        rows = [[lr, *(f"{v:.3f}" for v in by.values()), f"{sum(by.values()) / len(by):.3f}"]
                for lr, by in sel["table"].items()]
        methods = list(next(iter(sel["table"].values())))
        lines.append(f"**Shared hyperparameters, chosen once on seed {p['select_seed']}** (not "
                     f"a study seed): β = {p['beta']} for every method (KL coefficient, DPO's "
                     f"β, IPO's τ); learning rate **{sel['lr']:g}**, the best mean final gold "
                     f"score of {', '.join(methods)} over {', '.join(map(str, p['lrs']))}. "
                     "Nothing is tuned per method.\n\n" + markdown_table(
                         ["lr", *(f"gold {m}" for m in methods), "mean"], rows))
    return "\n".join(lines)


BRIEF = {"e1": "win_vs_sft", "e2-gold": "gold", "e2-proxy": "gold", "e3": "win_vs_sft/non_en"}


def brief_tables(results: dict) -> str:
    """The three experiments in one line per run: the metric their claims are judged on."""
    parts = []
    for title, exps in (("2402.14740", ("e1",)), ("2406.19185", ("e2-gold", "e2-proxy")),
                        ("2407.02552", ("e3",))):
        rows = [[exp, r.name, BRIEF[exp], fmt(values(results, r.name, BRIEF[exp]))]
                for exp in exps for r in EXPERIMENTS[exp]]
        parts.append(f"**{title}**\n\n" + markdown_table(
            ["experiment", "run", "metric", "mean ± 95% CI"], rows))
    return "\n".join(parts)


def closing(verdicts: list[tuple], results: dict, n_seeds: int) -> str:
    """The three tables in brief, the verdicts, and the interval widths that bound what this
    scale can separate."""
    rows = []
    for claim, verdict, comps in verdicts:
        halves = [c["half"] for c in comps if c["half"] is not None]
        widest = f"±{max(halves):.3f}" if halves else "-"
        separated = sum(c["verdict"] in ("reproduced", "not reproduced") for c in comps)
        rows.append([claim.paper, claim.short, verdict, f"{separated} of {len(comps)}", widest])
    return ("## Closing note\n\n" + brief_tables(results) + "\n**Verdicts**\n\n"
            + markdown_table(["paper", "claim", "verdict", "comparisons separated",
                              "widest 95% half-width of a paired difference"], rows)
            + "\nA comparison separates two methods only when its paired difference exceeds "
            "its interval half-width (last column, in the claim's metric): differences "
            f"smaller than that are what {n_seeds} seed(s) of this budget, this model and "
            "these eval prompts cannot resolve, and rankings inside that band are not evidence "
            "either way. Where a comparison is separated, its line under the experiment "
            "gives the difference and interval.\n")


def write_report(root: Path, preset_name: str, todo: list[Cell], path: Path, budget: str) -> None:
    seeds = study_seeds(todo)
    results, sel = collect(root, seeds), selection(root, preset_name, todo)
    images = figures.draw(results, preset_name, path.parent / f"{path.stem}_img")
    rel = {k: f"{path.stem}_img/{v.name}" for k, v in images.items()}
    body, verdicts = [header(root, preset_name, budget, sel, seeds)], []
    for exp in EXPERIMENTS:
        text, v = section(exp, results, {k: p for k, p in rel.items() if k.startswith(exp)})
        body.append(text)
        verdicts += v
    body.append(closing(verdicts, results, len(seeds)))
    atomic_write_text(path, "\n".join(body))
