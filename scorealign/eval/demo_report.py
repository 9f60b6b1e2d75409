"""Stage 6 of `scorealign demo`: every policy judged by the gold scorer, the table and the plots.

Per policy, on the eval prompts (disjoint from training), one completion per prompt is sampled at
temperature 1 with the SAME per-prompt draws for every policy (so differences come from the
policies), then:
  gold            mean gold score (``tasks.gold_score``: correctness, language, refusals)
  win vs SFT      per prompt 1 / 0.5 / 0 when the policy's gold score is above / equal to / below
                  the SFT policy's, mean with a 95% percentile-bootstrap interval
  KL              mean over the samples of sum_t log pi(y_t) - log pi_sft(y_t) (k1, on its own samples)
  in-language     share of completions in the prompt's language
  harmful         share of harmful prompts answered without a refusal, per language x global/local
  over-refusal    share of benign prompts refused
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..core.io import atomic_write_text
from ..engine.logprobs import completion_logprobs
from .heldout import sample_once
from .reports import bootstrap_ci, markdown_table


def evaluate_policy(path: Path, sft, tok, rows: list[dict], seed: int) -> dict:
    """Completions, per-row gold judgements and KL to the SFT policy of the model at ``path``."""
    from transformers import AutoModelForCausalLM

    from ..tasks import gold_judgement

    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    completions, c_ids, c_mask, p_ids, p_mask = sample_once(
        model, tok, [r["prompt"] for r in rows], list(range(len(rows))), seed, 256, 16)
    with torch.no_grad():
        lp = completion_logprobs(model, p_ids, p_mask, c_ids, c_mask)
        ref = completion_logprobs(sft, p_ids, p_mask, c_ids, c_mask)
    kl = ((lp - ref) * c_mask).sum(1)                                          # [n]
    return {"completions": completions, "judged": [gold_judgement(r, c) for r, c in zip(rows, completions)],
            "kl": kl.mean().item()}


def summarise(rows: list[dict], ev: dict, sft_scores: list[float], seed: int) -> dict:
    """The table's numbers for one policy."""
    judged = ev["judged"]
    scores = [j["score"] for j in judged]
    wins = [1.0 if s > b else 0.5 if s == b else 0.0 for s, b in zip(scores, sft_scores)]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    harmful = {}
    for lang in sorted({r["language"] for r in rows}):
        for scope in ("global", "local"):
            flags = [j["harmful_compliance"] for r, j in zip(rows, judged) if r["kind"] == "harmful"
                     and r["language"] == lang and r.get("global_or_local") == scope]
            harmful[f"{lang}/{scope}"] = {"rate": mean([float(f) for f in flags]), "n": len(flags)}
    harmful_all = [float(j["harmful_compliance"]) for r, j in zip(rows, judged)
                   if r["kind"] == "harmful"]
    benign = [float(j["refused"]) for r, j in zip(rows, judged) if r["kind"] == "benign"]
    return {"gold": mean(scores), "win_vs_sft": mean(wins), "win_ci95": bootstrap_ci(wins, seed=seed),
            "kl": ev["kl"], "in_language": mean([float(j["in_language"]) for j in judged]),
            "harmful": mean(harmful_all), "harmful_n": len(harmful_all),
            "harmful_by_language_scope": harmful, "over_refusal": mean(benign),
            "over_refusal_n": len(benign)}


def evaluate_all(cfg, out: Path, rows: list[dict], sft_path: Path, wall: dict,
                 rm_accuracy: float | None) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(sft_path))
    sft = AutoModelForCausalLM.from_pretrained(str(sft_path)).eval()
    policies = {"sft": sft_path, **{m: out / m / "final" for m in cfg.methods}}
    evals = {name: evaluate_policy(path, sft, tok, rows, cfg.seed) for name, path in policies.items()}
    sft_scores = [j["score"] for j in evals["sft"]["judged"]]
    results = {name: {**summarise(rows, ev, sft_scores, cfg.seed), "wall_s": wall.get(name)}
               for name, ev in evals.items()}
    samples = [{"prompt": r["prompt"], "language": r["language"], "kind": r["kind"],
                **{name: ev["completions"][i] for name, ev in evals.items()}}
               for i, r in enumerate(rows)]
    atomic_write_text(out / "eval_samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n"
                                                          for s in samples))
    return {"policies": results, "reward_model_accuracy": rm_accuracy}


def table(results: dict) -> str:
    header = ["policy", "gold", "win vs SFT [95% CI]", "KL", "in-language", "harmful (n)",
              "over-refusal (n)", "wall s"]
    rows = []
    ranked = sorted(results["policies"].items(), key=lambda kv: -kv[1]["gold"])
    for name, r in ranked:
        ci = r["win_ci95"]
        rows.append([name, f"{r['gold']:.3f}", f"{r['win_vs_sft']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]",
                     f"{r['kl']:.2f}", f"{r['in_language']:.2f}",
                     rate_n(r["harmful"], r["harmful_n"]),
                     rate_n(r["over_refusal"], r["over_refusal_n"]),
                     "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}"])
    return markdown_table(header, rows)


def rate_n(rate: float, n: int) -> str:
    """'0.25 (n=4)'; '- (n=0)' for an empty cell."""
    return f"{'-' if n == 0 else f'{rate:.2f}'} (n={n})"


def harmful_table(results: dict) -> str:
    cells = next(iter(results["policies"].values()))["harmful_by_language_scope"]
    header = ["policy", *cells]
    rows = [[name, *(rate_n(c["rate"], c["n"]) for c in r["harmful_by_language_scope"].values())]
            for name, r in results["policies"].items()]
    return markdown_table(header, rows)


def plots(out: Path, results: dict, methods) -> list[str]:
    """Through ``eval.plots`` (the code of ``scorealign plot``), one colour per policy in every
    figure: reward.png, kl.png and gold.png (each against step and samples drawn; gold on the
    eval prompts, SFT dashed) and reward_vs_kl.png (gold against KL to SFT, one point per
    policy, named in the legend)."""
    from .plots import plot_points, plot_runs, run_colors

    colors = run_colors(["sft", *methods])
    written = plot_runs({m: out / m for m in methods}, out, colors, eval_name="gold",
                        eval_label="gold reward (eval prompts)",
                        baselines={"sft": results["policies"]["sft"]["gold"]})
    plot_points({name: (r["kl"], r["gold"]) for name, r in results["policies"].items()}, colors,
                "KL to the SFT policy (nats, on own samples)", "gold reward (eval prompts)",
                "gold reward vs KL, one point per policy", out / "reward_vs_kl.png")
    return [p.name for p in written] + ["reward_vs_kl.png"]


def write_report(cfg, out: Path, results: dict, total_s: float) -> str:
    """results.json, report.md (+ plots); returns the main table."""
    main = table(results)
    images = plots(out, results, cfg.methods)
    acc = results["reward_model_accuracy"]
    text = (f"# scorealign demo ({'quick' if cfg.quick else 'full'}, seed {cfg.seed})\n\n"
            f"Gold evaluation on {len(results['policies'])} policies; "
            f"proxy reward model held-out accuracy {acc if acc is None else f'{acc:.3f}'}; "
            f"total {total_s:.0f} s.\n\n## Results (sorted by gold reward)\n\n{main}\n\n"
            f"## Harmful rate by language x global/local\n\nShare of harmful prompts answered without a "
            f"refusal; n = harmful eval prompts in the cell (small cells are noisy).\n\n"
            f"{harmful_table(results)}\n\n"
            + "".join(f"![{i}]({i})\n" for i in images))
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    atomic_write_text(out / "report.md", text)
    return main
