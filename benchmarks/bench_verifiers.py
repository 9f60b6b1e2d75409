"""Throughput of ``builtin:unit_tests``: score N completions with 5 tests each, isolated.

    python benchmarks/bench_verifiers.py                  # 256 completions, isolated (bwrap)
    python benchmarks/bench_verifiers.py --no-isolation   # the same with resource limits only

The completions mix what a policy writes: right (40%), wrong (30%), raising (10%), syntax errors
(10%), prose without code (5%), and an endless loop (5%, each costs the wall-clock timeout of its
program, ``--timeout``). One program per completion, as many at a time as there are cores
(``isolation.workers()``). Prints the wall time, completions/s, and the per-kind mean reward.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scorealign.rewards.isolation import backend, workers
from scorealign.rewards.verifiers import UNIT_TEST_LIMITS, UnitTestReward

TESTS = "\n".join(f"assert clamp({x}, 0, 10) == {min(max(x, 0), 10)}" for x in (-5, 0, 3, 10, 99))
KINDS = {
    "right": (40, "```python\ndef clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n```"),
    "wrong": (30, "```python\ndef clamp(x, lo, hi):\n    return min(x, hi)\n```"),
    "raises": (10, "```python\ndef clamp(x, lo, hi):\n    raise NotImplementedError\n```"),
    "syntax": (10, "```python\ndef clamp(x, lo, hi)\n    return x\n```"),
    "prose": (5, "You should clamp x between lo and hi."),
    "endless": (5, "```python\ndef clamp(x, lo, hi):\n    while x:\n        pass\n```"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256, help="completions to score")
    ap.add_argument("--timeout", type=float, default=2.0, help="wall-clock limit per program (s)")
    ap.add_argument("--no-isolation", action="store_true", help="resource limits only")
    args = ap.parse_args()
    kinds = [k for k, (pct, _) in KINDS.items() for _ in range(pct)]
    rows = [kinds[i * len(kinds) // args.n] for i in range(args.n)]
    completions = [KINDS[k][1] for k in rows]
    limits = replace(UNIT_TEST_LIMITS, timeout_s=args.timeout, cpu_s=max(1, int(args.timeout)))
    reward = UnitTestReward(isolate=not args.no_isolation, limits=limits)
    t0 = time.perf_counter()
    scores = reward(["p"] * args.n, completions, tests=[TESTS] * args.n)
    wall = time.perf_counter() - t0
    print(f"backend={backend() if not args.no_isolation else 'none (limits only)'} "
          f"workers={workers()} cpus={os.cpu_count()} load1={os.getloadavg()[0]:.1f}")
    print(f"{args.n} completions x 5 tests: {wall:.1f} s ({args.n / wall:.1f} completions/s)")
    for kind in KINDS:
        got = [s for s, k in zip(scores, rows) if k == kind]
        print(f"  {kind:8s} n={len(got):3d} mean reward {sum(got) / max(1, len(got)):.2f}")


if __name__ == "__main__":
    main()
