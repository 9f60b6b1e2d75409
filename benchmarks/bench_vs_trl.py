"""scorealign vs TRL, side by side, in one invocation: RLOO throughput, peak RSS, the floor, LoRA,
DPO, and a learning check. Each run is a fresh subprocess (``bench_workers.py``).

    python benchmarks/bench_vs_trl.py                 # default (~10 min on 2 busy CPU cores)
    python benchmarks/bench_vs_trl.py --quick         # smoke: fewer steps, 1M model only
    python benchmarks/bench_vs_trl.py --seeds 3       # learning check over 3 seeds
    python benchmarks/bench_vs_trl.py --trl-python /tmp/trlvenv/bin/python

TRL runs in ``--trl-python`` (default: this interpreter); without ``trl`` there its rows say
"not installed". Timings: median seconds per step over steps 2..N (step 1 is warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# name -> (hidden, layers, heads); vocabulary: the 96-token tiny tokenizer. ~1.05M and ~18.9M params.
SIZES = {"1M": (128, 7, 4), "20M": (512, 8, 8)}
RLOO = dict(k=4, prompts_per_step=8, micro_batch=8, max_new=32, beta=0.05)
LR = {"1M": 3e-3, "20M": 1e-5}   # 1M learns within the run (reward check); 20M stays near the floor's


def build_models(workdir: Path, sizes: list[str]) -> dict[str, str]:
    sys.path.insert(0, str(ROOT))
    from scorealign.core.models import quiet_transformers
    from scorealign.core.tiny import build_tiny_model

    quiet_transformers()
    paths = {}
    for name in sizes:
        hidden, layers, heads = SIZES[name]
        path = workdir / f"llama-{name}"
        if not (path / "config.json").exists():
            build_tiny_model(path, arch="llama", hidden=hidden, layers=layers, heads=heads, seed=0)
        paths[name] = str(path)
    return paths


def has_trl(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import trl"], capture_output=True).returncode == 0
    except OSError:                                           # no such interpreter
        return False


def run_worker(spec: dict, python: str, workdir: Path) -> dict:
    """Run one worker in a fresh interpreter; its JSON result, or {"error": ...}."""
    spec_file = Path(tempfile.mkstemp(dir=workdir, suffix=".json")[1])
    out_file = spec_file.with_suffix(".out.json")
    spec_file.write_text(json.dumps(spec))
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(spec["threads"]),
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([python, str(HERE / "bench_workers.py"), str(spec_file), str(out_file)],
                          capture_output=True, text=True, env=env)
    spec_file.unlink()
    if proc.returncode != 0 or not out_file.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:200]}
    result = json.loads(out_file.read_text())
    out_file.unlink()
    return result


def summarise(r: dict, batch: int) -> dict:
    """Median step time over steps 2..N -> completions/s, tokens/s; peak RSS; final reward."""
    if "error" in r or "unavailable" in r:
        return r
    steps, tokens = r["step_s"][1:] or r["step_s"], r["tokens"][1:] or r["tokens"]
    med = statistics.median(steps)
    out = {"step_s": med, "per_s": batch / med, "tokens_per_s": sum(tokens) / sum(steps),
           "rss_mb": r["peak_rss_mb"], "rss_base_mb": r["base_rss_mb"]}
    if r.get("reward"):
        last = r["reward"][-5:]
        out["reward_last5"] = sum(last) / len(last)
    if r.get("sample_s"):                                     # spec "split": step_split.py
        out.update(split_times(r["step_s"], r["sample_s"]))
    if r.get("stages"):                                       # spec "stages": bench_real.py
        out["stages"] = r["stages"]
    if r.get("reward"):
        out["reward"] = r["reward"]
    return out


def split_times(step_s: list[float], sample_s: list[float]) -> dict:
    """Per-step seconds and sampling seconds -> medians over steps 2..N of the step, the
    sampling and the rest (step minus sampling)."""
    steps, sampling = step_s[1:], sample_s[1:len(step_s)]
    return {"step_s": statistics.median(steps), "sample_s": statistics.median(sampling),
            "rest_s": statistics.median(s - g for s, g in zip(steps, sampling))}


def fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def ratio(a: dict, b: dict, key: str, invert: bool = False):
    if key not in a or key not in b:
        return None
    return b[key] / a[key] if invert else a[key] / b[key]


def paired_ratios(ours: dict, peer: dict) -> str:
    """peer s/step / our s/step of each interleaved run (run i of both libraries ran back to back,
    under the same machine load): the spread of the speed ratio itself."""
    a, b = ours.get("runs_step_s"), peer.get("runs_step_s")
    if not a or not b or len(a) != len(b) or len(a) < 2 or None in a + b:
        return ""
    return " (per interleaved run: " + ", ".join(f"{y / x:.2f}x" for x, y in zip(a, b)) + ")"


def median_run(results: list[dict]) -> dict:
    """Of repeated runs of one configuration, the one with the median s/step (errors kept)."""
    ok = sorted((r for r in results if "step_s" in r), key=lambda r: r["step_s"])
    if not ok:
        return results[0]
    pick = dict(ok[(len(ok) - 1) // 2])
    pick["repeats_step_s"] = [round(r["step_s"], 3) for r in ok]
    pick["runs_step_s"] = [r.get("step_s") for r in results]                     # in run order
    return pick


def run_interleaved(jobs: dict, args) -> dict:
    """Run every job ``args.repeats`` times, interleaved (A B C A B C ...), so that a change in
    machine load hits every library alike; each job's median run."""
    results = {name: [] for name in jobs}
    for r in range(args.repeats):
        for name, (spec, python, batch, label) in jobs.items():
            print(f"  {label} (run {r + 1}/{args.repeats}) ...", flush=True)
            results[name].append(summarise(run_worker(spec, python, args.workdir), batch))
            with open(Path(args.workdir) / "runs.jsonl", "a") as f:   # each run as it ends
                f.write(json.dumps({"label": label, "run": r, **results[name][-1]}) + "\n")
    return {name: median_run(rs) for name, rs in results.items()}


