"""`scorealign demo`: the whole pipeline on the embedded multilingual task, offline, on a CPU.

  1. task      prompts in en/fr/es/ru of three kinds (``scorealign.tasks``), train/eval split
  2. base      a tokenizer trained on the task's text and a random-weight tiny Llama
  3. SFT       on noisy demonstrations (wrong answers, wrong languages, harmful compliance)
  4. reward    a PROXY Bradley-Terry reward model on gold-labelled pairs with 10% label noise
  5. align     the SFT policy with every method against the proxy reward, the same budget of
               generated samples each; offline methods (CoPG offline, DPO, IPO) get pairs of the
               SFT policy's samples, scored (CoPG) or ranked (DPO, IPO) by the proxy reward
  6. evaluate  every policy by the GOLD judge the methods never saw (``demo_report.py``)

Hyperparameters are the same for every method except where a method has its own (k, beta of
DPO/IPO, PPO's epochs): nothing is tuned per method. Outputs in ``output_dir``: ``report.md``,
``results.json``, ``reward.png``, ``kl.png``, ``gold.png`` (each against step and samples drawn,
through ``eval/plots.py``, the code of ``scorealign plot``), ``reward_vs_kl.png`` and one run
directory per stage.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from ..core.config import config_from_argv
from ..data.formats import write_jsonl
from ..train.config import TrainConfig

PRESETS = {  # what --quick changes; everything else is shared
    "full": dict(hidden=128, n_train=384, n_eval=128, sft_steps=200, rm_pairs=1024, budget=1536),
    "quick": dict(hidden=64, n_train=192, n_eval=64, sft_steps=120, rm_pairs=384, budget=768),
}

# name -> the loop's settings; every online method draws 32 samples per step.
METHODS = {
    "pg": dict(algo="pg", k=1, prompts_per_step=32),
    "reinforce": dict(algo="reinforce", k=1, prompts_per_step=32),
    "rloo-k2": dict(algo="rloo", k=2, prompts_per_step=16),
    "rloo-k4": dict(algo="rloo", k=4, prompts_per_step=8),
    "ppo": dict(algo="ppo", k=1, prompts_per_step=32, num_epochs=2, num_minibatches=2),
    "raft-k4": dict(algo="raft", k=4, prompts_per_step=8, beta=0.0),
    "copg-online": dict(algo="copg", k=2, prompts_per_step=16),
    "copg-offline": dict(algo="copg", source="offline", k=2, prompts_per_step=16),
    "dpo": dict(algo="dpo", prompts_per_step=16),
    "ipo": dict(algo="ipo", prompts_per_step=16),
}
OFFLINE = ("copg-offline", "dpo", "ipo")
SAMPLES_PER_STEP = 32


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """`scorealign demo`: SFT -> reward model -> every alignment method -> gold evaluation."""

    quick: bool = False  # the small preset (half the prompts and samples, a narrower model; times in docs/demo.md)
    methods: tuple[str, ...] = tuple(METHODS)  # which alignment methods to run
    seed: int = 0  # task, models, sampling: the same seed gives the same table
    lr: float = 1e-4  # alignment learning rate, every method
    beta: float = 0.1  # KL coefficient of every method (DPO: its beta; IPO: its tau)
    output_dir: str = "runs/demo"  # everything the demo writes
    overwrite: bool = False  # a non-empty output_dir is moved aside to output_dir.old-<time> (default: refuse; see README, Reliability)

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            from ..errors import ConfigError

            raise ConfigError(f"methods: unknown {unknown}; choose from {', '.join(METHODS)}")

    @property
    def preset(self) -> dict:
        return PRESETS["quick" if self.quick else "full"]


def stage(number: int, text: str, t_start: float) -> None:
    print(f"\n[{number}/6] {text}  (elapsed {time.perf_counter() - t_start:.0f} s)", flush=True)


def build_task(cfg: DemoConfig, out: Path):
    """Stages 1-2: rows, data files, tokenizer and base model. -> (train, eval rows, base dir)."""
    from ..core.tiny import build_tiny_model
    from ..tasks import TASK_VOCAB_SIZE, demonstrations, preference_pairs, task_corpus, task_splits

    p = cfg.preset
    train_rows, eval_rows = task_splits(cfg.seed, p["n_train"], p["n_eval"])
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_jsonl(data / "train_prompts.jsonl", train_rows)
    write_jsonl(data / "eval_prompts.jsonl", eval_rows)
    write_jsonl(data / "sft.jsonl", demonstrations(train_rows, cfg.seed, per_prompt=2))
    write_jsonl(data / "rm_pairs.jsonl", preference_pairs(train_rows, cfg.seed, p["rm_pairs"], 0.1))
    base = build_tiny_model(out / "base_model", hidden=p["hidden"], layers=2, heads=4,
                            vocab_size=TASK_VOCAB_SIZE, texts=task_corpus(cfg.seed), seed=cfg.seed)
    return train_rows, eval_rows, base


def policy_pairs(cfg: DemoConfig, out: Path, sft_model: Path) -> None:
    """Gold-labelled pairs of the SFT policy's own samples (4 per train prompt, 10% label noise),
    appended to the reward model's data: as in RLHF, the preference labels are collected on the
    policy's outputs, so the proxy has seen the kind of text it will score."""
    from ..data.formats import group_by_prompt
    from ..data.readers import load_rows
    from ..tasks import label_pairs
    from .sample_score import SampleConfig, run_sample

    data = out / "data"
    run_sample(SampleConfig(model=str(sft_model), dataset=str(data / "train_prompts.jsonl"), k=4,
                            max_new_tokens=16, batch_size=64, seed=cfg.seed + 2,
                            output=str(data / "rm_samples.jsonl")))
    groups = group_by_prompt(load_rows(data / "rm_samples.jsonl"))
    rows = [{k: v for k, v in g[0].items() if k not in ("completion", "sample_index", "truncated")}
            for g in groups]
    pairs = label_pairs(rows, [[r["completion"] for r in g] for g in groups], cfg.seed, 0.1, 4)
    with open(data / "rm_pairs.jsonl", "a") as f:
        f.writelines(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)


