"""The study's time budget, from per-step costs measured on the real model (one thread).

Measured with ``python benchmarks/study.py --preset measure`` (one prep with 4 SFT steps and 2 x
64 offline samples, one rloo-k4 run of 4 steps with 3 held-out evaluations of 48 prompts, and
final evaluations of 128 prompts), on this project's 2-core machine while other jobs ran (load
average 7-10): the costs below are CPU seconds of the study's process (``time.process_time``,
recorded per stage in each cell's JSON), which is what one idle core would spend; the wall
time there was 2.9-3.4x the CPU time (benchmarks/README.md has the numbers). Steps of methods
not measured are scaled from rloo-k4 by the ratios of the real demo's measured full run
(docs/demo.md: rloo-k4 316 s, reinforce 578 s, copg-offline 207 s, dpo 153 s for 12 steps
each, same load); PPO, which the demo did not time, is estimated at 2 x reinforce (a value
model trained beside the policy, 2 epochs).
"""

from __future__ import annotations

from .plan import PRESETS, Cell

# CPU seconds on one thread, SmolLM2-135M, 32 new tokens (see the module docstring)
COST = {
    "fixed": 20.0,          # per training run or SFT: load policy + reference, save final/
    "sft_step": 8.5,        # one SFT step of 8 demonstrations (4 steps + fixed: 53.8 s)
    "sample": 0.53,         # one offline sample, sampled and scored twice (128 samples: 67.4 s)
    "curve_prompt": 0.9,    # one held-out reply judged by gold during training (144: ~130 s)
    "eval_prompt": 1.06,    # one final-evaluation reply, its KL forward, model loads (128: 135 s)
}
STEP = {"rloo-k4": 19.0}    # one step of 16 samples (4 steps: 234 s of 678 s wall, CPU share 0.32)
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
            f"{workers} worker(s) of one thread each on idle cores (CPU seconds measured on the "
            f"real model, study/budget.py)")
