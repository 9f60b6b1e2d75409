"""Tests for scorealign.data.formats: every source format, TRL row format and error path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scorealign.data import formats as data
from scorealign.errors import DataError, UserError

USER = {"role": "user", "content": "What is 2+2?"}
SYSTEM = {"role": "system", "content": "Be brief."}
GOOD = {"role": "assistant", "content": "4"}
BAD = {"role": "assistant", "content": "5"}


def write_jsonl(path: Path, records: list, raw_lines: dict[int, str] | None = None) -> Path:
    """Write one JSON value per line; ``raw_lines`` replaces given 1-based lines verbatim."""
    lines = [json.dumps(r) for r in records]
    for number, text in (raw_lines or {}).items():
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def assert_error(match: list[str], func, *args, **kwargs) -> str:
    """Call ``func`` expecting a one-line DataError containing every string in ``match``."""
    with pytest.raises(DataError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for part in match:
        assert part in message, (part, message)
    return message


# --------------------------------------------------------------------------- sources


def test_jsonl_rows_carry_file_and_line_skipping_blank_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "a"}\n\n   \n{"prompt": "b", "x": 1}\n', encoding="utf-8")
    rows = data.load_rows(str(path))
    assert [(r["prompt"], r["_line"], r["_file"]) for r in rows] == [("a", 1, str(path)), ("b", 4, str(path))]
    assert rows[1]["x"] == 1
    assert data.row_location(rows[1]) == f"{path} line 4"


def test_json_list_columns_and_json_lines(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([{"prompt": "a"}, {"prompt": "b"}]))
    (tmp_path / "cols.json").write_text(json.dumps({"prompt": ["a", "b"], "answer": [1, 2]}))
    (tmp_path / "lines.json").write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    for name in ("list.json", "cols.json", "lines.json"):
        rows = data.load_rows(str(tmp_path / name))
        assert [r["prompt"] for r in rows] == ["a", "b"]
        assert [r["_line"] for r in rows] == [1, 2]
        assert data.row_location(rows[1]).endswith(f"{name} row 2")
    assert data.load_rows(str(tmp_path / "cols.json"))[1]["answer"] == 2


def test_parquet_and_csv(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"prompt": ["p1", "p2"], "completion": ["c1", "c2"], "score": [0.5, 1.5]})
    frame.to_parquet(tmp_path / "d.parquet")
    frame.to_csv(tmp_path / "d.csv", index=False)
    for name in ("d.parquet", "d.csv"):
        rows = data.load_scored(str(tmp_path / name))
        assert [(r["completion"], r["score"], r["_line"]) for r in rows] == [("c1", 0.5, 1), ("c2", 1.5, 2)]
        assert isinstance(rows[0]["score"], float)


def test_parquet_written_by_datasets_with_messages(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": [SYSTEM, USER], "answer": "4"}])
    ds.to_parquet(str(tmp_path / "m.parquet"))
    rows = data.load_prompts(str(tmp_path / "m.parquet"))
    assert rows[0]["prompt"] == [SYSTEM, USER] and rows[0]["answer"] == "4"


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}])
    ds.save_to_disk(str(tmp_path / "one"))
    assert [r["prompt"] for r in data.load_prompts(str(tmp_path / "one"))] == ["a", "b"]
    dd = datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_list([{"prompt": "t"}])})
    dd.save_to_disk(str(tmp_path / "two"))
    assert [r["prompt"] for r in data.load_prompts(str(tmp_path / "two"), split="test")] == ["t"]
    assert_error(["'validation'", "train", "test"], data.load_rows, str(tmp_path / "two"), "validation")


def test_directory_of_split_files(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "tr"}])
    write_jsonl(tmp_path / "test.jsonl", [{"prompt": "te"}])
    rows = data.load_rows(str(tmp_path), split="test")
    assert [r["prompt"] for r in rows] == ["te"] and rows[0]["_file"].endswith("test.jsonl")
    assert_error(["no data files for split 'dev'"], data.load_rows, str(tmp_path), "dev")
    plain = tmp_path / "plain"
    plain.mkdir()
    write_jsonl(plain / "a.jsonl", [{"prompt": "x"}])
    write_jsonl(plain / "b.jsonl", [{"prompt": "y"}])
    assert [r["prompt"] for r in data.load_rows(str(plain))] == ["x", "y"]


def test_hub_id_goes_to_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake(source, split):
        calls.append((source, split))
        return datasets.Dataset.from_list([{"prompt": "hub"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    rows = data.load_prompts("org/name", split="test")
    assert calls == [("org/name", "test")]
    assert rows[0]["prompt"] == "hub" and rows[0]["_file"] == "org/name" and rows[0]["_line"] == 1


def test_hub_failures_are_wrapped(monkeypatch):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    def missing(source, split):
        raise DatasetNotFoundError("nope")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    assert_error(["dataset 'org/nope' not found", "not a Hugging Face dataset id"],
                 data.load_rows, "org/nope")

    def broken(source, split):
        raise ValueError("Unknown split \"dev\".\nShould be one of ['train'].")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    assert_error(["org/x", "'dev'", "Unknown split"], data.load_rows, "org/x", "dev")


def test_missing_file_does_not_try_hub(monkeypatch, tmp_path):
    import datasets

    def boom(*args, **kwargs):
        raise AssertionError("hub must not be tried for a file path")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    message = assert_error(["nope.jsonl", "not found"], data.load_rows, "nope.jsonl")
    assert message == "dataset 'nope.jsonl' not found (no such file, and not a Hugging Face dataset id)"
    assert_error(["not found"], data.load_rows, str(tmp_path / "sub" / "x"))
    assert_error(["not found"], data.load_rows, "./data/train")


def test_data_error_is_a_user_error():
    assert issubclass(DataError, UserError) and issubclass(DataError, ValueError)


# --------------------------------------------------------------------------- source errors


def test_malformed_json_line_names_line(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "a"}] * 4, raw_lines={3: '{"prompt": "b",'})
    assert_error(["data.jsonl line 3", "invalid JSON"], data.load_rows, str(path))


def test_non_object_line(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "a"}, ["not", "an", "object"]])
    assert_error(["data.jsonl line 2", "expected a JSON object", "list"], data.load_rows, str(path))


def test_malformed_json_file_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n {"prompt": "a"},\n {"prompt": }\n]\n')
    assert_error(["bad.json line 3", "invalid JSON"], data.load_rows, str(path))


@pytest.mark.parametrize("name,content", [("empty.jsonl", ""), ("blank.jsonl", "\n\n"),
                                          ("empty.json", "[]"), ("empty.csv", "")])
def test_empty_file_has_no_rows(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    assert_error([name, "has no rows"], data.load_rows, str(tmp_path / name))


def test_unsupported_suffix(tmp_path):
    (tmp_path / "d.txt").write_text("hello")
    assert_error(["d.txt", "unsupported file type '.txt'"], data.load_rows, str(tmp_path / "d.txt"))


def test_corrupt_parquet(tmp_path):
    (tmp_path / "d.parquet").write_text("not parquet")
    assert_error(["d.parquet", "cannot read"], data.load_rows, str(tmp_path / "d.parquet"))


# --------------------------------------------------------------------------- prompts


def test_prompts_custom_field_and_extra_fields(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "q1", "answer": "a1"}])
    rows = data.load_prompts(str(path), field="question")
    assert rows[0]["prompt"] == "q1" and rows[0]["answer"] == "a1"


def test_prompts_derived_from_messages(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"messages": [SYSTEM, USER, GOOD]}, {"messages": [USER]}])
    rows = data.load_prompts(str(path))
    assert rows[0]["prompt"] == [SYSTEM, USER]
    assert rows[1]["prompt"] == [USER]
    bad = write_jsonl(tmp_path / "only.jsonl", [{"messages": [GOOD]}])
    assert_error(["only.jsonl line 1", "field 'messages' has no turns before"], data.load_prompts, str(bad))


@pytest.mark.parametrize("record,parts", [
    ({"other": "x"}, ["missing field 'prompt'"]),
    ({"prompt": None}, ["missing field 'prompt'"]),
    ({"prompt": "   "}, ["field 'prompt' is empty"]),
    ({"prompt": []}, ["field 'prompt' is empty"]),
    ({"prompt": 7}, ["field 'prompt' must be", "got a number"]),
    ({"prompt": [{"content": "hi"}]}, ["field 'prompt' message 1", "'role'"]),
    ({"prompt": [USER, {"role": "user"}]}, ["field 'prompt' message 2", "'content'"]),
    ({"prompt": [USER, "hi"]}, ["field 'prompt' message 2", "not an object"]),
])
def test_prompt_errors(tmp_path, record, parts):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "fine"}, record])
    assert_error(["p.jsonl line 2", *parts], data.load_prompts, str(path))


def test_csv_error_names_row(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,x\nhello,1\n,2\n")
    assert_error(["p.csv row 2", "missing field 'prompt'"], data.load_prompts, str(tmp_path / "p.csv"))


# --------------------------------------------------------------------------- preferences


def test_preferences_standard_and_conversational(tmp_path):
    path = write_jsonl(tmp_path / "pref.jsonl", [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5", "id": 1},
        {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]},
    ])
    rows = data.load_preferences(str(path))
    assert (rows[0]["prompt"], rows[0]["chosen"], rows[0]["rejected"], rows[0]["id"]) == ("2+2?", "4", "5", 1)
    assert (rows[1]["prompt"], rows[1]["chosen"], rows[1]["rejected"]) == ([USER], [GOOD], [BAD])


def test_preferences_implicit_prompt(tmp_path):
    path = write_jsonl(tmp_path / "pref.jsonl", [{"chosen": [SYSTEM, USER, GOOD], "rejected": [SYSTEM, USER, BAD]}])
    row = data.load_preferences(str(path))[0]
    assert row["prompt"] == [SYSTEM, USER] and row["chosen"] == [GOOD] and row["rejected"] == [BAD]


@pytest.mark.parametrize("record,parts", [
    ({"prompt": "p", "rejected": "r"}, ["missing field 'chosen'"]),
    ({"prompt": "p", "chosen": "c"}, ["missing field 'rejected'"]),
    ({"prompt": "p", "chosen": "", "rejected": "r"}, ["field 'chosen' is empty"]),
    ({"prompt": "p", "chosen": "c", "rejected": " "}, ["field 'rejected' is empty"]),
    ({"prompt": [USER], "chosen": [GOOD], "rejected": []}, ["field 'rejected' is empty"]),
    ({"prompt": [USER], "chosen": "4", "rejected": [BAD]}, ["field 'chosen' must be a list"]),
    ({"prompt": "p", "chosen": [GOOD], "rejected": "r"}, ["field 'chosen' must be a string"]),
    ({"chosen": "c", "rejected": "r"}, ["missing field 'prompt'"]),
    ({"chosen": [USER, GOOD], "rejected": [SYSTEM, BAD]}, ["missing field 'prompt'", "share no"]),
    ({"chosen": [USER, GOOD], "rejected": [USER, GOOD]}, ["field 'chosen' is empty"]),
])
def test_preference_errors(tmp_path, record, parts):
    path = write_jsonl(tmp_path / "pref.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}] * 2 + [record])
    assert_error(["pref.jsonl line 3", *parts], data.load_preferences, str(path))


# --------------------------------------------------------------------------- scored


def test_scored_long_and_pair_formats(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [
        {"prompt": "p1", "completion": "c", "score": 1, "tag": "x"},
        {"prompt": "p2", "completion_a": "a", "score_a": "0.25", "completion_b": "b", "score_b": -2.0, "tag": "y"},
    ])
    rows = data.load_scored(str(path))
    assert [(r["prompt"], r["completion"], r["score"], r["_line"], r["tag"]) for r in rows] == [
        ("p1", "c", 1.0, 1, "x"), ("p2", "a", 0.25, 2, "y"), ("p2", "b", -2.0, 2, "y")]
    assert "completion_a" not in rows[1] and "score_b" not in rows[2]
    assert all(isinstance(r["score"], float) for r in rows)


@pytest.mark.parametrize("record,parts", [
    ({"prompt": "p", "completion": "c", "score": "abc"}, ["field 'score' is not a number ('abc')"]),
    ({"prompt": "p", "completion": "c", "score": True}, ["field 'score' is not a number"]),
    ({"prompt": "p", "completion": "c", "score": [1]}, ["field 'score' is not a number"]),
    ({"prompt": "p", "completion": "c", "score": "nan"}, ["field 'score' is not finite (nan)"]),
    ({"prompt": "p", "completion": "c", "score": "inf"}, ["field 'score' is not finite"]),
    ({"prompt": "p", "completion": "c"}, ["missing field 'score'"]),
    ({"prompt": "p", "completion": " ", "score": 1}, ["field 'completion' is empty"]),
    ({"prompt": "p", "score": 1}, ["missing field 'completion'"]),
    ({"completion": "c", "score": 1}, ["missing field 'prompt'"]),
    ({"prompt": "p", "completion_a": "a", "score_a": 1, "completion_b": "", "score_b": 2},
     ["field 'completion_b' is empty"]),
    ({"prompt": "p", "completion_a": "a", "score_a": "x", "completion_b": "b", "score_b": 2},
     ["field 'score_a' is not a number ('x')"]),
    ({"prompt": "p", "completion_a": "a", "score_a": 1, "completion_b": "b"}, ["missing field 'score_b'"]),
])
def test_scored_errors(tmp_path, record, parts):
    path = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "p", "completion": "c", "score": 0}] * 6 + [record])
    assert_error(["s.jsonl line 7", *parts], data.load_scored, str(path))


def test_scored_nan_in_parquet_names_row(tmp_path):
    import pandas as pd

    pd.DataFrame({"prompt": ["a", "b"], "completion": ["x", "y"], "score": [1.0, math.nan]}).to_parquet(
        tmp_path / "s.parquet")
    assert_error(["s.parquet row 2", "'score'"], data.load_scored, str(tmp_path / "s.parquet"))


# --------------------------------------------------------------------------- sft


def test_sft_formats(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [
        {"prompt": "p", "completion": "c"},
        {"prompt": [USER], "completion": [GOOD]},
        {"messages": [SYSTEM, USER, GOOD]},
    ])
    rows = data.load_sft(str(path))
    assert [(r["prompt"], r["completion"]) for r in rows] == [
        ("p", "c"), ([USER], [GOOD]), ([SYSTEM, USER], [GOOD])]


@pytest.mark.parametrize("record,parts", [
    ({"prompt": "p"}, ["missing field 'completion'"]),
    ({"prompt": "p", "completion": ""}, ["field 'completion' is empty"]),
    ({"completion": "c"}, ["missing field 'prompt'"]),
    ({"messages": [USER]}, ["field 'messages' must end with an assistant turn"]),
    ({"messages": [GOOD]}, ["field 'messages' has no turns before"]),
    ({"messages": [USER, {"role": "assistant", "content": ""}]}, ["'messages' has an empty final"]),
    ({"messages": "hi"}, ["field 'messages' must be a list"]),
])
def test_sft_errors(tmp_path, record, parts):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "p", "completion": "c"}, record])
    assert_error(["sft.jsonl line 2", *parts], data.load_sft, str(path))


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(["what is two plus two", "four is the answer"],
                            trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]")


def test_render_prompt(tokenizer):
    assert data.render_prompt(tokenizer, "plain text") == "plain text"
    tokenizer.chat_template = None
    message = assert_error(["no chat template"], data.render_prompt, tokenizer, [USER])
    assert message == data.NO_CHAT_TEMPLATE
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert data.render_prompt(tokenizer, [SYSTEM, USER]) == "<system>Be brief.\n<user>What is 2+2?\n<assistant>"


def test_group_by_prompt_first_seen_order():
    rows = [{"prompt": "b", "i": 0}, {"prompt": [USER], "i": 1}, {"prompt": "a", "i": 2},
            {"prompt": "b", "i": 3}, {"prompt": [dict(reversed(list(USER.items())))], "i": 4}]
    groups = data.group_by_prompt(rows)
    assert [[r["i"] for r in g] for g in groups] == [[0, 3], [1, 4], [2]]
    assert_error(["x.jsonl line 5", "missing field 'query'"], data.group_by_prompt,
                 [{"_file": "x.jsonl", "_line": 5}], key="query")


def test_row_fields():
    rows = [{"prompt": "p", "answer": 1, "_file": "f", "_line": 1},
            {"prompt": "q", "extra": "e", "_file": "f", "_line": 2}]
    assert data.row_fields(rows) == {"answer": [1, None], "extra": [None, "e"]}
    assert data.row_fields(rows, exclude=("prompt", "answer")) == {"extra": [None, "e"]}
    assert data.row_fields([]) == {}
