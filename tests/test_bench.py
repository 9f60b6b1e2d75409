"""Smoke test of benchmarks/bench_vs_trl.py: the floor and scorealign workers on a tiny model,
1 step each (no timings asserted); the TRL side only if trl is importable."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("worker", ["floor", "ours", "ours_dpo", "trl"])
def test_benchmark_worker_runs_one_step(worker, tiny_model_dir, tmp_path):
    if worker == "trl":
        pytest.importorskip("trl")
    bench = load("bench_vs_trl")
    spec = dict(bench.RLOO, model=tiny_model_dir("llama"), seed=0, steps=2, lr=1e-4, threads=1,
                worker=worker, prompts_per_step=2, micro_batch=4, max_new=4, pairs_per_step=2)
    res = bench.run_worker(spec, sys.executable, tmp_path)
    if worker == "ours_dpo" and "unavailable" in res:
        pytest.skip(res["unavailable"])
    assert "error" not in res, res
    assert len(res["step_s"]) == 2 and res["peak_rss_mb"] > 0
    row = bench.summarise(res, 8)
    assert row["per_s"] > 0 and json.dumps(row)
