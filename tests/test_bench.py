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


def test_repeated_runs_interleave_and_report_the_median(monkeypatch, tmp_path):
    bench = load("bench_vs_trl")
    order, times = [], iter([3.0, 1.0, 2.0, 9.0, 1.5, 4.0])
    monkeypatch.setattr(bench, "run_worker", lambda spec, python, workdir: order.append(
        spec["worker"]) or {"step_s": [next(times)] * 2, "tokens": [1.0] * 2, "reward": [],
                            "peak_rss_mb": 1.0, "base_rss_mb": 0.5})
    args = type("A", (), {"repeats": 3, "workdir": tmp_path})()
    jobs = {"a": ({"worker": "a"}, "py", 8, "A"), "b": ({"worker": "b"}, "py", 8, "B")}
    done = bench.run_interleaved(jobs, args)
    assert order == ["a", "b"] * 3                                   # interleaved
    assert done["a"]["step_s"] == 2.0 and done["b"]["step_s"] == 4.0  # medians of 3, 2, 1.5 / 1, 9, 4
    assert done["a"]["repeats_step_s"] == [1.5, 2.0, 3.0]
    assert done["a"]["runs_step_s"] == [3.0, 2.0, 1.5]                # run order kept
    # b ran right after a in each round: b/a per round = 1/3, 9/2, 4/1.5
    assert bench.paired_ratios(done["a"], done["b"]) == " (per interleaved run: 0.33x, 4.50x, 2.67x)"
    assert bench.paired_ratios(done["a"], {}) == ""


def test_arithmetic_counts_token_passes_by_hand():
    """benchmarks/arithmetic.py: lean = each shared prompt once + completions but their last
    token; padded = rows x (longest prompt + longest completion); a backward counts twice."""
    arith = load("arithmetic")
    p, c = [3, 3, 5, 5], [4, 1, 2, 6]                   # two groups of 2 sharing a prompt
    assert arith.lean_tokens(p, c, 2) == 3 + 5 + (3 + 0 + 1 + 5)
    assert arith.padded_tokens(p, c) == 4 * (5 + 6)
    # DPO, micro-batches of 2 rows (one pair each): reference forward + forward/backward = 4 passes
    assert arith.dpo_passes(p, c, 2) == {"ours": 4 * ((3 + 3) + (5 + 6)),
                                         "padded": 4 * (2 * (3 + 4) + 2 * (5 + 6))}
    # RLOO, k = 2, one micro-batch: prefill (ours: one row per prompt), 5 decode steps of 4 rows,
    # ours: reference + forward/backward; padded: also TRL's old-log-prob forward
    lean, padded = arith.lean_tokens(p, c, 2), arith.padded_tokens(p, c)
    assert arith.rloo_passes(p, c, 2, 4) == {"ours": 2 * 5 + 4 * 5 + 4 * lean,
                                             "padded": 4 * 5 + 4 * 5 + 5 * padded}


def test_step_split_times_sampling_inside_a_real_step(tiny_model_dir, tmp_path):
    """benchmarks/step_split.py: the worker records one sampling time per step, each shorter
    than its step, and ``split`` takes medians over steps 2..N."""
    bench = load("bench_vs_trl")
    spec = dict(bench.RLOO, model=tiny_model_dir("llama"), seed=0, steps=3, lr=1e-4, threads=1,
                worker="ours", prompts_per_step=2, micro_batch=4, max_new=4, split=True)
    res = bench.run_worker(spec, sys.executable, tmp_path)
    assert "error" not in res, res
    assert len(res["sample_s"]) == len(res["step_s"]) == 3
    assert all(0 < g < s for g, s in zip(res["sample_s"], res["step_s"]))
    row = bench.split_times([9.0, 1.0, 3.0, 2.0], [5.0, 0.5, 1.0, 1.5])
    assert row == {"step_s": 2.0, "sample_s": 1.0, "rest_s": 0.5}   # rests 0.5, 2.0, 0.5
    assert bench.summarise(res, 8)["rest_s"] > 0                     # what step_split.py prints


def test_real_model_quick_mode_reports_stages_against_the_machine(tiny_model_dir, tmp_path,
                                                                  monkeypatch):
    """``--model ... --quick`` (bench_real.py): chat prompts, our RLOO row with per-stage
    GFLOP/s against the rates measured in the run, the decode step against the memory bound;
    bf16 rows say why they did not run where the CPU has no native bf16."""
    from scorealign.core import precision

    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    bench = load("bench_vs_trl")
    res = bench.main(["--model", tiny_model_dir("llama"), "--quick", "--threads", "1",
                      "--workdir", str(tmp_path), "--trl-python", "/nonexistent/python"])
    assert res["machine"]["fp32"] > 0 and res["machine"]["bw"] > 0
    ours = res["rloo"]["scorealign fp32"]
    assert "error" not in ours, ours
    assert ours["step_s"] > 0 and ours["rss_mb"] > 0
    assert "no native bf16" in res["rloo"]["scorealign bf16"]["unavailable"]
    assert res["rloo"]["TRL fp32"] == {"unavailable": "trl not installed"}
    stages = {r["stage"]: r for r in res["roofline"]}
    assert set(stages) == {"sampling", "reference", "train", "decode step"}
    assert all(stages[s]["gflops"] > 0 for s in ("sampling", "reference", "train"))
    assert stages["decode step"]["x_bound"] > 0


def test_learning_check_task_scores_the_arith_answers_alike_for_both_libraries(tiny_model_dir,
                                                                               tmp_path,
                                                                               monkeypatch):
    """The learning check's task (bench_real.LEARN): the arith rows with their answers, scored by
    builtin:math whether a library passes text or chat messages; our worker learns on it."""
    pytest.importorskip("math_verify")
    monkeypatch.syspath_prepend(str(BENCH))             # bench_real imports its siblings
    workers, real = load("bench_workers"), load("bench_real")
    rows = workers.task_rows({"task": "arith", "seed": 0})
    assert len(rows) == 520 and all(set(r) == {"prompt", "answer"} for r in rows)
    assert workers.reward_of({"task": "arith"}) is workers.math_answer
    scores = workers.math_answer(["p"] * 3, ["3 * 3 = 9.", [{"role": "assistant", "content": "9"}],
                                             "The answer is 8."], answer=["9", "9", "9"])
    assert scores == [1.0, 1.0, 0.0]
    d, lo, hi = real.t_interval([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])
    assert abs(d - 0.1) < 1e-12 and lo < 0 < hi
    bench = load("bench_vs_trl")
    spec = {**bench.RLOO, **real.LEARN, "model": tiny_model_dir("llama"), "seed": 0, "steps": 1,
            "threads": 1, "worker": "ours", "prompts_per_step": 2, "micro_batch": 4, "max_new": 4,
            "chat": True}
    res = bench.run_worker(spec, sys.executable, tmp_path)
    assert len(res["reward"]) == 1 and 0.0 <= res["reward"][0] <= 1.0
