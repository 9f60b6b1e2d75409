"""Running one cell: a seed's ``prep`` or one training run, through the real demo's stages
(``scorealign.recipes.real_demo``: task data, SFT start, offline data, method configs) and its
gold evaluation (``scorealign.eval.chat_report``). Each cell's result is one JSON file written
atomically; a cell's working files live under ``work/seed<N>/`` and a run's model directory is
deleted once the run is judged (its ``metrics.jsonl`` and ``eval.jsonl`` are kept)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from scorealign.core.io import atomic_write_text

from .plan import LANGS, PRESETS, SAMPLES_PER_STEP, Cell

NON_EN = ("fr", "es", "ru")


@dataclasses.dataclass(frozen=True)
class SeedConfig:
    """What ``real_demo``'s stage functions read from their config (duck-typed)."""

    preset: dict
    seed: int
    lr: float
    beta: float
    sft_lr: float = 5e-5


def seed_config(preset_name: str, seed: int, lr: float) -> SeedConfig:
    p = PRESETS[preset_name]
    keys = ("n_train", "n_eval", "sft_steps", "steps", "max_new_tokens")
    return SeedConfig({k: p[k] for k in keys}, seed, lr, p["beta"])


class Stopwatch:
    """Wall and CPU seconds (``time.process_time``: all threads of this process) per stage."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.t, self.c = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        t, c = time.perf_counter(), time.process_time()
        self.wall[name], self.cpu[name] = t - self.t, c - self.c
        self.t, self.c = t, c


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=1, default=str))


def run_prep(preset_name: str, seed: int, work: Path) -> dict:
    """Task split, base model, SFT policy, offline data (all languages: proxy- and gold-scored;
    English only: proxy-scored), and the SFT policy's gold evaluation."""
    from scorealign.core.models import resolve_model_path
    from scorealign.data.formats import write_jsonl
    from scorealign.eval import chat_report
    from scorealign.eval.chat_gold import ChatGoldReward, ChatProxyReward
    from scorealign.recipes import real_demo

    if work.exists():                       # an interrupted prep starts over
        shutil.rmtree(work)
    cfg, clock = seed_config(preset_name, seed, 0.0), Stopwatch()
    _, eval_rows = real_demo.build_data(cfg, work / "data")
    base = resolve_model_path(PRESETS[preset_name]["model"], work, seed, True)
    sft = real_demo.run_demo_sft(cfg, base, work / "data", work / "sft")
    shutil.rmtree(work / "sft" / "checkpoints", ignore_errors=True)   # optimizer state: not needed
    clock.lap("sft")
    real_demo.offline_samples(cfg, work / "data", sft)
    real_demo.score_offline(work / "data", ChatProxyReward())
    real_demo.score_offline(work / "data", ChatGoldReward(), "_gold")
    english = [r for r in read_jsonl(work / "data" / "train_prompts.jsonl") if r["language"] == "en"]
    write_jsonl(work / "data_en" / "train_prompts.jsonl", english)
    real_demo.offline_samples(cfg, work / "data_en", sft)
    real_demo.score_offline(work / "data_en", ChatProxyReward())
    clock.lap("offline")
    p = cfg.preset
    sft_eval = chat_report.evaluate({"sft": sft}, sft, eval_rows, p["max_new_tokens"],
                                    real_demo.TEMPERATURE, seed)["sft"]
    clock.lap("eval")
    pairs = {name: len(read_jsonl(work / d / f)) for name, d, f in (
        ("pairs", "data", "pairs.jsonl"), ("pairs_gold", "data", "pairs_gold.jsonl"),
        ("pairs_en", "data_en", "pairs.jsonl"))}
    return {"seed": seed, "base": base, "sft": sft, "judged": sft_eval["judged"],
            "texts": sft_eval["texts"], "pairs": pairs, "wall_s": clock.wall,
            "cpu_s": clock.cpu}


