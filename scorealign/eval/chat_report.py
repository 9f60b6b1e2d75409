"""The real-model demo's evaluation: every policy's replies to the held-out chat prompts, judged
by the gold judge (``chat_gold``), with win-rates and rates with 95% intervals, per language and
per global/local harm, and the KL of each policy to the base model on its own samples.

Every policy answers each eval prompt once, with the same sampling uniforms (seeded per prompt),
so two policies differ only through their weights. Win-rate vs X: per prompt, 1 if the policy's
gold score beats X's, 0.5 on a tie, 0 if it loses, averaged over prompts; 95% intervals are
percentile bootstraps over prompts (``reports.bootstrap_ci``).
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from ..core.io import atomic_write_text
from ..core.seeding import generator
from ..engine.generate import sample_prompts
from ..engine.logprobs import completion_logprobs
from .chat_gold import chat_judgement
from .reports import bootstrap_ci, markdown_table

LANGS = ("en", "fr", "es", "ru")
# Seconds per preset unit on 2 idle CPU cores: an ESTIMATE, not timed on idle cores; the runs
# measured on 2 shared cores (docs/demo.md, with their commands) took about 2.5x longer.
SECONDS = {"sft_step": 2.0, "method_step": 8.0, "eval_prompt": 0.5, "fixed": 30.0}


def budget_seconds(cfg) -> float:
    """The demo's stated time budget from its preset (see ``SECONDS``)."""
    p = cfg.preset
    return (SECONDS["fixed"] + p["sft_steps"] * SECONDS["sft_step"]
            + len(cfg.methods) * p["steps"] * SECONDS["method_step"]
            + (len(cfg.methods) + 2) * p["n_eval"] * SECONDS["eval_prompt"])


@torch.no_grad()
def replies(model, tok, rows: list[dict], max_new_tokens: int, temperature: float, seed: int):
    """One reply per row with uniforms fixed per row -> (texts, samples) in row order."""
    texts, parts = [], []
    for start in range(0, len(rows), 16):
        chunk = rows[start:start + 16]
        uniforms = torch.stack([torch.rand(max_new_tokens, generator=generator(seed, "heldout", i))
                                for i in range(start, start + len(chunk))])
        s = sample_prompts(model, tok, [r["prompt"] for r in chunk], 1, uniforms, 96,
                           temperature)
        texts += [c.strip() for c in s.completions]
        parts.append(s)
    return texts, parts


@torch.no_grad()
def kl_to_base(parts, base, temperature: float) -> float:
    """Mean over replies of sum_t log pi(y_t) - log pi_base(y_t) (k1 on the policy's samples)."""
    total, n = 0.0, 0
    for s in parts:
        ref = completion_logprobs(base, s.prompt_ids, s.prompt_mask, s.completion_ids,
                                  s.completion_mask, temperature)
        total += ((s.logprobs - ref) * s.completion_mask).sum().item()
        n += s.completion_ids.shape[0]
    return total / max(n, 1)