def offline_data(cfg: DemoConfig, out: Path, sft_model: Path, reward_model: Path) -> None:
    """Stage 5 input of the offline methods: ``budget`` samples of the SFT policy (2 per prompt),
    scored by the proxy reward (``scored.jsonl``) and ranked into pairs (``pairs.jsonl``)."""
    from ..data.formats import group_by_prompt
    from ..data.readers import load_rows
    from .sample_score import SampleConfig, ScoreConfig, run_sample, run_score

    data, n_prompts = out / "data", cfg.preset["budget"] // 2
    prompts = load_rows(data / "train_prompts.jsonl")
    rows = [{k: v for k, v in prompts[i % len(prompts)].items() if not k.startswith("_")}
            for i in range(n_prompts)]
    write_jsonl(data / "offline_prompts.jsonl", rows)
    run_sample(SampleConfig(model=str(sft_model), dataset=str(data / "offline_prompts.jsonl"), k=2,
                            max_new_tokens=16, batch_size=64, seed=cfg.seed + 1,
                            output=str(data / "samples.jsonl")))
    run_score(ScoreConfig(dataset=str(data / "samples.jsonl"), rewards=(f"model:{reward_model}",),
                          output=str(data / "scored.jsonl")))
    pairs = []
    for group in group_by_prompt(load_rows(data / "scored.jsonl")):
        for a, b in zip(group[0::2], group[1::2]):
            if a["score"] != b["score"]:
                win, lose = (a, b) if a["score"] > b["score"] else (b, a)
                pairs.append({"prompt": a["prompt"], "chosen": win["completion"],
                              "rejected": lose["completion"]})
    write_jsonl(data / "pairs.jsonl", pairs)