def train_config(preset_name: str, cell: Cell, lr: float, work: Path, sft: str):
    """The run's loop config: ``real_demo.method_config`` with the run's data (reward-scored
    offline data, English-only prompts) and the held-out gold curve added."""
    from scorealign.errors import ConfigError
    from scorealign.recipes import real_demo

    p, run = PRESETS[preset_name], cell.run
    cfg = seed_config(preset_name, cell.seed, lr)
    data = work / ("data_en" if run.langs == "en" else "data")
    if run.method in real_demo.OFFLINE:
        stem = real_demo.OFFLINE[run.method].removesuffix(".jsonl")
        dataset = data / f"{stem}{'_gold' if run.reward == 'gold' else ''}.jsonl"
        if not dataset.read_text().strip():
            raise ConfigError(f"{dataset}: no pair of SFT samples was ranked apart")
    else:
        dataset = data / "train_prompts.jsonl"
    tc = real_demo.method_config(cfg, run.method, work, sft)
    return dataclasses.replace(
        tc, dataset=str(dataset), output_dir=str(work / "runs" / cell.id.split("/")[1]),
        eval_every=max(1, p["steps"] // p["curve_points"]), eval_prompts=p["curve_prompts"],
        eval_dataset=str(work / "data" / "eval_prompts.jsonl"))


def final_metrics(rows: list[dict], sft_judged: list[dict], res: dict) -> dict:
    """Gold, KL to the start, win-rate vs the SFT start (overall, per language, non-English)."""
    from scorealign.eval import chat_report

    s = chat_report.summarise({"sft": {"judged": sft_judged, "kl": 0.0}, "run": res}, rows)["run"]
    out = {"gold": s["gold"]["rate"], "kl": s["kl"], "win_vs_sft": s["win_vs_sft"][0],
           "harmful": s["harmful"]["rate"], "in_language": s["in_language"]["rate"]}
    for name, langs in [(x, (x,)) for x in LANGS] + [("non_en", NON_EN)]:
        keep = [i for i, r in enumerate(rows) if r["language"] in langs]
        mine, sft = [res["judged"][i] for i in keep], [sft_judged[i] for i in keep]
        out[f"win_vs_sft/{name}"] = chat_report.win_rate(mine, sft)[0] if keep else None
        out[f"gold/{name}"] = (sum(j["score"] for j in mine) / len(mine)) if keep else None
    return out


def run_cell(preset_name: str, cell: Cell, lr: float, work: Path, logs: Path, prep: dict) -> dict:
    """Train the cell's run from the seed's SFT policy, judge it, delete its model."""
    from scorealign.eval import chat_report
    from scorealign.eval.chat_gold import ChatGoldReward, ChatProxyReward
    from scorealign.recipes.real_demo import TEMPERATURE
    from scorealign.train.loop import train

    tc = train_config(preset_name, cell, lr, work, prep["sft"])
    out = Path(tc.output_dir)
    if out.exists():                        # an interrupted run starts over
        shutil.rmtree(out)
    reward = ChatGoldReward() if cell.run.reward == "gold" else ChatProxyReward()
    clock = Stopwatch()
    train(tc, reward=reward, eval_reward=ChatGoldReward())
    clock.lap("train")
    rows = read_jsonl(work / "data" / "eval_prompts.jsonl")
    res = chat_report.evaluate({"run": str(out / "final")}, prep["sft"], rows, tc.max_new_tokens,
                               TEMPERATURE, cell.seed)["run"]
    clock.lap("eval")
    steps_s = [m["time/step_s"] for m in read_jsonl(out / "metrics.jsonl") if "time/step_s" in m]
    curve = [{"step": e["step"], "samples": e["step"] * SAMPLES_PER_STEP, "gold": e["eval/reward"]}
             for e in read_jsonl(out / "eval.jsonl")]
    logs.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "eval.jsonl", "config.yaml"):
        if (out / name).exists():
            shutil.copy(out / name, logs / name)
    shutil.rmtree(out)
    later = [c["gold"] for c in curve if c["step"] > 0]
    return {"cell": cell.id, "seed": cell.seed, "run": dataclasses.asdict(cell.run),
            "lr": lr, "steps": tc.steps, "samples": tc.steps * SAMPLES_PER_STEP, "curve": curve,
            "final": {**final_metrics(rows, prep["judged"], res),
                      "curve_mean": sum(later) / max(len(later), 1)},
            "texts": res["texts"], "wall_s": clock.wall, "cpu_s": clock.cpu,
            "step_s": steps_s}
