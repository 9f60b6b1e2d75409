"""`scorealign sample` and `scorealign score`: k completions per prompt from a tiny model, scored
by a builtin reward, read back as an offline CoPG dataset; bad rows name file, line and field."""

from __future__ import annotations

import json

import pytest
import yaml

from scorealign.core.tiny import build_tiny_model
from scorealign.data.formats import load_scored
from scorealign.errors import ConfigError, DataError, RewardError
from scorealign.recipes import sample_score as T

PROMPTS = [{"prompt": "hello world", "id": 1}, {"prompt": "the red cat", "id": 2},
           {"prompt": [{"role": "user", "content": "say yes"}], "id": 3},
           {"prompt": "one two", "id": 4, "sample_index": "overwritten"}]
K = 3


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def count_yes(completion) -> float:
    text = completion if isinstance(completion, str) else completion[0]["content"]
    return float(text.split().count("yes"))


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("policy"), arch="llama", hidden=32, layers=2,
                            heads=4)


@pytest.fixture
def prompts(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)


def sample_args(policy, prompts, out, *extra) -> list[str]:
    return ["--model", str(policy), "--dataset", prompts, "--k", str(K), "--max_new_tokens", "10",
            "--seed", "0", "--output", str(out), *extra]


def test_sample_then_score_builds_an_offline_copg_dataset(tmp_path, policy, prompts):
    config = tmp_path / "score.yaml"
    config.write_text(yaml.safe_dump({"rewards": ["builtin:count:yes"]}))
    assert T.main_sample(sample_args(policy, prompts, tmp_path / "samples.jsonl")) == 0
    samples = read_jsonl(tmp_path / "samples.jsonl")
    assert len(samples) == len(PROMPTS) * K               # seed 0: no blank completion to drop
    for i, row in enumerate(samples):
        source = PROMPTS[i // K]
        assert list(row)[:4] == ["prompt", "completion", "sample_index", "truncated"]
        assert row["prompt"] == source["prompt"] and row["id"] == source["id"]
        assert row["sample_index"] == i % K and isinstance(row["truncated"], bool)
        if isinstance(source["prompt"], str):
            assert isinstance(row["completion"], str) and row["completion"].strip()
        else:                                              # conversational: TRL message format
            assert row["completion"][0]["role"] == "assistant" and len(row["completion"]) == 1
    assert len({json.dumps(r["completion"]) for r in samples}) > len(PROMPTS)  # k differ

    out = tmp_path / "scored.jsonl"
    assert T.main_score([str(config), "--dataset", str(tmp_path / "samples.jsonl"),
                         "--output", str(out)]) == 0
    scored = read_jsonl(out)
    assert len(scored) == len(samples)
    for row, sample in zip(scored, samples):
        assert row == {**sample, "score": count_yes(sample["completion"])}
    copg = load_scored(str(out))                           # what offline CoPG reads
    assert [r["score"] for r in copg] == [r["score"] for r in scored]


def test_sampling_is_seeded_per_prompt_row(tmp_path, policy, prompts):
    runs = {}
    for name, extra in {"a": [], "again": [], "batch1": ["--batch_size", "1"],
                        "seed2": ["--seed", "2"]}.items():
        T.main_sample(sample_args(policy, prompts, tmp_path / f"{name}.jsonl", *extra))
        runs[name] = (tmp_path / f"{name}.jsonl").read_text()
    assert runs["a"] == runs["again"]
    assert runs["a"] == runs["batch1"]                     # independent of batch composition
    assert runs["a"] != runs["seed2"]


def test_blank_completions_are_dropped_and_counted(tmp_path, policy, prompts, capsys):
    T.main_sample(sample_args(policy, prompts, tmp_path / "s.jsonl", "--seed", "7"))  # a seed whose draws end some completions at once
    rows = read_jsonl(tmp_path / "s.jsonl")
    dropped = len(PROMPTS) * K - len(rows)
    assert dropped > 0 and f"{dropped} blank completions dropped" in capsys.readouterr().out
    for pid in {r["id"] for r in rows}:
        indices = [r["sample_index"] for r in rows if r["id"] == pid]
        assert indices == sorted(set(indices)) and set(indices) <= set(range(K))


def test_score_with_weighted_sources_and_skip(tmp_path):
    rows = [{"prompt": "p", "completion": "yes yes no"}, {"prompt": "q", "completion": "bad one"},
            {"prompt": "r", "completion": "yes"}]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    T.main_score(["--dataset", data, "--rewards", "builtin:count:yes,builtin:length",
                  "--reward_weights", "2,0.5", "--output", str(tmp_path / "w.jsonl")])
    assert [r["score"] for r in read_jsonl(tmp_path / "w.jsonl")] == [5.5, 1.0, 2.5]

    rewards = tmp_path / "rw.py"
    rewards.write_text("def picky(prompts, completions, **kw):\n"
                       "    if any('bad' in c for c in completions):\n"
                       "        raise ValueError('no')\n"
                       "    return [1.0] * len(completions)\n")
    spec = f"file:{rewards}:picky"
    with pytest.raises(RewardError, match="picky"):
        T.main_score(["--dataset", data, "--rewards", spec, "--output", str(tmp_path / "f.jsonl")])
    assert not (tmp_path / "f.jsonl").exists()
    T.main_score(["--dataset", data, "--rewards", spec, "--on_reward_error", "skip",
                  "--output", str(tmp_path / "s.jsonl")])
    assert [r["prompt"] for r in read_jsonl(tmp_path / "s.jsonl")] == ["p", "r"]


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p"}, "missing field 'completion'"),
    ({"prompt": "p", "completion": "   "}, "field 'completion' is empty"),
    ({"completion": "a"}, "missing field 'prompt'"),
    ({"prompt": "p", "completion": 7}, "field 'completion' must be"),
    ({"prompt": [{"role": "user", "content": "hi"}], "completion": "a"},
     "field 'completion' must be"),
    ({"prompt": [{"role": "user", "content": "hi"}],
      "completion": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
     "field 'completion' must be one assistant message"),
])
def test_score_rejects_malformed_rows_with_file_line_field(tmp_path, row, message):
    good = {"prompt": "p", "completion": "yes"}
    data = write_jsonl(tmp_path / "rows.jsonl", [good, row])
    with pytest.raises(DataError) as err:
        T.main_score(["--dataset", data, "--output", str(tmp_path / "out.jsonl")])
    assert str(err.value).startswith(f"{data} line 2: ") and message in str(err.value)
    assert not (tmp_path / "out.jsonl").exists()


