"""Fault corpus, part 1: bad inputs (data files, config, model paths and weights, reward
sources). Each case: a non-zero exit, exactly one error line naming the file/row/field or key, no
traceback, and nothing left in (or changed in) the run directory."""

import json

import pytest
import torch
from faults import one_error, run_cli, snapshot, write_config

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Say yes."}
ASSISTANT = {"role": "assistant", "content": "yes"}


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


# (case id, file name, content or None for a missing file, config overrides, parts of the line)
DATA_CASES = [
    ("missing-file", "p.jsonl", None, {}, ["p.jsonl", "not found"]),
    ("empty-file", "p.jsonl", "", {}, ["p.jsonl", "no rows"]),
    ("bad-json-line-2", "p.jsonl", jsonl({"prompt": "a"}, "{oops"), {}, ["p.jsonl", "line 2"]),
    ("missing-prompt", "p.jsonl", jsonl({"question": "hi"}), {},
     ["p.jsonl line 1", "missing field 'prompt'"]),
    ("blank-prompt", "p.jsonl", jsonl({"prompt": "a"}, {"prompt": "  "}), {},
     ["p.jsonl line 2", "'prompt'"]),
    ("number-prompt", "p.jsonl", jsonl({"prompt": 7}), {}, ["p.jsonl line 1", "'prompt'"]),
    ("no-user-turn", "m.jsonl", jsonl({"messages": [SYSTEM, ASSISTANT]}), {},
     ["m.jsonl line 1", "field 'messages' has no user turn"]),
    ("messages-not-list", "m.jsonl", jsonl({"messages": "hi"}), {},
     ["m.jsonl line 1", "'messages'"]),
    ("message-without-role", "m.jsonl", jsonl({"messages": [{"content": "x"}]}), {},
     ["m.jsonl line 1", "'role'"]),
    ("not-an-object", "p.jsonl", jsonl({"prompt": "a"}, "[1, 2]"), {}, ["p.jsonl", "line 2"]),
    ("json-not-a-list", "p.json", '{"prompt": "a"}', {}, ["p.json"]),
    ("csv-missing-column", "p.csv", "question\nhi\n", {}, ["p.csv", "'prompt'"]),
    ("not-utf8", "p.jsonl", b"\xff\xfe\x00garbage\n", {}, ["p.jsonl"]),
    ("dpo-missing-rejected", "d.jsonl", jsonl({"prompt": "a", "chosen": "b"}),
     {"algo": "dpo"}, ["d.jsonl line 1", "rejected"]),
    ("dpo-empty-chosen", "d.jsonl", jsonl({"prompt": "a", "chosen": " ", "rejected": "c"}),
     {"algo": "dpo"}, ["d.jsonl line 1", "chosen"]),
    ("copg-score-not-number", "s.jsonl",
     jsonl({"prompt": "a", "completion": "b", "score": "high"}),
     {"algo": "copg", "source": "offline"}, ["s.jsonl line 1", "score"]),
    ("copg-score-nan", "s.jsonl", jsonl({"prompt": "a", "completion": "b", "score": "nan"}),
     {"algo": "copg", "source": "offline"}, ["s.jsonl line 1", "score"]),
    ("sft-ends-with-user", "f.jsonl", jsonl({"messages": [USER, ASSISTANT, USER]}),
     {"algo": "sft", "k": 1, "micro_batch_size": 2}, ["f.jsonl line 1", "assistant turn"]),
    ("eval-dataset-missing", "e.jsonl", None, {"eval_every": 1}, ["e.jsonl", "not found"]),
]


@pytest.mark.parametrize("name, filename, content, overrides, parts", DATA_CASES,
                         ids=[c[0] for c in DATA_CASES])
def test_bad_data_file(capsys, tmp_path, tiny_model_dir, name, filename, content, overrides,
                       parts):
    path = tmp_path / filename
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    key = "eval_dataset" if name.startswith("eval-") else "dataset"
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir("llama"), **{key: str(path)},
                       **overrides)
    run = tmp_path / "run"
    one_error(*run_cli(capsys, "train", cfg, "--output_dir", run)[::2], *parts)
    assert not run.exists()                                  # nothing written, nothing left


# (case id, YAML text or None for a missing file, extra argv, parts of the line)
CONFIG_CASES = [
    ("unknown-key", "lerning_rate: 0.1\n", [], ["c.yaml", "unknown key 'lerning_rate'"]),
    ("bad-int", "k: two\n", [], ["k: expected int"]),
    ("invalid-yaml", "k: [1,\n", [], ["c.yaml", "invalid YAML"]),
    ("top-level-list", "- k\n", [], ["c.yaml", "mapping"]),
    ("unknown-algo", "algo: trpo\n", [], ["algo='trpo'"]),
    ("zero-steps", "steps: 0\n", [], ["steps=0"]),
    ("indivisible-batch", "prompts_per_step: 3\nk: 2\nmicro_batch_size: 4\n", [],
     ["micro_batch_size=4"]),
    ("weights-count", "reward_weights: [1, 2]\n", [], ["reward_weights"]),
    ("bad-dtype", "dtype: float8\n", [], ["dtype='float8'"]),
    ("bad-on-reward-error", "on_reward_error: ignore\n", [], ["on_reward_error"]),
    ("zero-temperature", "temperature: 0\n", [], ["temperature"]),
    ("missing-config", None, [], ["not found"]),
    ("override-without-value", "k: 2\n", ["--lr"], ["--lr", "missing value"]),
    ("unknown-override", "k: 2\n", ["--max_new_token", "3"], ["did you mean 'max_new_tokens'"]),
    ("output-dir-is-a-file", "k: 2\n", ["--output_dir", "FILE"], ["is a file"]),
]


