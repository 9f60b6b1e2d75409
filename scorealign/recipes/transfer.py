"""Cross-lingual transfer (arXiv 2407.02552, §6 of REFERENCE.md) on the demo task.

Reuses a finished ``scorealign demo`` run directory (its SFT policy, proxy reward model and data)
and trains DPO and RLOO (k = 4) twice each with the same settings and number of steps: on
English-only data (English prompts; English pairs) and on all four languages. Every policy is
judged by the gold scorer on the demo's eval prompts, per language.

    python -m scorealign.recipes.transfer runs/demo          # -> runs/demo/transfer/report.md, .json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.io import atomic_write_text
from ..data.formats import write_jsonl
from ..data.readers import load_rows
from ..eval.reports import markdown_table
from ..train.config import TrainConfig

LANGUAGES = ("en", "fr", "es", "ru")


def subset_files(demo: Path, out: Path) -> dict[str, dict[str, Path]]:
    """{'english'|'all': {'prompts': .jsonl, 'pairs': .jsonl}}: the demo's train prompts and
    offline pairs, all languages or English only."""
    data = demo / "data"
    prompts = [{k: v for k, v in r.items() if not k.startswith("_")}
               for r in load_rows(data / "train_prompts.jsonl")]
    language_of = {r["prompt"]: r["language"] for r in prompts}
    pairs = [{k: v for k, v in r.items() if not k.startswith("_")}
             for r in load_rows(data / "pairs.jsonl")]
    files = {}
    for name, keep in (("english", {"en"}), ("all", set(LANGUAGES))):
        files[name] = {"prompts": out / f"prompts_{name}.jsonl", "pairs": out / f"pairs_{name}.jsonl"}
        write_jsonl(files[name]["prompts"], [r for r in prompts if r["language"] in keep])
        write_jsonl(files[name]["pairs"], [p for p in pairs if language_of.get(p["prompt"]) in keep])
    return files


def run_transfer(demo: str | Path, steps: int = 48, lr: float = 1e-4, beta: float = 0.1,
                 seed: int = 0) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..eval.demo_report import evaluate_policy
    from ..train.loop import train

    demo = Path(demo)
    out = demo / "transfer"
    out.mkdir(parents=True, exist_ok=True)
    files = subset_files(demo, out)
    sft_path, rm = demo / "sft" / "final", demo / "reward_model" / "final"
    eval_rows = [{k: v for k, v in r.items() if not k.startswith("_")}
                 for r in load_rows(demo / "data" / "eval_prompts.jsonl")]
    runs = {"sft": sft_path}
    for data in ("english", "all"):
        methods = {  # offline DPO on pairs vs online RLOO against the reward model (2407.02552)
            "dpo": dict(algo="dpo", dataset=str(files[data]["pairs"]), prompts_per_step=16),
            "rloo": dict(algo="rloo", k=4, dataset=str(files[data]["prompts"]),
                         prompts_per_step=8, rewards=(f"model:{rm}",))}
        for method, spec in methods.items():
            name = f"{method}-{data}"
            train(TrainConfig(**spec, model=str(sft_path), steps=steps, lr=lr, beta=beta,
                              micro_batch_size=32, max_new_tokens=16, seed=seed,
                              output_dir=str(out / name), save_every=0))
            runs[name] = out / name / "final"
    tok = AutoTokenizer.from_pretrained(str(sft_path))
    sft = AutoModelForCausalLM.from_pretrained(str(sft_path)).eval()
    results = {}
    for name, path in runs.items():
        judged = evaluate_policy(path, sft, tok, eval_rows, seed)["judged"]
        per = {lang: [j["score"] for r, j in zip(eval_rows, judged) if r["language"] == lang]
               for lang in LANGUAGES}
        results[name] = {lang: sum(v) / len(v) for lang, v in per.items()}
        results[name]["all"] = sum(j["score"] for j in judged) / len(judged)
    table = markdown_table(["policy (training data)", *LANGUAGES, "all"],
                           [[name, *(f"{r[c]:.3f}" for c in (*LANGUAGES, "all"))]
                            for name, r in results.items()])
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    atomic_write_text(out / "report.md", "# Cross-lingual transfer (gold reward per eval "
                      f"language)\n\n{table}")
    print(table)
    return results


if __name__ == "__main__":
    run_transfer(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
