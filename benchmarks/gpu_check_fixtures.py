"""What ``gpu_check.py`` checks with: the model configurations, workload sizes, the result
table, and the fixtures (a model with random weights and a locally trained tokenizer, datasets,
a reward, run configs and weight comparisons). Nothing here needs a GPU."""

from __future__ import annotations

import json
import math
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# HuggingFaceTB/SmolLM2-135M's config.json (the fields that shape the computation).
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                    tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5,
                    max_position_embeddings=8192, hidden_act="silu",
                    initializer_range=0.041666666666666664)
# --small: the same architecture (grouped-query attention, tied, 49152 ids), 2 layers, hidden 64
# (4 heads / 2 KV heads: transformers wants hidden % heads == 0, so not SmolLM2's 3:1).
SMALL = {**SMOLLM2_135M, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
# What the check imports (scorealign's run-time needs; not datasets, py3langid or gguf).
REQUIRED = ("torch", "transformers", "accelerate", "safetensors", "tokenizers", "yaml", "rich",
            "numpy")
ALGOS = ("rloo", "grpo", "dapo", "gspo", "reinforce++", "copg", "dpo", "ppo")  # in ALGORITHMS
# Max |log-prob difference| allowed between the lean paths and the transformers forward.
TOLERANCE = {"float32": 2e-3, "bfloat16": 0.25}


@dataclass
class Plan:
    """Sizes of one mode's workloads."""

    prompts: int = 8            # sample check: prompts (k = 2 samples each)
    new_tokens: int = 32        # sample check: tokens per sample
    speed_rows: int = 256       # speed: rows sampled at once
    speed_tokens: int = 128     # speed: new tokens per row (no EOS stop: 49k random ids)
    speed_train_rows: int = 32  # speed: sequences per training step
    speed_iters: int = 5        # speed: timed training steps (after one warm-up)
    prompts_per_step: int = 8   # training runs
    k: int = 4
    micro: int = 16
    train_tokens: int = 48


PLANS = {"gpu": Plan(),
         "cpu": Plan(prompts=4, new_tokens=16, speed_rows=8, speed_tokens=16, speed_train_rows=8,
                     speed_iters=1, prompts_per_step=2, k=2, micro=4, train_tokens=8),
         "small": Plan(prompts=4, new_tokens=16, speed_rows=8, speed_tokens=16,
                       speed_train_rows=8, speed_iters=1, prompts_per_step=4, k=2, micro=8,
                       train_tokens=8)}


class Table:
    def __init__(self, only: list[str] | None = None):
        self.rows: list[tuple[str, str, str, str]] = []
        self.only = set(only or ())

    def add(self, check: str, dtype: str, ok: bool | None, numbers: str) -> None:
        result = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        self.rows.append((check, dtype, result, numbers))
        print(f"  {check} {dtype}: {result}  {numbers}", flush=True)

    def run(self, check: str, dtype: str, fn, *args) -> None:
        """``fn(*args)`` -> (ok, numbers); an exception is a FAIL with its last line."""
        if self.only and check not in self.only:
            return
        try:
            ok, numbers = fn(*args)
        except Exception as e:                                   # noqa: BLE001 - reported
            traceback.print_exc()
            ok, numbers = False, f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:160]}"
        self.add(check, dtype, ok, numbers)

    def render(self) -> str:
        head = ("check", "dtype", "result", "numbers")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(3)]
        line = lambda r: " | ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[3]])  # noqa: E731
        return "\n".join([line(head), "-+-".join("-" * w for w in widths) + "-+-" + "-" * 20,
                          *map(line, self.rows)])

    @property
    def failed(self) -> bool:
        return any(r[2] == "FAIL" for r in self.rows)


# ----------------------------------------------------------------------------------- fixtures


def build_model(out: Path, config: dict) -> Path:
    """Tokenizer (BPE on the toy corpus, filled to the model's vocabulary) + random weights."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig

    from scorealign.core.tiny import build_tokenizer

    if (out / "model.safetensors").is_file():
        return out
    tok = build_tokenizer(out, vocab_size=512, pad_to=config["vocab_size"])
    pad, bos, eos = tok.convert_tokens_to_ids(["<|pad|>", "<|bos|>", "<|eos|>"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(
        **config, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos))
    model.generation_config = GenerationConfig(pad_token_id=pad, bos_token_id=bos,
                                               eos_token_id=eos)
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def write_datasets(out: Path, k: int) -> dict[str, Path]:
    """Offline data from toy words: scored completions (k per prompt) and preference pairs."""
    import random

    from scorealign.core.tiny import TOY_WORDS, toy_prompts

    rng, prompts = random.Random(0), toy_prompts(32)
    words = lambda: " ".join(rng.choice(TOY_WORDS) for _ in range(rng.randint(2, 8)))  # noqa: E731
    scored = [{"prompt": p, "completion": words(), "score": rng.random()}
              for p in prompts for _ in range(k)]
    pairs = [{"prompt": p, "chosen": words(), "rejected": words()} for p in prompts]
    paths = {"scored": out / "scored.jsonl", "pairs": out / "pairs.jsonl"}
    for name, rows in (("scored", scored), ("pairs", pairs)):
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def crc_reward(prompts, completions, **_):
    """A deterministic, varied, meaningless reward (a random model samples the 49k ids nearly
    uniformly, so lengths and word counts barely vary): crc32 of the completion, in [0, 10)."""
    return [zlib.crc32(c.encode()) % 100 / 10 for c in completions]


def load(path: Path, dtype: str, device, trainable: bool = False):
    from types import SimpleNamespace

    from scorealign.core.models import load_causal_lm

    cfg = SimpleNamespace(dtype=dtype, trust_remote_code=False)
    return load_causal_lm(str(path), cfg, trainable=trainable).to(device)


def prompt_batch(tok, n: int, k: int, device):
    from scorealign.core.tiny import toy_prompts
    from scorealign.engine.rollout import tokenize_prompts

    ids, mask = tokenize_prompts(tok, toy_prompts(n), 64, [True] * n)
    return ids.repeat_interleave(k, 0).to(device), mask.repeat_interleave(k, 0).to(device)


def uniforms(rows: int, tokens: int, device, seed: int = 0):
    import torch

    return torch.rand(rows, tokens, generator=torch.Generator().manual_seed(seed)).to(device)


def train_cfg(model: Path, out: Path, dtype: str, plan: Plan, **kw):
    from scorealign.train import TrainConfig

    base = dict(model=str(model), dtype=dtype, dataset="toy", steps=2,
                prompts_per_step=plan.prompts_per_step, k=plan.k, micro_batch_size=plan.micro,
                max_new_tokens=plan.train_tokens, lr=1e-3, output_dir=str(out),
                rewards=("builtin:length",))
    return TrainConfig(**{**base, **kw})


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def changed(base: dict, final: dict) -> tuple[list[str], float]:
    """Names of the tensors of ``final`` that differ from ``base`` (cast to final's dtype)."""
    names = [n for n, w in final.items() if not base[n].to(w.dtype).equal(w)]
    diff = max(((final[n].float() - base[n].float()).abs().max().item() for n in names),
               default=0.0)
    return names, diff


def finite_metrics(run: Path) -> tuple[bool, int]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for r in rows for v in r.values())
    return ok, len(rows)
