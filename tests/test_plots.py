"""`scorealign plot RUN_DIR [RUN_DIR ...]`: PNGs of reward, KL and held-out reward of two real
tiny runs, one colour per run in every figure, the legend outside the axes; the demos' plots."""

from __future__ import annotations

import pytest

from scorealign.cli import main as cli
from scorealign.eval import plots as P
from scorealign.train import TrainConfig, train


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_model_dir):
    """Two 3-step RLOO runs of different batch sizes, evaluated on held-out prompts."""
    root = tmp_path_factory.mktemp("plot_runs")
    runs = []
    for name, k, prompts in (("rloo_k2", 2, 4), ("rloo_k4", 4, 2)):
        train(TrainConfig(model=tiny_model_dir("llama"), dataset="toy", algo="rloo", k=k,
                          prompts_per_step=prompts, steps=3, micro_batch_size=8,
                          max_new_tokens=4, eval_every=1, eval_prompts=4,
                          output_dir=str(root / name)))
        runs.append(root / name)
    return runs


def figure_colors(monkeypatch) -> list[dict]:
    """Patch save_figure: record {legend label: line colour} of every figure saved."""
    import matplotlib.colors as mc

    seen = []

    def record(fig, path):
        legend = fig.legends[0] if fig.legends else fig.axes[0].get_legend()
        handles = legend.legend_handles if hasattr(legend, "legend_handles") else legend.legendHandles
        fig.canvas.draw()                          # the legend box lies right of every axes box
        right = max(ax.get_window_extent().x1 for ax in fig.axes)
        seen.append({"path": path, "outside": legend.get_window_extent().x0 >= right,
                     "colors": {t.get_text(): mc.to_hex(h.get_color() if hasattr(h, "get_color")
                                                        else h.get_facecolor()[0])
                                for t, h in zip(legend.get_texts(), handles)}})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG fake")

    monkeypatch.setattr(P, "save_figure", record)
    return seen


def test_plot_two_runs_writes_pngs(two_runs, tmp_path, capsys):
    out = tmp_path / "plots"
    assert cli(["plot", *map(str, two_runs), "--output_dir", str(out)]) == 0
    for name in ("reward", "kl", "eval_reward"):
        data = (out / f"{name}.png").read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 10_000, name
    assert "wrote" in capsys.readouterr().out


def test_one_colour_per_run_and_legend_outside(two_runs, tmp_path, monkeypatch):
    seen = figure_colors(monkeypatch)
    P.plot_runs({r.name: r for r in two_runs}, tmp_path)
    assert [s["path"].name for s in seen] == ["reward.png", "kl.png", "eval_reward.png"]
    assert all(s["outside"] for s in seen)
    assert seen[0]["colors"] == seen[1]["colors"] == seen[2]["colors"]
    assert set(seen[0]["colors"]) == {"rloo_k2", "rloo_k4"}
    assert len(set(seen[0]["colors"].values())) == 2


def test_samples_axis_uses_the_runs_batch(two_runs):
    curves = [P.read_run(r) for r in two_runs]
    assert [c.samples_per_step for c in curves] == [8, 8]                 # 4 x 2 and 2 x 4
    steps, values = curves[0].series("eval.jsonl", "eval/reward")
    assert steps == [0, 1, 2, 3] and len(values) == 4
    assert P.samples_per_step({"algo": "dpo", "prompts_per_step": 3}) == 6   # pairs: 2 each
    assert P.samples_per_step({"model": "x"}) is None                       # not a train run


def test_plot_errors_are_one_line(tmp_path, capsys):
    assert cli(["plot", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"scorealign: error: {tmp_path / 'nope'}: not a run directory (no metrics.jsonl)"]
    assert cli(["plot"]) == 2
    assert "no run directory given" in capsys.readouterr().err


def test_toy_demo_plots_share_colours(two_runs, tmp_path, monkeypatch):
    """The toy demo draws through plots.py: gold.png's curves, the SFT baseline and the
    reward_vs_kl.png points carry the same colour per policy, every policy named once."""
    from scorealign.eval import demo_report

    for run, name in zip(two_runs, ("rloo-k2", "rloo-k4")):
        (tmp_path / name).symlink_to(run)
    seen = figure_colors(monkeypatch)
    results = {"policies": {"sft": {"gold": 0.1, "kl": 0.0}, "rloo-k2": {"gold": 0.2, "kl": 0.5},
                            "rloo-k4": {"gold": 0.2, "kl": 0.5}}}     # same point: no clash
    names = demo_report.plots(tmp_path, results, ["rloo-k2", "rloo-k4"])
    assert names == ["reward.png", "kl.png", "gold.png", "reward_vs_kl.png"]
    gold, scatter = seen[2]["colors"], seen[3]["colors"]
    assert set(scatter) == {"sft", "rloo-k2", "rloo-k4"} and all(s["outside"] for s in seen)
    assert gold["rloo-k2"] == scatter["rloo-k2"] and gold["rloo-k4"] == scatter["rloo-k4"]
    assert gold["sft (start)"] == scatter["sft"]


def test_real_demo_report_plots(two_runs, tmp_path, monkeypatch):
    from scorealign.eval import chat_report

    (tmp_path / "rloo-k4").symlink_to(two_runs[1])
    seen = figure_colors(monkeypatch)
    summary = {"base": {"kl": 0.0, "gold": {"rate": 0.3}}, "sft": {"kl": 0.2, "gold": {"rate": 0.4}},
               "rloo-k4": {"kl": 0.4, "gold": {"rate": 0.5}}}
    assert chat_report.plots(tmp_path, summary, ["rloo-k4"]) == [
        "reward.png", "kl.png", "eval_reward.png", "gold_vs_kl.png"]     # this run evaluated
    assert seen[0]["colors"]["rloo-k4"] == seen[3]["colors"]["rloo-k4"]
    assert set(seen[3]["colors"]) == {"base", "sft", "rloo-k4"}          # every policy named
