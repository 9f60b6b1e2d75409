"""Where an RLOO step goes: sampling vs everything else, scorealign and TRL, same settings as
``bench_vs_trl.py``.

    python benchmarks/step_split.py --trl-python /tmp/trlvenv/bin/python            # 1M, ~1 min
    python benchmarks/step_split.py --sizes 1M 20M --repeats 3 --trl-python ...

Sampling is the time inside ``scorealign.engine.generation.sample`` (ours) or ``model.generate``
(TRL); the rest is the step minus that: reference log-probs, reward, forward/backward, optimizer
(and, for TRL, its extra "old log-probs" forward). Medians over steps 2..N of each run
(``bench_vs_trl.split_times``), the run with the median step of ``--repeats`` interleaved runs
(``bench_vs_trl.run_interleaved``). The last figure, TRL's step over our step WITHOUT its
sampling, is the ratio we would reach with a sampler that costs nothing: the ceiling on what a
faster sampler can buy (benchmarks/README.md, "How far arithmetic alone goes").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench_vs_trl import LR, RLOO, SIZES, build_models, has_trl, run_interleaved


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["1M"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--trl-python", default=sys.executable)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "scorealign-bench")
    args = p.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    models = build_models(args.workdir, args.sizes)
    libs = {"scorealign": ("ours", sys.executable)}
    if has_trl(args.trl_python):
        libs["TRL"] = ("trl", args.trl_python)
    batch = RLOO["k"] * RLOO["prompts_per_step"]
    rows = []
    for size, path in models.items():
        spec = dict(RLOO, model=path, seed=0, steps=args.steps, lr=LR[size], threads=args.threads,
                    split=True)
        jobs = {lib: ({**spec, "worker": worker}, python, batch, f"{size} {lib}")
                for lib, (worker, python) in libs.items()}
        rows += [{"size": size, "lib": lib, **r} for lib, r in run_interleaved(jobs, args).items()]
    print("\n| size | library | s/step | sampling s | rest s | sampling share |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "sample_s" in row:
            print(f"| {row['size']} | {row['lib']} | {row['step_s']:.3f} | {row['sample_s']:.3f} | "
                  f"{row['rest_s']:.3f} | {row['sample_s'] / row['step_s']:.0%} |")
        else:
            print(f"| {row['size']} | {row['lib']} | {row.get('error', '?')} | | | |")
    by = {(r["size"], r["lib"]): r for r in rows if "sample_s" in r}
    for size in models:
        ours, trl = by.get((size, "scorealign")), by.get((size, "TRL"))
        if ours and trl:
            print(f"- {size}: step {trl['step_s'] / ours['step_s']:.2f}x, sampling "
                  f"{trl['sample_s'] / ours['sample_s']:.2f}x, rest {trl['rest_s'] / ours['rest_s']:.2f}x; "
                  f"with a sampler that costs nothing: {trl['step_s'] / ours['rest_s']:.2f}x")
    return rows


if __name__ == "__main__":
    main()