def evaluate(policies: dict[str, str], base_path: str, rows: list[dict], max_new_tokens: int,
             temperature: float, seed: int) -> dict:
    """{policy: {"judged": [...], "texts": [...], "kl": float}} for every policy path."""
    from transformers import AutoModelForCausalLM

    from ..core.models import load_tokenizer

    tok = load_tokenizer(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path).eval()
    out = {}
    for name, path in policies.items():
        t = time.perf_counter()
        model = base if path == base_path else AutoModelForCausalLM.from_pretrained(path).eval()
        texts, parts = replies(model, tok, rows, max_new_tokens, temperature, seed)
        out[name] = {"texts": texts, "judged": [chat_judgement(r, c) for r, c in zip(rows, texts)],
                     "kl": 0.0 if model is base else kl_to_base(parts, base, temperature)}
        print(f"  evaluated {name} in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def win_rate(mine: list[dict], theirs: list[dict]) -> tuple[float, tuple[float, float]]:
    wins = [1.0 if a["score"] > b["score"] else 0.5 if a["score"] == b["score"] else 0.0
            for a, b in zip(mine, theirs)]
    return sum(wins) / len(wins), bootstrap_ci(wins)


def rate(judged: list[dict], rows: list[dict], key: str, where) -> dict:
    values = [float(j[key]) for j, r in zip(judged, rows) if where(r)]
    if not values:
        return {"rate": None, "n": 0}
    return {"rate": sum(values) / len(values), "ci95": bootstrap_ci(values), "n": len(values)}


def summarise(results: dict, rows: list[dict]) -> dict:
    """Per policy: gold mean, win-rates vs base and SFT, harmful / over-refusal / in-language /
    correct rates (overall, per language, global/local), KL to base."""
    harmful = lambda r: r["kind"] == "harmful"                               # noqa: E731
    summary = {}
    for name, res in results.items():
        judged = res["judged"]
        s = {"gold": rate(judged, rows, "score", lambda r: True), "kl": res["kl"],
             "harmful": rate(judged, rows, "harmful_compliance", harmful),
             "over_refusal": rate(judged, rows, "over_refusal", lambda r: r["kind"] == "benign"),
             "in_language": rate(judged, rows, "in_language", lambda r: True),
             "correct": rate(judged, rows, "correct", lambda r: r["kind"] == "verifiable")}
        for ref in ("base", "sft"):
            if ref in results and ref != name:
                s[f"win_vs_{ref}"] = win_rate(judged, results[ref]["judged"])
        for lang in LANGS:
            mine = [(j, r) for j, r in zip(judged, rows) if r["language"] == lang]
            s[f"gold/{lang}"] = rate(judged, rows, "score", lambda r, x=lang: r["language"] == x)
            s[f"in_language/{lang}"] = rate(judged, rows, "in_language",
                                            lambda r, x=lang: r["language"] == x)
            s[f"harmful/{lang}"] = rate(judged, rows, "harmful_compliance",
                                        lambda r, x=lang: harmful(r) and r["language"] == x)
            if "base" in results and name != "base":
                base = [b for b, r in zip(results["base"]["judged"], rows) if r["language"] == lang]
                s[f"win_vs_base/{lang}"] = win_rate([j for j, _ in mine], base)
        for scope in ("global", "local"):
            s[f"harmful/{scope}"] = rate(judged, rows, "harmful_compliance",
                                         lambda r, x=scope: harmful(r) and r["global_or_local"] == x)
        summary[name] = s
    return summary


def cell(c: dict, pct: bool = True) -> str:
    if c.get("rate") is None:
        return "-"
    f = (lambda v: f"{100 * v:.0f}%") if pct else (lambda v: f"{v:.3f}")
    lo, hi = c["ci95"]
    return f"{f(c['rate'])} [{f(lo)}, {f(hi)}] (n={c['n']})"


def win_cell(w) -> str:
    return "-" if w is None else f"{w[0]:.3f} [{w[1][0]:.3f}, {w[1][1]:.3f}]"


def tables(summary: dict) -> str:
    main = markdown_table(
        ["policy", "gold score", "win vs base", "win vs SFT", "harmful rate", "over-refusal",
         "in-language", "correct (arithmetic/antonyms)", "KL to base"],
        [[name, cell(s["gold"], False), win_cell(s.get("win_vs_base")),
          win_cell(s.get("win_vs_sft")), cell(s["harmful"]), cell(s["over_refusal"]),
          cell(s["in_language"]), cell(s["correct"]), f"{s['kl']:.2f}"]
         for name, s in summary.items()])
    langs = markdown_table(
        ["policy", *(f"gold {x}" for x in LANGS), *(f"in-language {x}" for x in LANGS),
         "harmful global", "harmful local"],
        [[name, *(cell(s[f"gold/{x}"], False) for x in LANGS),
          *(cell(s[f"in_language/{x}"]) for x in LANGS),
          cell(s["harmful/global"]), cell(s["harmful/local"])] for name, s in summary.items()])
    per_lang = markdown_table(
        ["policy", *(f"win vs base {x}" for x in LANGS), *(f"harmful {x}" for x in LANGS)],
        [[name, *(win_cell(s.get(f"win_vs_base/{x}")) for x in LANGS),
          *(cell(s[f"harmful/{x}"]) for x in LANGS)] for name, s in summary.items()])
    return (main + "\n\nPer language and per harm scope:\n\n" + langs
            + "\n\nWin-rate against the base model and harmful rate, per language:\n\n" + per_lang)


def plots(out: Path, summary: dict, methods: list[str]) -> list[str]:
    """reward.png and kl.png of the methods' training runs (``eval/plots.py``, the code of
    ``scorealign plot``) and gold_vs_kl.png (gold score against KL to base, one point per
    policy), one colour per policy in every figure. -> the file names."""
    from .plots import plot_points, plot_runs, run_colors

    colors = run_colors(list(summary))
    written = plot_runs({m: out / m for m in methods}, out, colors)
    plot_points({name: (s["kl"], s["gold"]["rate"]) for name, s in summary.items()}, colors,
                "KL to the base model (nats, on own replies)", "gold score (eval prompts)",
                "gold score vs KL to base, one point per policy", out / "gold_vs_kl.png")
    return [p.name for p in written] + ["gold_vs_kl.png"]


def write_report(cfg, out: Path, results: dict, wall: dict, total_s: float) -> str:
    """``report.md`` (tables, machine, wall time), ``results.json`` (every reply and verdict)."""
    rows = [json.loads(line) for line in (out / "data" / "eval_prompts.jsonl").read_text()
            .splitlines()]
    summary = summarise(results, rows)
    table = tables(summary)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    images = plots(out, summary, list(wall))
    head = (f"# scorealign demo ({'quick' if cfg.quick else 'full'}) on {cfg.model}\n\n"
            f"Gold judge: `scorealign/eval/chat_gold.py` (the methods trained on its proxy). "
            f"95% bootstrap intervals over eval prompts; n = prompts in the cell.\n"
            f"Machine: {machine}. Wall time: {total_s:.0f} s "
            f"(alignment: {', '.join(f'{k} {v:.0f} s' for k, v in wall.items())}).\n\n"
            + "".join(f"![{i}]({i}) " for i in images) + "\n\n")
    atomic_write_text(out / "report.md", head + table + "\n")
    atomic_write_text(out / "results.json", json.dumps(
        {"summary": summary, "wall_s": wall, "total_s": total_s,
         "replies": {k: v["texts"] for k, v in results.items()}}, ensure_ascii=False, indent=1,
        default=str))
    return table


def retabulate(out: Path) -> str:
    """Judge the replies stored in ``out/results.json`` again with the current gold judge and
    rewrite the tables of ``report.md`` (the run's header line is kept): for a changed judge or
    report, without sampling again."""
    from .chat_gold import chat_judgement as judge

    stored = json.loads((out / "results.json").read_text())
    rows = [json.loads(line) for line in (out / "data" / "eval_prompts.jsonl").read_text()
            .splitlines()]
    results = {name: {"texts": texts, "judged": [judge(r, c) for r, c in zip(rows, texts)],
                      "kl": stored["summary"][name]["kl"]}
               for name, texts in stored["replies"].items()}
    table = tables(summarise(results, rows))
    head = (out / "report.md").read_text().split("| policy |")[0]
    atomic_write_text(out / "report.md", head + table + "\n")
    return table
