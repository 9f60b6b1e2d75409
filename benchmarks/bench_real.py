"""The real-model part of ``bench_vs_trl.py`` (``--model smollm2-135m``): RLOO and DPO, this
project at fp32 and bf16 (``precision``), TRL at fp32 and bf16, LoRA, the learning check, and
per stage the achieved GFLOP/s against the machine's rates measured in the same run
(``roofline.py``). Each run is a fresh subprocess (``bench_workers.py``), interleaved.

A bf16 row runs only where the CPU has native bf16 products (``scorealign.core.precision``);
elsewhere it says why (emulated bf16 products are ~50x slower than float32: not a measurement
worth minutes of a shared machine).
"""

from __future__ import annotations

import statistics
import sys

from bench_vs_trl import paired_ratios, run_interleaved, run_worker
from roofline import decode_bound_s, machine_rates, model_dims, stage_flops

RLOO = dict(k=4, prompts_per_step=4, micro_batch=16, max_new=32, beta=0.05, lr=1e-5, chat=True)
DPO = dict(pairs_per_step=8, micro_batch=16, beta=0.1, lr=1e-5, chat=True)


def resolve(model: str) -> tuple[str, object]:
    """(local folder, transformers config) of ``model`` (an embedded alias is dequantised once)."""
    from transformers import AutoConfig

    from scorealign.core import gguf

    path = gguf.resolve(model)
    return path, AutoConfig.from_pretrained(path)


def variants(args, bf16_ok: bool, trl_ok: bool) -> dict:
    """name -> (worker suffix, python, spec extras) or a reason it does not run."""
    no_bf16 = "not run: no native bf16 on this CPU (precision=bf16 falls back to fp32)"
    out = {"scorealign fp32": ("", sys.executable, {}),
           "scorealign bf16": ("", sys.executable, {"precision": "bf16"}) if bf16_ok else no_bf16,
           "TRL fp32": ("trl", args.trl_python, {}) if trl_ok else "trl not installed",
           "TRL bf16": (("trl", args.trl_python, {"precision": "bf16"}) if bf16_ok else no_bf16)
           if trl_ok else "trl not installed"}
    if not args.quick:
        out["scorealign fp32 LoRA r=8"] = ("", sys.executable,
                                           {"ours_extra": {"lora_r": 8, "lora_alpha": 16}})
        if bf16_ok:
            out["scorealign bf16 LoRA r=8"] = ("", sys.executable, {
                "precision": "bf16", "ours_extra": {"lora_r": 8, "lora_alpha": 16}})
    return {name: v for name, v in out.items()
            if not any(word in name for word in getattr(args, "skip", []))}


def table(kind: str, args, path: str, bf16_ok: bool, trl_ok: bool) -> dict:
    """Interleaved runs of every variant of ``kind`` (rloo | dpo); name -> summary or reason."""
    base = RLOO if kind == "rloo" else DPO
    steps = args.steps if kind == "rloo" else args.dpo_steps
    batch = base["k"] * base["prompts_per_step"] if kind == "rloo" else base["pairs_per_step"]
    jobs, rows, names = {}, {}, variants(args, bf16_ok, trl_ok)
    for name, v in names.items():
        if isinstance(v, str):
            rows[name] = {"unavailable": v}
            continue
        lib, python, extra = v
        worker = {("", "rloo"): "ours", ("trl", "rloo"): "trl", ("", "dpo"): "ours_dpo",
                  ("trl", "dpo"): "trl_dpo"}[lib, kind]
        spec = dict(base, model=path, seed=0, steps=steps, threads=args.threads, worker=worker,
                    stages=kind == "rloo" and lib == "", **extra)
        jobs[name] = (spec, python, batch, f"{kind.upper()} {name}")
    done = run_interleaved(jobs, args)
    return {name: rows.get(name) or done[name] for name in names}


# the learning check: RLOO on the embedded one-step arithmetic task (examples/verifiable/), the
# reward scorealign's builtin:math in both libraries; the base model starts near a third right
LEARN = dict(task="arith", lr=3e-5, max_new=24)


def learning(args, path: str, trl_ok: bool) -> dict:
    """Per library, per seed (0..seeds-1): the mean reward of the first and of the last 3 of
    ``--learn-steps`` RLOO steps on the arith task, fp32."""
    out = {}
    for lib, worker, python in [("scorealign", "ours", sys.executable),
                                ("TRL", "trl", args.trl_python)][:2 if trl_ok else 1]:
        vals = []
        for seed in range(args.seeds):
            print(f"  learning {lib} seed {seed} ...", flush=True)
            spec = dict(RLOO, **LEARN, model=path, seed=seed, steps=args.learn_steps,
                        threads=args.threads, worker=worker)
            r = run_worker(spec, python, args.workdir)
            if r.get("reward"):
                vals.append({"first": r["reward"][0], "last3": statistics.mean(r["reward"][-3:]),
                             "step_s": statistics.median(r["step_s"][1:] or r["step_s"])})
        out[lib] = vals
    return out


