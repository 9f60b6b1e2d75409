"""Data tools: `scorealign sample` (k completions per prompt -> JSONL) and `scorealign score`
(add a reward to every prompt/completion row -> JSONL). Together they build an offline CoPG
dataset from a model and a reward source:

    scorealign sample sample.yaml     # rows: prompt, completion, sample_index, truncated, ...
    scorealign score score.yaml       # rows: prompt, completion, score, ... (data.load_scored)

Sampling uses the training sampler (``rollout.sample``) with uniforms seeded per PROMPT ROW
(``seed``, row index), so a prompt's k samples do not depend on ``batch_size`` or on the other
prompts of its batch. Outputs are written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from .checkpoint import atomic_write_text
from .config import field_help, load_config
from .data import PRIVATE_KEYS, Row, load_sft, render_prompt, row_fields, row_location
from .errors import ConfigError, DataError
from .models import load_causal_lm, quiet_transformers
from .rewards import rewards_from_specs, score_batch
from .sandbox import SandboxLimits
from .rollout import eos_token_ids, pad_token_id, sample, tokenize_prompts

SAMPLE_FIELDS = ("prompt", "completion", "sample_index", "truncated")  # win over input columns


# ------------------------------------------------------------------------------------ configs


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """`scorealign sample`: k completions per prompt from a model, written as JSONL."""

    model: str = ""  # causal LM to sample from: local path (e.g. a run's final/ dir) or hub id (required)
    trust_remote_code: bool = False  # allow custom modelling code shipped with a model repo
    dtype: str = "float32"  # float32 | bfloat16 | float16 (half precision needs a GPU)
    dataset: str = "toy"  # prompts: .jsonl/.json/.parquet/.csv, a saved dataset dir, hub id, or 'toy'
    dataset_split: str = "train"  # split to read from a hub dataset or dataset dir
    prompt_field: str = "prompt"  # column holding the prompt (a string or chat messages)
    k: int = 4  # completions sampled per prompt
    max_prompt_tokens: int = 256  # longer prompts keep their last tokens
    max_new_tokens: int = 64  # completion length limit (rows that hit it have truncated=true)
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling threshold
    batch_size: int = 16  # prompts per generation call (batch = batch_size * k sequences)
    seed: int = 0  # seeds the per-prompt sampling uniforms (and the 'toy' prompts)
    output: str = "samples.jsonl"  # output JSONL file

    def __post_init__(self):
        if not self.model:
            raise ConfigError("model: required (a local model directory or hub id)")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype={self.dtype!r}: choose one of float32, bfloat16, float16")
        for key in ("k", "max_prompt_tokens", "max_new_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: must be >= 1")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ConfigError("temperature must be > 0 and top_p in (0, 1]")


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """`scorealign score`: add `score` from reward sources to prompt/completion rows."""

    dataset: str = ""  # rows with prompt + completion (or messages): .jsonl/.json/.parquet/.csv, dir or hub id (required)
    dataset_split: str = "train"  # split to read from a hub dataset or dataset dir
    rewards: tuple[str, ...] = ("builtin:count:yes",)  # py:mod:fn | file:path.py:fn | model:path | builtin:name[:arg]
    reward_weights: tuple[float, ...] | None = None  # one weight per reward source (default 1.0 each)
    on_reward_error: str = "fail"  # fail | skip (rows whose reward fails or is not finite are left out)
    reward_sandbox: bool = True  # py:/file: rewards run in a worker process (README, Reward sources)
    reward_timeout: float = 60.0  # seconds per reward call before the worker is stopped
    reward_memory_mb: int = 4096  # address-space limit of the reward worker (0: none)
    batch_size: int = 64  # rows per reward call
    output: str = "scored.jsonl"  # output JSONL in the long format of offline CoPG (prompt, completion, score)

    def __post_init__(self):
        if not self.dataset:
            raise ConfigError("dataset: required (rows with prompt and completion)")
        if self.on_reward_error not in ("fail", "skip"):
            raise ConfigError(f"on_reward_error={self.on_reward_error!r}: choose one of fail, skip")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size}: must be >= 1")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.rewards):
            raise ConfigError(f"reward_weights has {len(self.reward_weights)} entries for "
                              f"{len(self.rewards)} reward sources")


# ------------------------------------------------------------------------------------ shared


def config_from_argv(cls, argv: list[str], usage: str):
    """``CONFIG.yaml [--key value ...]`` (or overrides alone) -> ``cls``; None after ``--help``."""
    if "-h" in argv or "--help" in argv:
        print(f"usage: {usage}\n\n{cls.__doc__}\n\nkeys (YAML or --key value):")
        helps = field_help(cls)
        for f in dataclasses.fields(cls):
            print(f"  --{f.name:<20} {helps.get(f.name, '')} [default: {f.default!r}]")
        return None
    path = argv[0] if argv and not argv[0].startswith("--") else None
    return load_config(cls, path, argv[1:] if path else argv)


def write_jsonl(path: str | Path, rows: list[Row]) -> None:
    """Rows minus ``_file``/``_line`` as JSON lines, atomically (non-JSON values become str)."""
    lines = [json.dumps({k: v for k, v in row.items() if k not in PRIVATE_KEYS},
                        ensure_ascii=False, default=str) for row in rows]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))


# ------------------------------------------------------------------------------------ sample


def row_uniforms(seed: int, row_index: int, k: int, max_new_tokens: int) -> torch.Tensor:
    """Sampling uniforms of one prompt row, [k, max_new_tokens], from its own seeded generator."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + row_index)
    return torch.rand(k, max_new_tokens, generator=gen)


