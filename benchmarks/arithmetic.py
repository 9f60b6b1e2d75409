"""How much faster than TRL can we be on arithmetic alone? Token-passes and GEMM time per step.

    python benchmarks/arithmetic.py                  # both sizes, RLOO and DPO, ~30 s

Counts, on the benchmark's own batches (same models, prompts, k, lengths and micro-batches as
``bench_vs_trl.py``), how many tokens go through the linear layers per step:

- **ours**: the lean layout (``scorealign/engine/forward.py``): a shared prompt once per group, each
  completion once but for its last token, no padding; sampling prefills each distinct prompt once.
- **padded**: what TRL's trainers run (and the floor's ``generate``): every row padded to the
  batch's longest prompt + completion, the prompt once per row; RLOO also makes TRL's extra
  no-grad "old log-probs" forward.

A token-pass is one token through every linear layer once (2 x linear parameters FLOPs); a
backward costs two. Multiplied by FLOPs per token and divided by this machine's single-core GEMM
rate (measured here at the models' shapes), it gives each library's GEMM time per step: what
the step would take if nothing but the matrix products ran, at full speed. The ratio padded/ours
is the speed-up arithmetic alone allows; anything measured above it comes from the other
library's per-op overhead, anything below from ours.

TRL's token counts are derived from its layout on the same batches (its code is not run here);
the RLOO completions are one rollout of our sampler from the benchmark's model, whose lengths
follow the same distribution as TRL's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_vs_trl import RLOO, SIZES, build_models  # noqa: E402


def lean_tokens(prompt_lens: list[int], completion_lens: list[int], group: int) -> int:
    """Tokens of the lean forward for rows in groups of ``group`` sharing a prompt: each prompt
    once per group, each completion but its last token."""
    return sum(prompt_lens[::group]) + sum(max(c - 1, 0) for c in completion_lens)


def padded_tokens(prompt_lens: list[int], completion_lens: list[int]) -> int:
    """Tokens of a padded forward: every row at the longest prompt + the longest completion."""
    return len(prompt_lens) * (max(prompt_lens) + max(completion_lens))


def rloo_passes(prompt_lens: list[int], completion_lens: list[int], k: int, micro: int) -> dict:
    """Token-passes per RLOO step. Sampling runs all B rows for the longest completion's steps
    (both samplers keep finished rows in the batch); ours prefills each distinct prompt once."""
    B, steps = len(prompt_lens), max(completion_lens)
    decode = B * (steps - 1)
    ours_fwd = sum(lean_tokens(prompt_lens[i:i + micro], completion_lens[i:i + micro], k)
                   for i in range(0, B, micro))
    padded_fwd = padded_tokens(prompt_lens, completion_lens)
    prefill = max(prompt_lens)                                  # both prefill padded prompts
    return {"ours": len(prompt_lens[::k]) * prefill + decode + ours_fwd + 3 * ours_fwd,
            "padded": B * prefill + decode + 2 * padded_fwd + 3 * padded_fwd}


def dpo_passes(prompt_lens: list[int], completion_lens: list[int], micro: int) -> dict:
    """Token-passes per DPO step (rows = chosen, rejected, chosen, ...): one reference forward
    and one forward/backward per micro-batch, lean (ours) or padded per micro-batch (TRL)."""
    ours = padded = 0
    for i in range(0, len(prompt_lens), micro):
        p, c = prompt_lens[i:i + micro], completion_lens[i:i + micro]
        ours += 4 * lean_tokens(p, c, 2)
        padded += 4 * padded_tokens(p, c)
    return {"ours": ours, "padded": padded}


def linear_flops_per_token(model) -> int:
    """2 x the parameters of every linear layer a token goes through (LM head included)."""
    return 2 * sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def gemm_rate(hidden: int, rows: int = 200, repeats: int = 20) -> float:
    """Single-thread FLOP/s of [rows, hidden] x [hidden, 2 hidden]: the best of ``repeats``."""
    x, w = torch.randn(rows, hidden), torch.randn(2 * hidden, hidden)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(10):
            torch.nn.functional.linear(x, w)
        best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * rows * hidden * 2 * hidden / best


def rloo_lengths(path: str, seed: int = 0) -> tuple[list[int], list[int]]:
    """Prompt and completion lengths of one benchmark rollout (8 prompts x k, our sampler)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scorealign.core.tiny import toy_prompts
    from scorealign.engine.rollout import eos_token_ids, pad_token_id, sample, tokenize_prompts

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    n, k = RLOO["prompts_per_step"], RLOO["k"]
    ids, mask = tokenize_prompts(tok, toy_prompts(256, seed)[:n], 512, [True] * n)
    ids, mask = ids.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
    gen = torch.Generator().manual_seed(seed)
    _, c_mask, *_ = sample(model, ids, mask, torch.rand(n * k, RLOO["max_new"], generator=gen),
                           eos_token_ids(tok, model), pad_token_id(tok))
    return mask.sum(1).tolist(), c_mask.sum(1).tolist()


