"""The papers' claims on a real model, with seeds and 95% intervals (issue 25).

    python benchmarks/study.py                  # the full study (2 workers) -> benchmarks/study.md
    python benchmarks/study.py --budget         # its cells and estimated time, runs nothing
    python benchmarks/study.py --smoke          # tiny model, one seed, about a minute
    python benchmarks/study.py --preset measure # one prep + one rloo-k4 cell: the costs

Not part of the test suite (tests/test_study.py runs --smoke). Resumable: every cell
(a seed's prep, or one method's run on one seed) writes ``RESULTS/cells/<id>.json``
atomically and a rerun skips finished cells. Experiments, claims and verdict rule:
``study/plan.py`` and ``study/stats.py``; the report: ``study/report.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the study/ package beside this file

from study.budget import budget_text  # noqa: E402
from study.plan import PRESETS, cells  # noqa: E402

DEFAULT_RESULTS = {"full": "runs/study", "smoke": "runs/study-smoke", "measure": "runs/study-measure"}


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="benchmarks/study.py", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full",
                    help="full (the study), smoke (tiny model, one seed), measure (costs)")
    ap.add_argument("--smoke", action="store_true", help="same as --preset smoke")
    ap.add_argument("--results", help="results directory (default runs/study[-smoke|-measure])")
    ap.add_argument("--report", help="report path (default: full -> benchmarks/study.md, "
                    "else RESULTS/study.md)")
    ap.add_argument("--seeds", help="comma-separated seeds (default: the preset's)")
    ap.add_argument("--workers", type=int, help="worker processes, one thread each (default: 2 "
                    "for the full study, the 2 cores it is budgeted for; else 1)")
    ap.add_argument("--budget", action="store_true", help="print the cells and estimate, exit")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report, run nothing")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)   # a spawned worker
    args = ap.parse_args(argv)
    if args.smoke:
        args.preset = "smoke"
    args.results = Path(args.results or DEFAULT_RESULTS[args.preset])
    default_report = Path(__file__).parent / "study.md" if args.preset == "full" else None
    args.report = Path(args.report) if args.report else (default_report or args.results / "study.md")
    args.workers = args.workers or (2 if args.preset == "full" else 1)
    args.seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    return args


def spawn_workers(args: argparse.Namespace, argv: list[str]) -> None:
    """``--workers N``: N copies of this command, each a worker of one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, *argv, "--worker"], env=env)
             for _ in range(args.workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"study: a worker failed (exit codes {codes}); rerun to resume")


def main(argv: list[str]) -> int:
    import torch

    from study.report import record_end, record_start, write_report
    from study.runner import work_loop

    args = parse(argv)
    todo = cells(args.preset, args.seeds)
    budget = budget_text(args.preset, todo, max(args.workers, 1))
    if args.worker:
        torch.set_num_threads(1)
        work_loop(args.results, args.preset, todo, args.workers)
        return 0
    print(f"[study] preset {args.preset}, results {args.results}: {budget}", flush=True)
    if args.budget:
        return 0
    index = None if args.report_only else record_start(args.results, argv)
    if not args.report_only and PRESETS[args.preset]["model"] != "tiny":
        from scorealign.core import gguf

        gguf.resolve(PRESETS[args.preset]["model"])   # dequantise once, before any worker starts
    if not args.report_only:
        if args.workers > 1:
            spawn_workers(args, argv)
        else:
            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
            work_loop(args.results, args.preset, todo, 1)
        record_end(args.results, index)
    write_report(args.results, args.preset, todo, args.report, budget)
    print(f"[study] report: {args.report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