@pytest.mark.parametrize("name, text, argv, parts", CONFIG_CASES,
                         ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(capsys, tmp_path, name, text, argv, parts):
    cfg = tmp_path / "c.yaml"
    if text is not None:
        cfg.write_text(text)
    (tmp_path / "FILE").write_text("keep")
    argv = [str(tmp_path / "FILE") if a == "FILE" else a for a in argv]
    if "--output_dir" not in argv:
        argv = ["--output_dir", str(tmp_path / "run"), *argv]
    one_error(*run_cli(capsys, "train", cfg, *argv)[::2], *parts)
    assert not (tmp_path / "run").exists() and (tmp_path / "FILE").read_text() == "keep"


def resume_conflict(capsys, tmp_path):
    return run_cli(capsys, "train", "--resume", tmp_path, "--overwrite")


def test_resume_and_overwrite_exclude_each_other(capsys, tmp_path):
    one_error(*resume_conflict(capsys, tmp_path)[::2], "--resume and --overwrite")


# ---------------------------------------------------------------------- model paths and weights


def model_folder(tiny: str, tmp_path, fault: str):
    """A copy of the tiny model with ``fault`` applied; returns its path."""
    import shutil

    from safetensors.torch import load_file

    folder = tmp_path / "m"
    shutil.copytree(tiny, folder)
    weights = folder / "model.safetensors"
    if fault == "no-weights":
        weights.unlink()
    elif fault == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif fault == "pickle-only-weights":           # an arbitrary object: refused, never run
        state = load_file(str(weights))
        weights.unlink()
        torch.save({"state": state, "hook": argparse_namespace()}, folder / "pytorch_model.bin")
    elif fault == "bad-config-json":
        (folder / "config.json").write_text("{not json")
    elif fault == "no-tokenizer":
        for f in folder.glob("tokenizer*"):
            f.unlink()
    return folder


def argparse_namespace():
    import argparse

    return argparse.Namespace(x=1)


MODEL_CASES = [
    ("no-such-dir", "model", ["model not found", "no/such/model"]),
    ("no-such-ref", "ref_model", ["ref_model", "no/such/model"]),
    ("no-weights", "model", ["cannot load model", "/m"]),
    ("truncated-weights", "model", ["cannot load model", "/m"]),
    ("pickle-only-weights", "model", ["never unpickles", "/m"]),
    ("bad-config-json", "model", ["model", "/m"]),
    ("no-tokenizer", "model", ["tokenizer", "/m"]),
    ("no-such-reward-model", "rewards", ["no/such/model"]),
]


@pytest.mark.parametrize("fault, key, parts", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model(capsys, tmp_path, tiny_model_dir, fault, key, parts):
    tiny = tiny_model_dir("llama")
    path = "./no/such/model" if fault.startswith("no-such") else str(
        model_folder(tiny, tmp_path, fault))
    value = [f"model:{path}"] if key == "rewards" else path
    cfg = write_config(tmp_path / "c.yaml", tiny, **{key: value})
    run = tmp_path / "run"
    one_error(*run_cli(capsys, "train", cfg, "--output_dir", run)[::2], *parts)
    assert not run.exists()


def test_sample_no_such_model(capsys, tmp_path):
    out = tmp_path / "s.jsonl"
    one_error(*run_cli(capsys, "sample", "--model", "./no/such/model", "--output", out)[::2],
              "model not found")
    assert not out.exists()


# --------------------------------------------------------------------------------- rewards

REWARD_CODE = """
import math
def short(prompts, completions, **kw):
    return [1.0]
def nan(prompts, completions, **kw):
    return [math.nan] * len(completions)
def boom(prompts, completions, **kw):
    raise ValueError("reward service down")
def text(prompts, completions, **kw):
    return "good"
"""

REWARD_CASES = [
    ("wrong-length", "file:R:short", {}, ["short", "length 1"]),
    ("nan", "file:R:nan", {}, ["nan"]),
    ("raises", "file:R:boom", {}, ["reward service down"]),
    ("raises-in-sandbox", "file:R:boom", {"reward_sandbox": True}, ["reward service down"]),
    ("returns-string", "file:R:text", {}, ["text", "str"]),
    ("unknown-builtin", "builtin:nonsense", {}, ["nonsense"]),
    ("missing-file", "file:nowhere.py:fn", {}, ["nowhere.py"]),
    ("missing-function", "file:R:absent", {}, ["absent"]),
]


@pytest.mark.parametrize("name, spec, overrides, parts", REWARD_CASES,
                         ids=[c[0] for c in REWARD_CASES])
def test_rejected_reward_leaves_nothing(capsys, tmp_path, tiny_model_dir, name, spec, overrides,
                                        parts):
    code = tmp_path / "r.py"
    code.write_text(REWARD_CODE)
    spec = spec.replace("file:R", f"file:{code}").replace("nowhere.py", str(tmp_path / "nowhere.py"))
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir("llama"), rewards=[spec], **overrides)
    run = tmp_path / "run"
    one_error(*run_cli(capsys, "train", cfg, "--output_dir", run)[::2], *parts)
    assert not run.exists()                                  # no lonely config.yaml


def test_rejected_reward_keeps_an_empty_run_dir_empty(capsys, tmp_path, tiny_model_dir):
    code = tmp_path / "r.py"
    code.write_text(REWARD_CODE)
    run = tmp_path / "run"
    run.mkdir()
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir("llama"), rewards=[f"file:{code}:nan"])
    one_error(*run_cli(capsys, "train", cfg, "--output_dir", run)[::2], "nan")
    assert run.is_dir() and snapshot(run) == {}
