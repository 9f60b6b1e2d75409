"""`scorealign demo --toy --quick`: the whole pipeline end to end (SFT -> reward model -> every method ->
gold evaluation) on the embedded task; the report's structure, and alignment beating SFT."""

import json

import pytest

from scorealign.cli import main as cli
from scorealign.recipes.demo import METHODS


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli(["demo", "--toy", "--quick", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for stage in range(1, 7):
        assert f"[{stage}/6]" in printed                                   # progress by stage
    results = json.loads((out / "results.json").read_text())
    policies = results["policies"]
    assert set(policies) == {"sft", *METHODS}
    for r in policies.values():
        assert set(r) >= {"gold", "win_vs_sft", "win_ci95", "kl", "in_language", "harmful",
                          "harmful_by_language_scope", "over_refusal", "wall_s"}
        assert len(r["harmful_by_language_scope"]) == 8                   # 4 languages x global/local
        assert all(set(c) == {"rate", "n"} for c in r["harmful_by_language_scope"].values())
    report = (out / "report.md").read_text()
    assert "| policy | gold | win vs SFT" in report and "Harmful rate by language" in report
    harm = report.split("## Harmful rate by language x global/local")[1]
    assert harm.count("(n=") == 8 * len(policies)                         # every cell carries n
    for png in ("reward.png", "kl.png", "gold.png", "reward_vs_kl.png"):   # through eval/plots.py
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in report
    assert "| policy | gold |" in printed                                  # the table, printed
    best = max(r["gold"] for name, r in policies.items() if name != "sft")
    assert best > policies["sft"]["gold"], {k: v["gold"] for k, v in policies.items()}

    # the cross-lingual transfer experiment (issue 7) on this demo run's models and data
    from scorealign.recipes.transfer import run_transfer

    transfer = run_transfer(out, steps=2)
    assert set(transfer) == {"sft", "dpo-english", "rloo-english", "dpo-all", "rloo-all"}
    assert all(set(r) == {"en", "fr", "es", "ru", "all"} for r in transfer.values())
    assert "| policy (training data) | en | fr | es | ru | all |" in (
        out / "transfer" / "report.md").read_text()
    english = [json.loads(x)["language"] for x in (out / "transfer" / "prompts_english.jsonl")
               .read_text().splitlines()]
    assert english and set(english) == {"en"}


@pytest.mark.slow
def test_demo_same_seed_same_table(tmp_path):
    """Two runs with the same seed (a subset of methods to keep it short): identical numbers,
    wall time aside."""
    def run(name):
        out = tmp_path / name
        assert cli(["demo", "--toy", "--quick", "--methods", "rloo-k2,dpo", "--output_dir", str(out)]) == 0
        policies = json.loads((out / "results.json").read_text())["policies"]
        return {k: {m: v for m, v in r.items() if m != "wall_s"} for k, r in policies.items()}

    assert run("a") == run("b")