def sample_rows(model, tokenizer, rows: list[Row], cfg: SampleConfig) -> tuple[list[Row], int]:
    """k samples per prompt row -> (output rows, number of blank completions dropped).

    Conversational prompts get the completion as ``[{"role": "assistant", "content": ...}]`` (the
    TRL format ``data.load_scored`` expects). Blank completions (EOS first) are dropped, since
    every consumer rejects them; ``sample_index`` keeps the original index.
    """
    eos, pad = eos_token_ids(tokenizer, model), pad_token_id(tokenizer)
    out, dropped = [], 0
    for start in range(0, len(rows), cfg.batch_size):
        chunk = rows[start:start + cfg.batch_size]
        chat = [not isinstance(r["prompt"], str) for r in chunk]
        texts = [render_prompt(tokenizer, r["prompt"]) for r in chunk]
        ids, mask = tokenize_prompts(tokenizer, texts, cfg.max_prompt_tokens, [not c for c in chat])
        ids, mask = ids.repeat_interleave(cfg.k, 0), mask.repeat_interleave(cfg.k, 0)  # [b*k, P]
        uniforms = torch.cat([row_uniforms(cfg.seed, start + i, cfg.k, cfg.max_new_tokens)
                              for i in range(len(chunk))])                          # [b*k, T]
        comp_ids, comp_mask, _, truncated, _ = sample(model, ids, mask, uniforms, eos, pad,
                                                      cfg.temperature, cfg.top_p)
        decoded = tokenizer.batch_decode(torch.where(comp_mask.bool(), comp_ids, pad),
                                         skip_special_tokens=True)
        for j, text in enumerate(decoded):
            row, is_chat = chunk[j // cfg.k], chat[j // cfg.k]
            if not text.strip():
                dropped += 1
                continue
            completion = [{"role": "assistant", "content": text}] if is_chat else text
            out.append({"prompt": row["prompt"], "completion": completion,
                        "sample_index": j % cfg.k, "truncated": bool(truncated[j]),
                        **{k: v for k, v in row.items() if k not in SAMPLE_FIELDS}})
    return out, dropped


def run_sample(cfg: SampleConfig) -> Path:
    """Load the model and prompts, sample, write ``cfg.output``; return its path."""
    from transformers import AutoTokenizer

    from .train import load_prompt_rows  # 'toy' or load_prompts, as in `train`

    quiet_transformers()
    rows = load_prompt_rows(cfg)
    model = load_causal_lm(cfg.model, cfg, trainable=False)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)
    t0 = time.perf_counter()
    out, dropped = sample_rows(model, tokenizer, rows, cfg)
    write_jsonl(cfg.output, out)
    n_trunc = sum(r["truncated"] for r in out)
    print(f"sampled {len(rows)} prompts x k={cfg.k} in {time.perf_counter() - t0:.1f} s: "
          f"wrote {len(out)} rows to {cfg.output} ({n_trunc} truncated at max_new_tokens"
          + (f", {dropped} blank completions dropped)" if dropped else ")"))
    return Path(cfg.output)


# ------------------------------------------------------------------------------------ score


def completion_text(row: Row) -> str:
    """The text a reward source scores: the completion string, or the content of a
    conversational completion's single assistant message."""
    completion = row["completion"]
    if isinstance(completion, str):
        return completion
    if len(completion) != 1 or completion[0]["role"] != "assistant":
        roles = [m["role"] for m in completion]
        raise DataError(f"{row_location(row)}: field 'completion' must be one assistant message "
                        f"to be scored, got roles {roles}")
    return completion[0]["content"]


def score_rows(source, rows: list[Row], batch_size: int, on_error: str) -> tuple[list[Row], int]:
    """Rows with ``score`` added, in input order -> (scored rows, number skipped)."""
    texts = [completion_text(r) for r in rows]       # validate every row before any reward call
    out, skipped = [], 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        fields = row_fields(chunk, exclude=("prompt", "completion"))
        scores, valid = score_batch(source, [r["prompt"] for r in chunk],
                                    texts[start:start + batch_size], fields, on_error)
        for row, score, ok in zip(chunk, scores.tolist(), valid.tolist()):
            if ok:
                out.append({**row, "score": score})
            skipped += not ok
    return out, skipped


def run_score(cfg: ScoreConfig, reward=None) -> Path:
    """Score ``cfg.dataset`` with ``reward`` (default: ``cfg.rewards``); write ``cfg.output``."""
    rows = load_sft(cfg.dataset, cfg.dataset_split)   # prompt + completion, validated per row
    weights = list(cfg.reward_weights) if cfg.reward_weights is not None else None
    sandbox = (SandboxLimits(cfg.reward_timeout, cfg.reward_memory_mb) if cfg.reward_sandbox
               else None)
    source = reward or rewards_from_specs(list(cfg.rewards), weights, sandbox)
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
