"""The study's time budget, from per-step costs measured on the real model (one thread).

Measured with ``python benchmarks/study.py --preset measure`` (one seed's prep with 4 SFT steps
and one rloo-k4 run of 4 steps; benchmarks/README.md gives the run, its machine and its load).
Steps of methods not measured there are scaled from rloo-k4 by the ratios of the real demo's
measured full run (docs/demo.md: rloo-k4 316 s, reinforce 578 s, copg-offline 207 s, dpo 153 s
for 12 steps each, same load), and for PPO, which the demo did not time, by its extra value
model and second epoch (an estimate: 2 x reinforce).
"""

from __future__ import annotations

from .plan import PRESETS, Cell

# seconds, one thread, SmolLM2-135M, 32 new tokens (see the module docstring)
COST = {
    "fixed": 20.0,          # per training run: load policy + reference, save the final model
    "sft_step": 6.0,        # one SFT step of 8 demonstrations
    "sample": 0.5,          # one offline sample (sampling + proxy and gold scoring)
    "curve_prompt": 0.5,    # one held-out reply judged by gold during training
    "eval_prompt": 1.0,     # one final-evaluation reply (+ its KL forward, model loads)
}
STEP = {"rloo-k4": 26.0}    # one step of 16 samples; the others relative to rloo-k4 below
RATIO = {"rloo-k4": 1.0, "reinforce": 1.83, "pg": 1.83, "ppo": 3.66, "rloo-k2": 1.41,
         "copg-online": 1.41, "raft-k4": 0.9, "copg-offline": 0.66, "dpo": 0.48, "ipo": 0.48}


def step_seconds(method: str) -> float:
    return STEP["rloo-k4"] * RATIO[method]


def cell_seconds(preset_name: str, cell: Cell) -> float:
    """Estimated seconds of one cell on one thread."""
    p = PRESETS[preset_name]
    if p["model"] == "tiny":
        return 2.0
    if cell.kind == "prep":
        offline = 2 * p["steps"] * 16 * COST["sample"]            # all languages + English
        return (COST["fixed"] + p["sft_steps"] * COST["sft_step"] + offline
                + p["n_eval"] * COST["eval_prompt"])
    curve = (p["curve_points"] + 1) * p["curve_prompts"] * COST["curve_prompt"]
    return (COST["fixed"] + p["steps"] * step_seconds(cell.run.method) + curve
            + p["n_eval"] * COST["eval_prompt"])


def budget_text(preset_name: str, cells: list[Cell], workers: int) -> str:
    total = sum(cell_seconds(preset_name, c) for c in cells)
    runs = sum(c.kind == "run" for c in cells)
    return (f"{len(cells)} cells ({runs} training runs, {len(cells) - runs} preps); about "
            f"{total / 3600:.1f} h of one core, {total / workers / 3600:.1f} h wall with "
            f"{workers} worker(s) of one thread each")
