"""`scorealign eval-winrate`: matching by prompt, ties, per-language win-rates and a bootstrap
interval reproducible under a seed."""

from __future__ import annotations

import json

import pytest

from scorealign.cli import main
from scorealign.core.tiny import build_tiny_model
from scorealign.eval.reports import bootstrap_ci
from scorealign.eval.winrate import WinrateConfig, outcome, run_eval_winrate

# prompt, language, policy completion, baseline completion -> builtin:length outcome (margin 1)
PAIRS = [("p1", "fr", "un deux trois quatre", "un", "win"),
         ("p2", "fr", "un deux", "un", "tie"),                 # 2 vs 1 word: within margin 1
         ("p3", "fr", "un", "un deux trois", "loss"),
         ("p4", "en", "one two three", "one", "win"),
         ("p5", "en", "one two three four", "one", "win")]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def files(tmp_path):
    policy = write_jsonl(tmp_path / "policy.jsonl", [
        {"prompt": p, "completion": c, "language": lang} for p, lang, c, _, _ in PAIRS])
    baseline = write_jsonl(tmp_path / "baseline.jsonl", [      # other order, one extra prompt
        {"prompt": p, "completion": b} for p, _, _, b, _ in reversed(PAIRS)]
        + [{"prompt": "only in baseline", "completion": "x"}])
    return policy, baseline


def test_outcome_and_tie_margin():
    assert outcome(2.0, 1.0, 0.0) == "win" and outcome(1.0, 2.0, 0.0) == "loss"
    assert outcome(1.0, 1.0, 0.0) == "tie" and outcome(2.0, 1.0, 1.0) == "tie"


def test_bootstrap_ci_is_seeded_and_sane():
    values = [1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0, 0.5]
    assert bootstrap_ci(values, 500, seed=3) == bootstrap_ci(values, 500, seed=3)
    assert bootstrap_ci(values, 500, seed=3) != bootstrap_ci(values, 500, seed=4)
    lo, hi = bootstrap_ci(values, 2000, seed=0)
    assert lo < sum(values) / len(values) < hi and 0.0 <= lo and hi <= 1.0
    assert bootstrap_ci([1.0] * 5, 100) == (1.0, 1.0) and bootstrap_ci([]) is None


def test_winrate_from_files_per_language(tmp_path, files, capsys):
    policy, baseline = files
    out = tmp_path / "out"
    args = ["eval-winrate", "--policy", policy, "--baseline", baseline, "--rewards",
            "builtin:length", "--tie_margin", "1", "--output_dir", str(out), "--seed", "7"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["pairs"] == 5 and report["unmatched"] == 0
    fr, en, every = (report["by_language"][k] for k in ("fr", "en", "all"))
    assert (fr["wins"], fr["ties"], fr["losses"]) == (1, 1, 1) and fr["win_rate"] == 0.5
    assert en["win_rate"] == 1.0 and en["ci95"] == [1.0, 1.0]
    assert every["win_rate"] == pytest.approx(3.5 / 5)
    assert every["ci95"] == list(bootstrap_ci([1, 0.5, 0, 1, 1], 1000, seed=7))
    assert "| fr | 3 | 1 | 1 | 1 | 50.0% |" in (out / "report.md").read_text()
    assert main(args) == 0                                        # same seed: same interval
    assert json.loads((out / "report.json").read_text())["by_language"] == report["by_language"]
    assert main(args + ["--tie_value", "0"]) == 0                 # ties as losses
    assert json.loads((out / "report.json").read_text())["by_language"]["fr"]["win_rate"] == 1 / 3
    assert "win-rate 70.0%" in capsys.readouterr().out


def test_winrate_with_a_judge(tmp_path, files):
    policy, baseline = files
    judge = tmp_path / "j.py"
    judge.write_text("def judge(prompts, completions, **kw):\n"
                     "    return ['harmful' if c == 'un' else 'safe' if 'deux' in c else '??'"
                     " for c in completions]\n")
    cfg = WinrateConfig(policy=policy, baseline=baseline, judge=f"file:{judge}:judge",
                        output_dir=str(tmp_path / "o"))
    report = run_eval_winrate(cfg)
    assert report["unjudged"] == 2                                # 'one ...' completions: unparsed
    assert report["by_language"]["fr"]["wins"] == 2 and report["by_language"]["fr"]["losses"] == 1


def test_winrate_generates_from_two_models(tmp_path, tiny_model_dir):
    other = build_tiny_model(tmp_path / "other", seed=1)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "hello world", "language": "en"}, {"prompt": "red cat", "language": "fr"}])
    cfg = WinrateConfig(policy_model=tiny_model_dir("llama"), baseline_model=str(other),
                        prompts=prompts, rewards=("builtin:length",), max_new_tokens=8,
                        output_dir=str(tmp_path / "o"))
    report = run_eval_winrate(cfg)
    assert report["by_language"]["all"]["n"] + report["unmatched"] == 2
    assert (tmp_path / "o" / "policy_completions.jsonl").exists()


def test_winrate_errors(tmp_path, files, capsys):
    policy, baseline = files
    dup = write_jsonl(tmp_path / "dup.jsonl", [{"prompt": "p1", "completion": "a"},
                                               {"prompt": "p1", "completion": "b"}])
    assert main(["eval-winrate", "--policy", policy, "--baseline", dup,
                 "--rewards", "builtin:length"]) == 2
    assert f"{dup} line 2: field 'prompt' repeats the prompt of {dup} line 1" in capsys.readouterr().err
    other = write_jsonl(tmp_path / "other.jsonl", [{"prompt": "zzz", "completion": "a"}])
    assert main(["eval-winrate", "--policy", policy, "--baseline", other,
                 "--rewards", "builtin:length"]) == 2
    assert "has a baseline completion" in capsys.readouterr().err
    assert main(["eval-winrate", "--policy", policy, "--rewards", "builtin:length"]) == 2
    assert "give policy + baseline" in capsys.readouterr().err
    assert main(["eval-winrate", "--policy", policy, "--baseline", baseline]) == 2
    assert "exactly one of rewards" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p1", "completion": "a", "language": "qq"}])
    assert main(["eval-winrate", "--policy", bad, "--baseline", baseline,
                 "--rewards", "builtin:length"]) == 2
    assert f"{bad} line 1: field 'language': unknown language code 'qq'" in capsys.readouterr().err
