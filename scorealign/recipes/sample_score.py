"""Data tools: `scorealign sample` (k completions per prompt -> JSONL) and `scorealign score`
(add a reward to every prompt/completion row -> JSONL). Together they build an offline CoPG
dataset from a model and a reward source:

    scorealign sample sample.yaml     # rows: prompt, completion, sample_index, truncated, ...
    scorealign score score.yaml       # rows: prompt, completion, score, ... (data.load_scored)

Sampling uses the training sampler (``engine.generate.sample_rows``, over ``sample_prompts``)
with uniforms seeded per PROMPT ROW (``seed``, row index), so a prompt's k samples do not depend
on ``batch_size`` or on the other prompts of its batch. Outputs are written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..core.config import RewardBlock, SamplingBlock, config_from_argv
from ..core.models import load_causal_lm, load_tokenizer, quiet_transformers
from ..core.rundir import check_output_file
from ..data.formats import load_prompt_rows, load_sft, write_jsonl
from ..engine.generate import sample_rows
from ..errors import ConfigError
from ..rewards.sources import rewards_from_config, score_rows

# ------------------------------------------------------------------------------------ configs


@dataclasses.dataclass(frozen=True)
class SampleConfig(SamplingBlock):
    """`scorealign sample`: k completions per prompt from a model, written as JSONL."""

    model: str = ""  # causal LM to sample from: local path (e.g. a run's final/ dir) or hub id (required)
    dataset: str = "toy"  # prompts: .jsonl/.json/.parquet/.csv, a saved dataset dir, hub id, or 'toy'
    dataset_split: str = "train"  # split to read from a hub dataset or dataset dir
    prompt_field: str = "prompt"  # column holding the prompt (a string or chat messages)
    k: int = 4  # completions sampled per prompt
    max_new_tokens: int = 64  # completion length limit (rows that hit it have truncated=true)
    batch_size: int = 16  # prompts per generation call (batch = batch_size * k sequences)
    output: str = "samples.jsonl"  # output JSONL file
    overwrite: bool = False  # replace an existing output file (default: refuse)

    def __post_init__(self):
        super().__post_init__()
        if not self.model:
            raise ConfigError("model: required (a local model directory or hub id)")
        if self.k < 1:
            raise ConfigError(f"k={self.k}: must be >= 1")


@dataclasses.dataclass(frozen=True)
class ScoreConfig(RewardBlock):
    """`scorealign score`: add `score` from reward sources to prompt/completion rows."""

    dataset: str = ""  # rows with prompt + completion (or messages): .jsonl/.json/.parquet/.csv, dir or hub id (required)
    dataset_split: str = "train"  # split to read from a hub dataset or dataset dir
    batch_size: int = 64  # rows per reward call
    output: str = "scored.jsonl"  # output JSONL in the long format of offline CoPG (prompt, completion, score)
    overwrite: bool = False  # replace an existing output file (default: refuse)

    def __post_init__(self):
        super().__post_init__()
        if not self.dataset:
            raise ConfigError("dataset: required (rows with prompt and completion)")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size}: must be >= 1")


# ------------------------------------------------------------------------------------ sample


def run_sample(cfg: SampleConfig) -> Path:
    """Load the model and prompts, sample, write ``cfg.output``; return its path."""
    quiet_transformers()
    check_output_file(cfg.output, cfg.overwrite)
    rows = load_prompt_rows(cfg)
    model = load_causal_lm(cfg.model, cfg, trainable=False)
    tokenizer = load_tokenizer(cfg.model, "model", cfg.trust_remote_code)
    t0 = time.perf_counter()
    out, dropped = sample_rows(model, tokenizer, rows, cfg)
    write_jsonl(cfg.output, out)
    n_trunc = sum(r["truncated"] for r in out)
    print(f"sampled {len(rows)} prompts x k={cfg.k} in {time.perf_counter() - t0:.1f} s: "
          f"wrote {len(out)} rows to {cfg.output} ({n_trunc} truncated at max_new_tokens"
          + (f", {dropped} blank completions dropped)" if dropped else ")"))
    return Path(cfg.output)


# ------------------------------------------------------------------------------------ score


def run_score(cfg: ScoreConfig, reward=None) -> Path:
    """Score ``cfg.dataset`` with ``reward`` (default: ``cfg.rewards``); write ``cfg.output``."""
    check_output_file(cfg.output, cfg.overwrite)
    rows = load_sft(cfg.dataset, cfg.dataset_split)   # prompt + completion, validated per row
    source = reward or rewards_from_config(cfg)
    t0 = time.perf_counter()
    out, skipped = score_rows(source, rows, cfg.batch_size, cfg.on_reward_error)
    write_jsonl(cfg.output, out)
    mean = sum(r["score"] for r in out) / max(1, len(out))
    print(f"scored {len(rows)} rows with {source.name} in {time.perf_counter() - t0:.1f} s: "
          f"mean {mean:.4f}; wrote {len(out)} rows to {cfg.output}"
          + (f" ({skipped} skipped: reward raised or was not finite)" if skipped else ""))
    return Path(cfg.output)


def main_sample(argv: list[str]) -> int:
    """``scorealign sample CONFIG.yaml [--key value ...]``."""
    cfg = config_from_argv(SampleConfig, argv, "scorealign sample CONFIG.yaml [--key value ...]")
    if cfg is not None:
        run_sample(cfg)
    return 0


def main_score(argv: list[str]) -> int:
    """``scorealign score CONFIG.yaml [--key value ...]``."""
    cfg = config_from_argv(ScoreConfig, argv, "scorealign score CONFIG.yaml [--key value ...]")
    if cfg is not None:
        run_score(cfg)
    return 0