def method_config(cfg: DemoConfig, name: str, out: Path, sft_model: Path, reward_model: Path
                  ) -> TrainConfig:
    """The loop's config of one method: online methods get budget / 32 steps of 32 samples;
    offline ones two passes over their data (as in the CoPG paper)."""
    spec, data, p = dict(METHODS[name]), out / "data", cfg.preset
    if name in OFFLINE:        # scored.jsonl: 2 rows per prompt; pairs.jsonl: 1 row per pair
        path = data / ("scored.jsonl" if name == "copg-offline" else "pairs.jsonl")
        groups = len(path.read_text().splitlines()) // (2 if name == "copg-offline" else 1)
        spec.update(dataset=str(path), steps=max(1, 2 * groups // spec["prompts_per_step"]))
    else:
        spec.update(dataset=str(data / "train_prompts.jsonl"),
                    steps=p["budget"] // SAMPLES_PER_STEP)
    steps = spec.pop("steps")
    return TrainConfig(**{"beta": cfg.beta, **spec}, model=str(sft_model), steps=steps, lr=cfg.lr,
                       rewards=(f"model:{reward_model}",), micro_batch_size=32, max_new_tokens=16,
                       seed=cfg.seed, eval_every=max(1, steps // 4), eval_prompts=p["n_eval"],
                       eval_dataset=str(data / "eval_prompts.jsonl"), output_dir=str(out / name),
                       save_every=0)   # final weights only: a demo is not resumed


def run_demo(cfg: DemoConfig) -> Path:
    from ..core.rundir import claim
    from ..eval import demo_report
    from ..eval.reports import require_matplotlib
    from ..tasks import GoldReward
    from .reward_model import RewardModelConfig, train_reward_model
    from .sft import SFTConfig, run_sft

    out, t0 = Path(cfg.output_dir), time.perf_counter()
    require_matplotlib()                        # the plots are promised: check before any work
    claim(out, cfg.overwrite)                   # refuses a non-empty output_dir without overwrite
    p = cfg.preset
    stage(1, f"task: {p['n_train']} train / {p['n_eval']} eval prompts, en fr es ru", t0)
    _, eval_rows, base = build_task(cfg, out)
    stage(2, f"SFT of a random tiny Llama (hidden {p['hidden']}) on noisy demonstrations", t0)
    sft_run = run_sft(SFTConfig(model=str(base), dataset=str(out / "data" / "sft.jsonl"),
                                num_epochs=p["sft_steps"] * 32 / (2 * p["n_train"]), batch_size=32,
                                micro_batch_size=32, lr=3e-3, max_completion_tokens=16,
                                seed=cfg.seed, output_dir=str(out / "sft"), save_every=0))
    sft_model = sft_run / "final"
    stage(3, "proxy reward model (Bradley-Terry, gold-labelled pairs, 10% label noise)", t0)
    policy_pairs(cfg, out, sft_model)
    rm = train_reward_model(RewardModelConfig(model=str(sft_model), dataset=str(
        out / "data" / "rm_pairs.jsonl"), epochs=4, batch_size=16, lr=1e-3, max_length=64,
        seed=cfg.seed, output_dir=str(out / "reward_model")))
    reward_model = out / "reward_model" / "final"
    stage(4, "offline data: SFT samples scored / ranked by the proxy reward", t0)
    if any(m in OFFLINE for m in cfg.methods):
        offline_data(cfg, out, sft_model, reward_model)
    stage(5, f"aligning with {len(cfg.methods)} methods", t0)
    wall = {}
    for i, name in enumerate(cfg.methods, 1):
        eta = (sum(wall.values()) / len(wall) * (len(cfg.methods) - i + 1)) if wall else None
        print(f"\n--- method {i}/{len(cfg.methods)}: {name}"
              + (f"  (about {eta:.0f} s left for alignment)" if eta else ""), flush=True)
        t = time.perf_counter()
        from ..train.loop import train

        train(method_config(cfg, name, out, sft_model, reward_model), eval_reward=GoldReward())
        wall[name] = time.perf_counter() - t
    stage(6, "gold evaluation of every policy", t0)
    results = demo_report.evaluate_all(cfg, out, eval_rows, sft_model, wall,
                                       rm_accuracy=rm.get("eval/accuracy"))
    table = demo_report.write_report(cfg, out, results, time.perf_counter() - t0)
    print("\n" + table + f"\n\nreport: {out / 'report.md'}  (total {time.perf_counter() - t0:.0f} s)")
    return out


def main(argv: list[str]) -> int:
    """``scorealign demo [--quick] [--key value ...]``."""
    cfg = config_from_argv(DemoConfig, argv, "scorealign demo [--quick] [--key value ...]")
    if cfg is not None:
        run_demo(cfg)
    return 0