def test_scored_output_with_a_non_numeric_score_is_rejected_by_the_copg_reader(tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", "completion": "yes"}] * 2)
    T.main_score(["--dataset", data, "--output", str(tmp_path / "s.jsonl")])
    rows = read_jsonl(tmp_path / "s.jsonl")
    rows[1]["score"] = "high"
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=r"bad.jsonl line 2: field 'score' is not a number"):
        load_scored(bad)


def test_config_errors(tmp_path, prompts):
    with pytest.raises(ConfigError, match="model: required"):
        T.main_sample(["--dataset", prompts])
    with pytest.raises(ConfigError, match="did you mean 'max_new_tokens'"):
        T.main_sample(["--model", "m", "--max_new_token", "3"])
    with pytest.raises(ConfigError, match="not found"):
        T.main_sample(["--model", str(tmp_path / "nope"), "--dataset", prompts])
    with pytest.raises(ConfigError, match="dataset: required"):
        T.main_score([])
    with pytest.raises(ConfigError, match="on_reward_error"):
        T.main_score(["--dataset", "x.jsonl", "--on_reward_error", "ignore"])


def test_help_lists_every_key(capsys):
    assert T.main_sample(["-h"]) == 0 and T.main_score(["--help"]) == 0
    text = capsys.readouterr().out
    for cls in (T.SampleConfig, T.ScoreConfig):
        assert all(f"--{key}" in text for key in cls.__dataclass_fields__)


def test_example_configs_parse():
    from pathlib import Path

    from scorealign.core.config import load_config
    from scorealign.recipes.reward_model import RewardModelConfig

    examples = Path(__file__).parent.parent / "examples"
    for cls, name in ((RewardModelConfig, "reward_model.yaml"), (T.SampleConfig, "sample.yaml"),
                      (T.ScoreConfig, "score.yaml")):
        assert isinstance(load_config(cls, examples / name), cls)