def dpo_lengths(path: str, n_pairs: int = 64, seed: int = 0) -> tuple[list[int], list[int]]:
    """Prompt and completion lengths of the benchmark's DPO pairs (chosen, rejected, ...)."""
    from bench_workers import dpo_pairs
    from transformers import AutoTokenizer

    from scorealign.train.batches import tokenize_example

    tok = AutoTokenizer.from_pretrained(path)
    p_lens, c_lens = [], []
    with tempfile.TemporaryDirectory() as tmp:
        rows = [json.loads(x) for x in dpo_pairs(Path(tmp) / "p.jsonl", n_pairs, seed).open()]
    for row in rows:
        for completion in (row["chosen"], row["rejected"]):
            p, c = tokenize_example(tok, {**row, "completion": completion}, 512, 512)
            p_lens.append(len(p))
            c_lens.append(len(c))
    return p_lens, c_lens


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scorealign-bench")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM

    from scorealign.core.models import quiet_transformers

    quiet_transformers()
    args.workdir.mkdir(parents=True, exist_ok=True)
    models = build_models(args.workdir, args.sizes)
    rows = []
    print("| size | algorithm | token-passes/step ours | padded (TRL) | ratio | GEMM ms/step "
          "ours | padded (TRL) |\n|---|---|---|---|---|---|---|")
    for size, path in models.items():
        flops = linear_flops_per_token(AutoModelForCausalLM.from_pretrained(path))
        rate = gemm_rate(SIZES[size][0])
        dpo_p, dpo_c = dpo_lengths(path)
        per_step = 8 * 2                                              # 8 pairs = 16 rows a step
        dpo_steps = [dpo_passes(dpo_p[i:i + per_step], dpo_c[i:i + per_step], 8)
                     for i in range(0, len(dpo_p), per_step)]
        cases = {"RLOO": rloo_passes(*rloo_lengths(path), RLOO["k"], RLOO["micro_batch"]),
                 "DPO": {lib: sum(s[lib] for s in dpo_steps) / len(dpo_steps)
                         for lib in ("ours", "padded")}}
        for algo, n in cases.items():
            ms = {lib: 1e3 * n[lib] * flops / rate for lib in n}
            rows.append({"size": size, "algo": algo, **n, "ratio": n["padded"] / n["ours"],
                         "gemm_ms_ours": ms["ours"], "gemm_ms_padded": ms["padded"],
                         "gflops_per_s": rate / 1e9})
            print(f"| {size} | {algo} | {n['ours']:.0f} | {n['padded']:.0f} | "
                  f"{n['padded'] / n['ours']:.2f}x | {ms['ours']:.0f} | {ms['padded']:.0f} |")
    print("\nGEMM rate (1 thread, [200, h] x [h, 2h]): "
          + ", ".join(f"{r['size']} {r['gflops_per_s']:.0f} GFLOP/s" for r in rows[::2]))
    return rows


if __name__ == "__main__":
    main()