def rloo_rows(args, models: dict, trl_ok: bool) -> list[dict]:
    rows = []
    batch = RLOO["k"] * RLOO["prompts_per_step"]
    for size, path in models.items():
        spec = dict(RLOO, model=path, seed=0, steps=args.steps, lr=LR[size], threads=args.threads)
        runs = {"floor": ("floor", sys.executable, {}), "scorealign": ("ours", sys.executable, {})}
        runs["TRL"] = ("trl", args.trl_python, {}) if trl_ok else None
        if size != "1M" and not args.quick:
            runs["scorealign+LoRA"] = ("ours", sys.executable,
                                       {"ours_extra": {"lora_r": 8, "lora_alpha": 16}})
        jobs = {name: ({**spec, **extra, "worker": worker}, python, batch, f"RLOO {size} {name}")
                for name, job in runs.items() if job is not None for worker, python, extra in [job]}
        done = run_interleaved(jobs, args)
        for name in runs:
            rows.append({"size": size, "lib": name, **(done.get(name) or
                                                       {"unavailable": "trl not installed"})})
    return rows


def learning_rows(args, models: dict, trl_ok: bool) -> list[dict]:
    """Mean reward over the last 5 of ``--learn-steps`` steps, seeds 0..seeds-1, 1M model."""
    rows = []
    for lib, worker, python in [("scorealign", "ours", sys.executable),
                                ("TRL", "trl", args.trl_python)][:2 if trl_ok else 1]:
        for seed in range(args.seeds):
            spec = dict(RLOO, model=models["1M"], seed=seed, steps=args.learn_steps, lr=LR["1M"],
                        threads=args.threads, worker=worker)
            print(f"  learning {lib} seed {seed} ...", flush=True)
            rows.append({"lib": lib, "seed": seed,
                         **summarise(run_worker(spec, python, args.workdir), 32)})
    return rows