def t_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its Welch 95% interval (t quantile at the Welch degrees of
    freedom rounded down: ``study.stats.t975``, no scipy)."""
    from study.stats import t975

    ma, mb = statistics.mean(a), statistics.mean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = (va + vb) ** 0.5
    if se == 0:
        return ma - mb, ma - mb, ma - mb
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    h = t975(max(1, int(dof))) * se
    return ma - mb, ma - mb - h, ma - mb + h


def roofline_rows(rloo: dict, dims: dict, rates: dict) -> list[dict]:
    """Per stage of our RLOO runs: median seconds, GFLOP/s achieved, fraction of the matching
    matrix-product rate; the decode step against its weight-streaming bound."""
    rows = []
    for name, r in rloo.items():
        st = r.get("stages") or {}
        if not st.get("tokens"):
            continue
        dt = "bf16" if "bf16" in name else "fp32"
        tok = {k: statistics.median(t[k] for t in st["tokens"][1:] or st["tokens"])
               for k in st["tokens"][0]}
        flops = stage_flops(dims, tok)
        med = lambda xs: statistics.median(xs[1:] or xs)  # noqa: E731
        secs = {"sampling": med(st["sample_s"]), "reference": med(st["reference_s"])}
        secs["train"] = r["step_s"] - secs["sampling"] - secs["reference"]
        for stage, s in secs.items():
            gf = flops[stage] / s / 1e9
            rows.append({"run": name, "stage": stage, "s": s, "gflops": gf,
                         "of_rate": gf / rates[dt], "rate": dt})
        step = med(st["decode_step_s"])
        bound = decode_bound_s(dims, 2 if dt == "bf16" else 4, rates["bw"])
        rows.append({"run": name, "stage": "decode step", "s": step, "bound_s": bound,
                     "x_bound": step / bound})
    return rows


def print_real(results: dict) -> None:
    m = results["machine"]
    print(f"\n## Real model {results['model']} ({results['threads']} threads)\n")
    print(f"machine: fp32 {m['fp32']:.0f} GFLOP/s, bf16 {m['bf16']:.1f} GFLOP/s (shapes "
          f"{m['shapes']}), copy bandwidth {m['bw']:.1f} GB/s; native bf16: {results['bf16_ok']}; "
          f"load average {results['load']}")
    for kind, unit in (("rloo", "completions/s"), ("dpo", "pairs/s")):
        print(f"\n### {kind.upper()}\n\n| run | s/step | {unit} | tokens/s | peak RSS MB | "
              "s/step of each run |\n|---|---|---|---|---|---|")
        rows = results[kind]
        for name, r in rows.items():
            if "step_s" not in r:
                print(f"| {name} | {r.get('unavailable') or r.get('error')} |||||")
                continue
            print(f"| {name} | {r['step_s']:.2f} | {r['per_s']:.2f} | {r['tokens_per_s']:.0f} | "
                  f"{r['rss_mb']:.0f} | {r.get('repeats_step_s', '-')} |")
        ours, trl = rows.get("scorealign fp32", {}), rows.get("TRL fp32", {})
        if "step_s" in ours and "step_s" in trl:
            print(f"\nTRL fp32 s/step / scorealign fp32 s/step: {trl['step_s'] / ours['step_s']:.2f}x"
                  f"{paired_ratios(ours, trl)}; peak RSS ours/TRL "
                  f"{ours['rss_mb'] / trl['rss_mb']:.2f}")
    if results.get("roofline"):
        print("\n### Per stage (scorealign RLOO, median over steps 2..N)\n\n| run | stage | s | "
              "GFLOP/s | of the measured matmul rate |\n|---|---|---|---|---|")
        for r in results["roofline"]:
            if "bound_s" in r:
                print(f"| {r['run']} | decode step | {r['s'] * 1e3:.1f} ms | - | "
                      f"{r['x_bound']:.2f}x the weight-streaming bound ({r['bound_s'] * 1e3:.1f} ms) |")
            else:
                print(f"| {r['run']} | {r['stage']} | {r['s']:.2f} | {r['gflops']:.1f} | "
                      f"{100 * r['of_rate']:.0f}% of {r['rate']} |")
    learn = results.get("learning") or {}
    for lib, vals in learn.items():
        last = [v["last3"] for v in vals]
        spread = statistics.stdev(last) if len(last) > 1 else float("nan")
        print(f"- learning {lib} (arith task, builtin:math): reward at step 1 "
              f"{[round(v['first'], 2) for v in vals]}, mean of the last 3 steps "
              f"{[round(x, 2) for x in last]}; mean {statistics.mean(last):.3f} +- {spread:.3f} "
              f"(sd over seeds); median {statistics.median(v['step_s'] for v in vals):.1f} s/step")
    if len(learn) == 2 and all(len(v) > 1 for v in learn.values()):
        (a, va), (b, vb) = learn.items()
        d, lo, hi = t_interval([v["last3"] for v in va], [v["last3"] for v in vb])
        print(f"- learning {a} - {b}: {d:+.3f} [95% Welch interval {lo:+.3f}, {hi:+.3f}] "
              f"({'within noise' if lo <= 0 <= hi else 'separated'})")


def run_real(args, trl_ok: bool) -> dict:
    """Every part of the real-model benchmark; the results dict (also printed)."""
    import os

    from scorealign.core.precision import bf16_supported

    path, config = resolve(args.model)
    dims = model_dims(config)
    bf16_ok = bf16_supported("cpu")
    print(f"model {args.model} at {path}; measuring the machine ...", flush=True)
    rates = machine_rates(args.threads, quick=args.quick)
    results = {"model": args.model, "threads": args.threads, "machine": rates, "bf16_ok": bf16_ok}
    results["rloo"] = table("rloo", args, path, bf16_ok, trl_ok) if "rloo" in args.only else {}
    results["dpo"] = (table("dpo", args, path, bf16_ok, trl_ok)
                      if "dpo" in args.only and not args.quick else {})
    results["learning"] = (learning(args, path, trl_ok)
                           if "learning" in args.only and not args.quick else {})
    results["roofline"] = roofline_rows(results["rloo"], dims, rates)
    results["load"] = [round(x, 2) for x in os.getloadavg()]
    print_real(results)
    return results

