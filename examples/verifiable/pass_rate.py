"""Held-out pass rate of one or more models on a verifiable eval set, with 95% bootstrap CIs.

    python examples/verifiable/pass_rate.py --models smollm2-135m runs/verifiable_arith/final \\
        --dataset examples/verifiable/arith_eval.jsonl --reward builtin:math --k 4

Samples ``k`` completions per eval prompt from each model (same seeded uniforms for every
model), scores them with ``--reward``, and prints per model the pass rate (mean reward) with a
percentile-bootstrap 95% CI over prompts; with two models, the paired difference (second minus
first) and its CI, resampling the same prompts for both; rows with a ``language`` column also get
the pass rate per language.
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import numpy as np
import torch

from scorealign.core.io import atomic_write_text
from scorealign.core.models import load_causal_lm, load_tokenizer, quiet_transformers
from scorealign.data.formats import completion_text, load_prompts
from scorealign.engine.generate import sample_rows
from scorealign.eval.reports import bootstrap_ci
from scorealign.rewards.sources import reward_from_spec, score_batch


def per_prompt_rates(model_name: str, rows: list[dict], reward, args) -> np.ndarray:
    """Mean reward of the k samples of each prompt, [n_prompts]."""
    cfg = SimpleNamespace(k=args.k, batch_size=args.batch_size, seed=args.seed,
                          max_prompt_tokens=256, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_p=1.0, dtype=args.dtype,
                          trust_remote_code=False, lora_r=0)
    model = load_causal_lm(model_name, cfg, trainable=False)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(model_name, "model", False)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out, _ = sample_rows(model, tokenizer, rows, cfg)
    texts = [completion_text(r) for r in out]
    fields = {key: [r.get(key) for r in out] for key in ("answer", "tests", "language")
              if key in rows[0]}
    scores, _ = score_batch(reward, [r["prompt"] for r in out], texts, fields, on_error="skip")
    index = {row["id"]: i for i, row in enumerate(rows)}
    per = np.zeros(len(rows))
    for r, s in zip(out, scores.tolist()):          # blank completions (dropped) count as 0
        per[index[r["id"]]] += s / args.k
    print(f"  {model_name}: {len(out)} completions in {time.perf_counter() - t0:.0f} s; "
          f"example: {texts[0][:100]!r}")
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--dataset", default="examples/verifiable/arith_eval.jsonl")
    ap.add_argument("--reward", default="builtin:math")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    quiet_transformers()
    rows = load_prompts(args.dataset, "prompt", "train")
    reward = reward_from_spec(args.reward)
    rates, report = [], {}
    for name in args.models:
        per = per_prompt_rates(name, rows, reward, args)
        rates.append(per)
        lo, hi = bootstrap_ci(per, n_boot=2000)
        languages = sorted({r.get("language") for r in rows} - {None})
        by_language = {lang: float(per[[r.get("language") == lang for r in rows]].mean())
                       for lang in languages}
        report[name] = {"pass_rate": float(per.mean()), "ci95": [lo, hi],
                        "by_language": by_language}
        print(f"{name}: pass rate {per.mean():.3f} [95% CI {lo:.3f}, {hi:.3f}] "
              f"over {len(rows)} prompts x k={args.k}"
              + "".join(f"; {lang} {v:.3f}" for lang, v in by_language.items()))
    if len(rates) == 2:
        diff = rates[1] - rates[0]
        lo, hi = bootstrap_ci(diff, n_boot=2000)
        report["difference"] = {"mean": float(diff.mean()), "ci95": [lo, hi]}
        print(f"difference ({args.models[1]} - {args.models[0]}): {diff.mean():+.3f} "
              f"[95% CI {lo:+.3f}, {hi:+.3f}] (paired bootstrap over prompts)")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