def dpo_rows(args, models: dict, trl_ok: bool) -> list[dict]:
    """DPO throughput at every model size: 8 pairs per step, micro-batches of 8 sequences."""
    rows = []
    for size, path in models.items():
        spec = dict(model=path, seed=0, steps=args.dpo_steps, pairs_per_step=8, micro_batch=8,
                    beta=0.1, lr=1e-5, threads=args.threads)
        libs = [("scorealign", "ours_dpo", sys.executable), ("TRL", "trl_dpo", args.trl_python)]
        jobs = {lib: ({**spec, "worker": worker}, python, spec["pairs_per_step"],
                      f"DPO {size} {lib}")
                for lib, worker, python in libs if lib != "TRL" or trl_ok}
        done = run_interleaved(jobs, args)
        rows += [{"size": size, "lib": lib, **(done.get(lib) or {"unavailable": "trl not installed"})}
                 for lib, _, _ in libs]
    return rows


def print_report(rloo: list[dict], learn: list[dict], dpo: list[dict]) -> None:
    print("\n## RLOO (batch 32 = 8 prompts x k=4, 32 new tokens, micro-batch 8)\n")
    print("| size | library | s/step | completions/s | tokens/s | peak RSS MB | RSS over imports MB "
          "| s/step of each run |")
    print("|---|---|---|---|---|---|---|---|")
    by = {(r["size"], r["lib"]): r for r in rloo}
    for r in rloo:
        if "step_s" not in r:
            print(f"| {r['size']} | {r['lib']} | {r.get('unavailable') or r.get('error')} |||||")
            continue
        print(f"| {r['size']} | {r['lib']} | {r['step_s']:.3f} | {r['per_s']:.1f} | "
              f"{r['tokens_per_s']:.0f} | {r['rss_mb']:.0f} | {r['rss_mb'] - r['rss_base_mb']:.0f} | "
              f"{r.get('repeats_step_s', '-')} |")
    print("\n| size | completions/s ours/TRL | tokens/s ours/TRL | peak RSS ours/TRL | "
          "overhead over floor (s/step) | RSS LoRA/full |")
    print("|---|---|---|---|---|---|")
    for size in dict.fromkeys(r["size"] for r in rloo):
        ours, trl = by.get((size, "scorealign"), {}), by.get((size, "TRL"), {})
        floor, lora = by.get((size, "floor"), {}), by.get((size, "scorealign+LoRA"), {})
        over = ratio(ours, floor, "step_s")
        print(f"| {size} | {fmt(ratio(ours, trl, 'per_s'), '.2f')}x | "
              f"{fmt(ratio(ours, trl, 'tokens_per_s'), '.2f')}x | "
              f"{fmt(ratio(ours, trl, 'rss_mb'), '.2f')} | "
              f"{fmt(None if over is None else 100 * (over - 1), '+.0f')}% | "
              f"{fmt(ratio(lora, ours, 'rss_mb'), '.2f')} |")
    for size in dict.fromkeys(r["size"] for r in rloo):
        pairs = paired_ratios(by.get((size, "scorealign"), {}), by.get((size, "TRL"), {}))
        if pairs:
            print(f"- {size}: completions/s ours/TRL{pairs}")
    if learn:
        print("\n## Learning check (1M, reward = count of 'yes', mean of the last 5 steps)\n")
        for lib in dict.fromkeys(r["lib"] for r in learn):
            vals = [r["reward_last5"] for r in learn if r["lib"] == lib and "reward_last5" in r]
            spread = statistics.stdev(vals) if len(vals) > 1 else float("nan")
            print(f"- {lib}: per seed {[round(v, 2) for v in vals]}; mean "
                  f"{statistics.mean(vals) if vals else float('nan'):.2f} +- {spread:.2f} (std)")
    if dpo:
        print("\n## DPO (8 pairs per step, micro-batch 8 sequences)\n")
        print("| size | library | s/step | pairs/s | peak RSS MB | s/step of each run |\n"
              "|---|---|---|---|---|---|")
        for r in dpo:
            if "step_s" not in r:
                print(f"| {r['size']} | {r['lib']} | {r.get('unavailable') or r.get('error')} ||||")
                continue
            print(f"| {r['size']} | {r['lib']} | {r['step_s']:.3f} | {r['per_s']:.1f} | "
                  f"{r['rss_mb']:.0f} | {r.get('repeats_step_s', '-')} |")
        print()
        for size in dict.fromkeys(r["size"] for r in dpo):
            ours, trl = (next((r for r in dpo if r["lib"] == n and r["size"] == size), {})
                         for n in ("scorealign", "TRL"))
            print(f"- {size}: pairs/s ours/TRL {fmt(ratio(ours, trl, 'per_s'), '.2f')}x"
                  f"{paired_ratios(ours, trl)}; "
                  f"peak RSS ours/TRL {fmt(ratio(ours, trl, 'rss_mb'), '.2f')}")


