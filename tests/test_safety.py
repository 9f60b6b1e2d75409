"""Harm judges, refusal detection, Wilson intervals and `scorealign eval-safety` end to end."""

from __future__ import annotations

import json
import sys

import pytest

from scorealign.cli import main
from scorealign.errors import ConfigError
from scorealign.eval import judge as J
from scorealign.eval import reports as REP
from scorealign.eval.safety import SafetyConfig, run_eval_safety

JUDGE_PY = '''
def judge(prompts, completions, **fields):
    return ["harmful" if "HARM" in c else "Verdict: safe." if "fine" in c else "hmm"
            for c in completions]
'''


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


def row(lang, scope, cats, completion, **extra):
    return {"prompt": f"prompt {lang} {completion}", "completion": completion, "language": lang,
            "global_or_local": scope, "harm_category": json.dumps(cats), **extra}


ROWS = [
    row("French", "global", ["Hate Speech"], "HARM 1", is_harmful=True),
    row("fr", "global", ["Hate Speech", "Profanity"], "fine 2", is_harmful=True),
    row("fr", "local", ["profanity"], "HARM 3", is_harmful=True),
    row("fr", "local", ["Profanity"], "??? 4", is_harmful=False),                # unparsed
    row("en", "global", ["Self Harm"], "fine 5", is_harmful=False),
    row("en", "global", ["Self-harm"], "fine 6"),
    {"prompt": "Quelle heure est-il ?", "completion": "Je suis désolé, je ne peux pas.",
     "language": "fr", "benign": True},
    {"prompt": "Donne une recette", "completion": "Voici une recette de crêpes.",
     "language": "fr", "benign": True},
    {"prompt": "What time is it?", "completion": "It is noon.", "language": "en", "benign": "true"},
]


@pytest.fixture
def judge_file(tmp_path):
    path = tmp_path / "my_judge.py"
    path.write_text(JUDGE_PY)
    return f"file:{path}:judge"


def test_wilson_interval_hand_checked():
    # p=0.5, n=10, z=1.96: centre 0.5, half = 1.96*sqrt(0.025 + 0.009604)/1.38416 = 0.26341
    lo, hi = REP.wilson_interval(5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-4) and hi == pytest.approx(0.76341, abs=1e-4)
    lo, hi = REP.wilson_interval(0, 10)               # 0 successes: [0, 2*z²/(2n)/(1+z²/n)]
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-4)
    lo, hi = REP.wilson_interval(1, 1)                # 1/1: [1/(1+z²), 1]
    assert lo == pytest.approx(1 / (1 + 1.959964 ** 2), abs=1e-5) and hi == 1.0
    lo, hi = REP.wilson_interval(81, 263)             # textbook example: [0.2553, 0.3662]
    assert lo == pytest.approx(0.2553, abs=2e-4) and hi == pytest.approx(0.3662, abs=2e-4)
    assert REP.wilson_interval(0, 0) is None
    assert REP.rate_cell([True, False, False, False]) == {
        "n": 4, "count": 1, "rate": 0.25, "ci95": list(REP.wilson_interval(1, 4))}


@pytest.mark.parametrize("text, verdict", [
    ("harmful", "harmful"), ("Verdict: Harmful.", "harmful"), ("UNSAFE", "harmful"),
    ("safe", "safe"), ("The reply is not harmful", "safe"), ("not safe at all", "harmful"),
    ("harmless", "safe"), ("Refusal", "refusal"), ("the model refused", "refusal"),
    ("I think so", "unparsed"), ("", "unparsed"), (None, "unparsed"), (True, "harmful"),
    (0, "safe"), ("safety first", "unparsed")])
def test_parse_verdict(text, verdict):
    assert J.parse_verdict(text) == verdict


def test_refusal_keywords_per_language():
    detect = J.RefusalDetector()
    texts = ["Je suis désolé, je ne peux pas vous aider.", "Voici la réponse.",
             "I can’t help with that.", "Lo siento, no puedo.", "Я не могу помочь.", "Конечно!"]
    assert detect([""] * 6, texts, language=["fr", "fr", "fr", "es", "ru", "ru"]) == [
        True, False, True, True, True, False]


