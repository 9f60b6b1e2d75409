"""`scorealign synth-prefs` (arXiv 2407.02552 recipe) with tiny models and a callable translator;
the seq2seq translator path on a tiny random T5."""

from __future__ import annotations

import json

import pytest

from scorealign.cli import main
from scorealign.core.tiny import build_tiny_model
from scorealign.data.formats import load_preferences
from scorealign.errors import ConfigError
from scorealign.recipes.synth import SynthConfig, build_pairs, translator_from_spec

# A word-for-word "translator": the output's length follows the input's, so builtin:length
# tells the policies apart, and the output is real French / Spanish for the language gate.
TRANSLATOR_PY = '''
WORDS = {"fr": "le chat mange une pomme rouge dans la maison avec mon petit frère".split(),
         "es": "el gato come una manzana roja en la casa con mi hermano pequeño".split()}
CALLS = []

def translate(texts, source_lang, target_lang):
    CALLS.append((source_lang, target_lang, len(texts)))
    words = WORDS[target_lang]
    return [" ".join(words[i % len(words)] for i in range(len(t.split()) + 3)) for t in texts]
'''
PROMPTS = [{"prompt": "say yes", "id": 1}, {"prompt": "the red cat", "id": 2},
           {"prompt": "hello world one two", "id": 3}, {"prompt": "good moon", "id": 4}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    (tmp_path / "tr.py").write_text(TRANSLATOR_PY)
    model = tiny_model_dir("llama")
    return dict(prompts=write_jsonl(tmp_path / "prompts.jsonl", PROMPTS),
                translator=f"file:{tmp_path / 'tr.py'}:translate", model=model,
                out=tmp_path / "prefs.jsonl")


def test_synth_prefs_end_to_end(setup, tmp_path, capsys):
    model, other = setup["model"], build_tiny_model(tmp_path / "other", seed=1)
    config = tmp_path / "synth.yaml"
    config.write_text(
        f"prompts: {setup['prompts']}\ntranslator: {setup['translator']}\n"
        f"target_languages: [French, es]\nrewards: [builtin:length]\n"
        f"policies: ['direct:{model}', 'translate:{model}', 'translate:{other}']\n"
        f"max_new_tokens: 12\nlicense: Apache-2.0\nsource_dataset: toy-prompts\n")
    assert main(["synth-prefs", str(config), "--output", str(setup["out"]), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(x) for x in setup["out"].read_text().splitlines()]
    assert rows, printed
    assert "failed the language gate" in printed
    for row in rows:
        assert row["language"] in ("fr", "es") and row["license"] == "Apache-2.0"
        assert row["chosen_score"] - row["rejected_score"] > 0
        assert row["chosen_score"] == len(row["chosen"].split())
        assert row["chosen_policy"].startswith("translate:")    # direct answers fail the gate
        assert row["chosen_language_verdict"] == row["rejected_language_verdict"] == "match"
        assert row["source_prompt"] in [p["prompt"] for p in PROMPTS]
        assert row["source_dataset"] == "toy-prompts" and row["reward"] == "builtin:length"
    assert len(load_preferences(str(setup["out"]))) == len(rows)   # TRL format reads back


def test_margin_and_gate_rules():
    cfg = SynthConfig(prompts="p", translator="py:x:y", rewards=("builtin:length",),
                      policies=("direct:a", "translate:b", "translate:c"), min_margin=2.0)
    cand = lambda i, pol, text: {"prompt": "p", "completion": text, "source_prompt": "s",  # noqa: E731
                                 "language": "fr", "policy": pol, "prompt_index": i}
    cands = [cand(0, "direct:a", "x"), cand(0, "translate:b", "y"), cand(0, "translate:c", "z"),
             cand(1, "direct:a", "x"), cand(1, "translate:b", "y"),
             cand(2, "direct:a", "x"), cand(2, "translate:b", "y")]
    scores = [9.0, 5.0, 1.0, 3.0, 2.0, 5.0, 1.0]
    verdicts = ["mismatch", "match", "match", "match", "match", "match", "undetermined"]
    pairs, stats = build_pairs(cfg, cands, scores, verdicts)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("y", "z")]   # 9.0 failed the gate
    assert stats == {"candidates": 7, "failed_gate": 2, "too_few_candidates": 1,
                     "below_margin": 1, "kept": 1}
    loose = SynthConfig(**{**cfg.__dict__, "allow_undetermined": True, "language_gate": True})
    assert len(build_pairs(loose, cands, scores, verdicts)[0]) == 2


def test_seq2seq_translator_on_a_tiny_t5(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tiny_model_dir("llama"))
    config = T5Config(vocab_size=len(tok), d_model=16, d_ff=32, d_kv=8, num_layers=1,
                      num_heads=2, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      decoder_start_token_id=tok.pad_token_id)
    path = tmp_path / "mt-en-fr"
    T5ForConditionalGeneration(config).save_pretrained(path)
    tok.save_pretrained(path)
    translator = translator_from_spec(f"seq2seq:{tmp_path}/mt-{{src}}-{{tgt}}")
    out = translator(["hello world", "the red cat"], "en", "fr")
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    with pytest.raises(ConfigError, match="translation model not found"):
        translator(["hello"], "en", "de")


def test_synth_errors(setup, tmp_path, capsys):
    base = ["synth-prefs", "--prompts", setup["prompts"], "--translator", setup["translator"],
            "--rewards", "builtin:length"]
    assert main(base + ["--policies", f"direct:{setup['model']}"]) == 2
    assert "two or more" in capsys.readouterr().err
    assert main(base + ["--policies", "direct:a,sideways:b"]) == 2
    assert "must be direct:MODEL or translate:MODEL" in capsys.readouterr().err
    assert main(base + ["--policies", "direct:a,direct:b", "--target_languages", "fr,xx"]) == 2
    assert "target_languages: unknown language code 'xx'" in capsys.readouterr().err
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"prompt": [{"role": "user", "content": "hi"}]}])
    assert main(["synth-prefs", "--prompts", chat, "--translator", setup["translator"],
                 "--rewards", "builtin:length", "--policies", "direct:a,direct:b"]) == 2
    assert f"{chat} line 1: field 'prompt' must be a string" in capsys.readouterr().err
    (tmp_path / "bad.py").write_text("def translate(texts, s, t):\n    return ['x']\n")
    assert main(base + ["--policies", f"direct:{setup['model']},translate:{setup['model']}",
                        "--translator", f"file:{tmp_path / 'bad.py'}:translate"]) == 2
    assert "must return 4 strings (en->fr)" in capsys.readouterr().err