def real_model(args) -> dict:
    """``--model``: bench_real.run_real (fewer steps under --quick), results also to --json."""
    sys.path[:0] = [str(HERE), str(ROOT)]
    from bench_real import run_real

    if args.quick:
        args.steps, args.only = min(args.steps, 2), ["rloo"]
    trl_ok = has_trl(args.trl_python)
    print(f"TRL: {'found in ' + args.trl_python if trl_ok else 'not installed (skipped)'}")
    results = run_real(args, trl_ok)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1M only, 4 steps, no LoRA/DPO/learning")
    p.add_argument("--skip", nargs="*", default=[],
                   help="--model: leave out the runs whose name contains one of these (e.g. LoRA)")
    p.add_argument("--model", help="a real model (alias such as smollm2-135m, or a folder): the "
                                   "real-model benchmark of bench_real.py instead of the toy sizes")
    p.add_argument("--steps", type=int, default=8, help="RLOO steps per throughput run")
    p.add_argument("--dpo-steps", type=int, default=24,
                   help="DPO steps per throughput run (a DPO step is ~4x shorter than an RLOO step: "
                        "more of them for a median as steady)")
    p.add_argument("--learn-steps", type=int, default=25, help="steps per learning-check run")
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES),
                   help="model sizes for the RLOO rows (default: all)")
    p.add_argument("--only", nargs="+", choices=["rloo", "learning", "dpo"],
                   default=["rloo", "learning", "dpo"], help="parts to run (default: all)")
    p.add_argument("--seeds", type=int, default=1, help="learning-check seeds (3 for the spread)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per throughput configuration, interleaved; the median is reported")
    p.add_argument("--threads", type=int, default=1, help="torch threads in every run")
    p.add_argument("--trl-python", default=sys.executable, help="interpreter that has trl")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scorealign-bench")
    p.add_argument("--json", type=Path, help="also write all results here")
    args = p.parse_args(argv)
    if args.quick:
        args.steps = min(args.steps, 4)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.model:
        return real_model(args)
    sizes = ["1M"] if args.quick else args.sizes
    models = build_models(args.workdir, sorted(set(sizes) | ({"1M"} if "learning" in args.only else set())))
    trl_ok = has_trl(args.trl_python)
    print(f"TRL: {'found in ' + args.trl_python if trl_ok else 'not installed (skipped)'}")
    rloo = rloo_rows(args, {s: models[s] for s in sizes}, trl_ok) if "rloo" in args.only else []
    learn = [] if args.quick or "learning" not in args.only else learning_rows(args, models, trl_ok)
    dpo = ([] if args.quick or "dpo" not in args.only
           else dpo_rows(args, {s: models[s] for s in sizes}, trl_ok))
    print_report(rloo, learn, dpo)
    results = {"rloo": rloo, "learning": learn, "dpo": dpo, "load": os.getloadavg()}
    print(f"\nload average at the end: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