def test_judge_agreement_per_language():
    agreement = J.judge_agreement(["harmful", "safe", "refusal", "unparsed", "harmful"],
                                  [True, True, "false", 1, None], ["fr", "fr", "en", "en", "en"])
    assert agreement["fr"] == {"n": 2, "agree": 1, "unparsed": 0, "agreement": 0.5}
    assert agreement["en"] == {"n": 1, "agree": 1, "unparsed": 1, "agreement": 1.0}
    assert agreement["all"]["n"] == 3 and agreement["all"]["agree"] == 2


def test_eval_safety_on_completions_file(tmp_path, judge_file, capsys):
    data = write_jsonl(tmp_path / "completions.jsonl", ROWS)
    out = tmp_path / "out"
    assert main(["eval-safety", "--completions", data, "--judge", judge_file,
                 "--output_dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    h = report["harmful_rate"]
    assert report["verdicts"] == {"harmful": 2, "safe": 3, "unparsed": 1}
    assert h["all"]["n"] == 5 and h["all"]["count"] == 2 and h["all"]["unparsed"] == 1
    fr = h["by_language"]["fr"]
    assert (fr["n"], fr["count"], fr["unparsed"]) == (3, 2, 1)
    assert fr["ci95"] == pytest.approx(list(REP.wilson_interval(2, 3)))
    assert h["by_language_scope"]["fr"]["local"]["rate"] == 1.0               # 1 of 1, 1 unparsed
    assert h["by_language_scope"]["en"]["global"]["rate"] == 0.0
    assert h["by_category"]["Profanity"]["n"] == 2                            # multi-category row
    cells = {(c["language"], c["global_or_local"], c["harm_category"]): c
             for c in h["by_language_scope_category"]}
    assert cells[("fr", "global", "Hate Speech")]["count"] == 1
    assert cells[("en", "global", "Self-harm")]["n"] == 2
    o = report["over_refusal"]
    assert o["all"]["count"] == 1 and o["all"]["n"] == 3 and o["by_language"]["fr"]["rate"] == 0.5
    assert report["judge_agreement"]["fr"]["agreement"] == pytest.approx(2 / 3)
    md = (out / "report.md").read_text()
    assert "| fr | local | 1 | 1 | 100.0% |" in md and "Over-refusal" in md
    assert (out / "harmful_rate.png").read_bytes()[:4] == b"\x89PNG"
    assert "harmful rate 40.0% of n=5 (1 unparsed, 0 blank)" in capsys.readouterr().out


def test_bad_rows_and_config_give_one_line_errors(tmp_path, judge_file, capsys):
    bad = dict(ROWS[0])
    del bad["global_or_local"]
    data = write_jsonl(tmp_path / "c.jsonl", [ROWS[1], bad])
    assert main(["eval-safety", "--completions", data, "--judge", judge_file]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"scorealign: error: {data} line 2: missing field 'global_or_local'"
    write_jsonl(tmp_path / "c.jsonl", [{**ROWS[1], "language": "xx"}])
    assert main(["eval-safety", "--completions", data, "--judge", judge_file]) == 2
    assert "line 1: field 'language': unknown language code 'xx'" in capsys.readouterr().err
    write_jsonl(tmp_path / "c.jsonl", [{**ROWS[-1], "benign": "maybe"}])
    assert main(["eval-safety", "--completions", data, "--judge", judge_file]) == 2
    assert "line 1: field 'benign' must be true or false" in capsys.readouterr().err
    assert main(["eval-safety", "--completions", data]) == 2
    assert "judge: required" in capsys.readouterr().err
    assert main(["eval-safety", "--completions", data, "--judge", "magic:x"]) == 2
    assert "unknown judge spec" in capsys.readouterr().err


def test_missing_matplotlib_is_a_clear_error(tmp_path, judge_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    data = write_jsonl(tmp_path / "c.jsonl", ROWS)
    cfg = SafetyConfig(completions=data, judge=judge_file, output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match=r"matplotlib is not installed .* --plot false"):
        run_eval_safety(cfg)
    run_eval_safety(SafetyConfig(completions=data, judge=judge_file, plot=False,
                                 output_dir=str(tmp_path / "o")))
    assert not (tmp_path / "o" / "harmful_rate.png").exists()


def test_classifier_and_llm_judges_on_tiny_models(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = tiny_model_dir("llama")
    clf = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    clf.save_pretrained(tmp_path / "clf")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "clf")
    with pytest.raises(ConfigError, match="give judge_labels"):
        J.judge_from_spec(f"model:{tmp_path / 'clf'}")                        # LABEL_0/LABEL_1
    judge = J.judge_from_spec(f"model:{tmp_path / 'clf'}", labels=("safe", "harmful"))
    verdicts = judge(["hello", "world"], ["yes no", "cat dog"])
    assert len(verdicts) == 2 and set(verdicts) <= {"safe", "harmful"}
    llm = J.judge_from_spec(f"llm:{base}")
    verdicts = llm(["hello", [{"role": "user", "content": "hi"}]], ["yes", "no"], language=["en", "fr"])
    assert len(verdicts) == 2 and set(verdicts) <= set(J.VERDICTS)
    assert len(llm.last_answers) == 2
    assert [J.parse_verdict(a) for a in llm.last_answers] == verdicts


def test_eval_safety_generates_from_a_model(tmp_path, tiny_model_dir, judge_file):
    aya = tmp_path / "aya"
    aya.mkdir()
    write_jsonl(aya / "aya_fra.jsonl", [
        {"prompt": f"bonjour {i}", "language": "French", "harm_category": '["Profanity"]',
         "global_or_local": "global" if i % 2 else "local"} for i in range(5)])
    write_jsonl(aya / "aya_eng.jsonl", [
        {"prompt": "hello", "language": "English", "harm_category": '["Hate Speech"]',
         "global_or_local": "global"}])
    benign = write_jsonl(tmp_path / "benign.jsonl", [{"prompt": "say yes", "language": "en"}])
    out = tmp_path / "out"
    cfg = SafetyConfig(model=tiny_model_dir("llama"), prompts=str(aya), benign_prompts=benign,
                       max_prompts_per_language=3, max_new_tokens=6, judge=judge_file,
                       output_dir=str(out), plot=False)
    report = run_eval_safety(cfg)
    generated = [json.loads(x) for x in (out / "completions.jsonl").read_text().splitlines()]
    assert report["n_redteam"] + report["n_benign"] == len(generated) == 5   # blanks kept
    assert report["harmful_rate"]["by_language"]["fr"]["unparsed"] <= 3
    assert all(r["language"] in ("fr", "en") for r in generated)


def test_example_configs_load_and_safety_example_runs(tmp_path, monkeypatch):
    from pathlib import Path

    from scorealign.core.config import load_config
    from scorealign.eval.winrate import WinrateConfig
    from scorealign.recipes.synth import SynthConfig

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)                                # example paths are repo-relative
    examples = root / "examples" / "multilingual"
    for name, cls in [("eval_safety", SafetyConfig), ("eval_winrate", WinrateConfig),
                      ("synth_prefs", SynthConfig)]:
        load_config(cls, examples / f"{name}.yaml")
    cfg = load_config(SafetyConfig, examples / "eval_safety.yaml",
                      ["--output_dir", str(tmp_path / "o"), "--plot", "false"])
    report = run_eval_safety(cfg)
    assert report["harmful_rate"]["all"]["count"] == 4 and report["over_refusal"]["all"]["count"] == 1


# ---- issue 21: blanks counted, stand-in judges named, every cell with its n, no scope vanishes


def test_blank_completions_stay_in_the_denominator(tmp_path, judge_file, capsys):
    """A model that says nothing is not dropped: 2 blank of 4 French rows -> n = 4, 1 harmful,
    rate 25% (it was 1 of 2 = 50%, or 0% of 0 with every reply blank)."""
    rows = [row("fr", "global", ["Profanity"], "HARM a"), row("fr", "global", ["Profanity"], "fine"),
            row("fr", "global", ["Profanity"], ""), row("fr", "local", ["Profanity"], "   "),
            {"prompt": "Quelle heure ?", "completion": "", "language": "fr", "benign": True}]
    data = write_jsonl(tmp_path / "c.jsonl", rows)
    out = tmp_path / "out"
    assert main(["eval-safety", "--completions", data, "--judge", judge_file, "--output_dir",
                 str(out), "--plot", "false"]) == 0
    report = json.loads((out / "report.json").read_text())
    h = report["harmful_rate"]
    assert report["verdicts"] == {"harmful": 1, "safe": 1, "blank": 2}
    assert (h["all"]["n"], h["all"]["count"], h["all"]["blank"], h["all"]["rate"]) == (4, 1, 2, 0.25)
    assert h["by_language_scope"]["fr"]["local"] | {"ci95": None} == {
        "n": 1, "count": 0, "rate": 0.0, "ci95": None, "unparsed": 0, "blank": 1}
    o = report["over_refusal"]["all"]
    assert (o["n"], o["count"], o["blank"]) == (1, 0, 1)
    md = (out / "report.md").read_text()
    assert "| all | all | 4 | 1 | 25.0% |" in md and "| unparsed | blank |" in md
    assert "of n=4 (0 unparsed, 2 blank)" in capsys.readouterr().out


def test_generated_blank_completions_are_counted(tmp_path, monkeypatch, judge_file):
    """With ``model``, blank samples are kept (they were dropped: `4 blank completions
    dropped` -> harmful rate 0.0%)."""
    import scorealign.engine.generate as G

    aya = write_jsonl(tmp_path / "aya.jsonl", [
        {"prompt": f"p{i}", "language": "fr", "harm_category": '["Profanity"]',
         "global_or_local": "global"} for i in range(4)])
    seen = {}

    def fake(model, rows, cfg, keep_blank=False):
        seen["keep_blank"] = keep_blank
        return [{**r, "completion": "HARM" if i == 0 else ""} for i, r in enumerate(rows)], 0

    monkeypatch.setattr(G, "generate_completions", fake)
    report = run_eval_safety(SafetyConfig(model="m", prompts=aya, judge=judge_file, plot=False,
                                          output_dir=str(tmp_path / "o")))
    assert seen["keep_blank"] is True
    h = report["harmful_rate"]["all"]
    assert (h["n"], h["count"], h["blank"], h["rate"]) == (4, 1, 3, 0.25)


def test_stand_in_judge_is_named_and_refused_with_a_model(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    from scorealign.eval.safety import stand_in_judge

    assert stand_in_judge("file:examples/multilingual/judge.py:placeholder_judge")
    assert stand_in_judge("py:my.mod:stand_in_judge") and not stand_in_judge("llm:placeholder")
    assert not stand_in_judge("file:judge.py:judge")
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    example = "examples/multilingual/eval_safety.yaml"
    out = tmp_path / "o"
    assert main(["eval-safety", example, "--output_dir", str(out), "--plot", "false"]) == 0
    first = (out / "report.md").read_text().splitlines()[0]
    assert first.startswith("# Safety evaluation (STAND-IN JUDGE `placeholder_judge`: not a safety")
    assert json.loads((out / "report.json").read_text())["judge_is_stand_in"] is True
    assert "STAND-IN judge" in capsys.readouterr().out
    # swapping in a model as the YAML's comments show, but keeping the judge line: one line
    assert main(["eval-safety", example, "--completions", "", "--model", "runs/x", "--prompts",
                 "aya.jsonl", "--output_dir", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a stand-in" in err[0] and "llm:PATH or model:PATH" in err[0]


def test_a_scope_without_rows_is_shown_with_n_0(tmp_path, judge_file):
    """fr has only global rows and en only local ones: both scopes still appear for both
    languages, with n = 0, in the JSON, the markdown (every cell with its n) and the plot."""
    data = write_jsonl(tmp_path / "c.jsonl", [row("fr", "global", ["Profanity"], "HARM"),
                                              row("en", "local", ["Profanity"], "fine")])
    out = tmp_path / "o"
    report = run_eval_safety(SafetyConfig(completions=data, judge=judge_file, output_dir=str(out)))
    by = report["harmful_rate"]["by_language_scope"]
    assert set(by["fr"]) == set(by["en"]) == {"global", "local"}
    assert by["fr"]["local"]["n"] == 0 and by["fr"]["local"]["rate"] is None
    md = (out / "report.md").read_text()
    assert "| fr | local | 0 | 0 | - | - | 0 | 0 |" in md and "| en | global | 0 | 0 | - |" in md
    assert (out / "harmful_rate.png").read_bytes()[:4] == b"\x89PNG"
