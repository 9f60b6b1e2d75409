"""`scorealign reward-model`: a tiny Bradley-Terry reward model learns a simple preference rule,
saves a model the `model:` reward source loads, and bad input fails with file, line and field."""

from __future__ import annotations

import json
import random

import pytest
import torch
import yaml

from scorealign.core.tiny import TOY_WORDS, build_tiny_model
from scorealign.data.formats import load_preferences
from scorealign.errors import ConfigError, DataError
from scorealign.recipes import reward_model as RM
from scorealign.rewards.classifier import reward_text
from scorealign.rewards.sources import ModelReward, reward_from_spec

WORDS = [w for w in TOY_WORDS if w != "yes"]


def marker_pairs(n: int, seed: int = 0) -> list[dict]:
    """The rule: the chosen completion contains 'yes', the rejected one does not."""
    rng = random.Random(seed)

    def words(lo: int, hi: int) -> list[str]:
        return [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]

    rows = []
    for _ in range(n):
        chosen = words(3, 6)
        chosen.insert(rng.randrange(len(chosen) + 1), "yes")
        rows.append({"prompt": " ".join(words(2, 4)) + ":", "chosen": " " + " ".join(chosen),
                     "rejected": " " + " ".join(words(4, 7))})
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_yaml(path, values: dict) -> str:
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("base"), arch="llama", hidden=32, layers=2,
                            heads=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base_model):
    """One training run through `main` (400 pairs, 20% held out, 2 epochs: a few seconds on CPU)."""
    tmp = tmp_path_factory.mktemp("rm")
    data = write_jsonl(tmp / "prefs.jsonl", marker_pairs(400))
    config = write_yaml(tmp / "rm.yaml", {"model": str(base_model), "dataset": data,
                                          "eval_fraction": 0.2, "epochs": 2, "batch_size": 16,
                                          "lr": 3e-3})
    out = tmp / "out"
    assert RM.main([config, "--output_dir", str(out)]) == 0
    cfg = RM.RewardModelConfig(model=str(base_model), dataset=data, eval_fraction=0.2)
    return out, split_eval(cfg)


def split_eval(cfg):
    return RM.split_pairs(load_preferences(cfg.dataset), cfg.eval_fraction, cfg.seed)[1]


def test_reward_model_learns_marker_rule(trained):
    out, held_out = trained
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert len(held_out) == 80
    assert metrics[0]["eval/accuracy"] < 0.75                # untrained: near chance
    assert metrics[-1]["eval/accuracy"] > 0.9
    assert metrics[-1]["eval/loss"] < metrics[0]["eval/loss"]
    assert all(torch.isfinite(torch.tensor(m["eval/loss"])) for m in metrics)
    assert (out / "config.yaml").is_file()
    assert any((out / "final").glob("*.safetensors"))


def test_saved_model_scores_through_model_reward_source(trained):
    out, held_out = trained
    source = reward_from_spec("model:" + str(out / "final"))
    assert source.model.config.num_labels == 1
    assert source.model.config.pad_token_id == source.tokenizer.pad_token_id
    prompts = [p["prompt"] for p in held_out]
    chosen = torch.tensor(source(prompts, [p["chosen"] for p in held_out]))
    rejected = torch.tensor(source(prompts, [p["rejected"] for p in held_out]))
    assert (chosen > rejected).float().mean().item() > 0.9
    # the scoring path sees the same texts and tokens as training: identical rewards
    with torch.no_grad():
        c, r = RM.pair_rewards(source.model, source.tokenizer, held_out[:8], max_length=512)
    torch.testing.assert_close(c, chosen[:8])
    torch.testing.assert_close(r, rejected[:8])


def test_reward_text_matches_model_reward_format(trained):
    out, _ = trained
    source = ModelReward(str(out / "final"))
    chat = [{"role": "user", "content": "say it"}]
    for prompt, completion in (("hello:", " yes"), (chat, "yes no")):
        assert (reward_text(source.tokenizer, prompt, completion)
                == source.format_text(prompt, completion))
    # a conversational completion given as messages is the same text as its content string
    assert (reward_text(source.tokenizer, chat, [{"role": "assistant", "content": "yes no"}])
            == source.format_text(chat, "yes no"))
    template = source.tokenizer.chat_template
    source.tokenizer.chat_template = None
    try:
        assert reward_text(source.tokenizer, chat, "yes") == source.format_text(chat, "yes")
    finally:
        source.tokenizer.chat_template = template


def test_conversational_pairs_train_and_save(tmp_path, base_model):
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]}
            for r in marker_pairs(12)]
    data = write_jsonl(tmp_path / "c.jsonl", rows)
    cfg = RM.RewardModelConfig(model=str(base_model), dataset=data,
                               eval_fraction=0.25, batch_size=4, lr=1e-3,
                               output_dir=str(tmp_path / "out"))
    final = RM.train_reward_model(cfg)
    assert final["epoch"] == 1 and 0.0 <= final["eval/accuracy"] <= 1.0
    scores = reward_from_spec("model:" + str(tmp_path / "out" / "final"))(
        [rows[0]["prompt"]], [rows[0]["chosen"][0]["content"]])
    assert len(scores) == 1 and torch.isfinite(torch.tensor(scores)).all()


def test_split_is_seeded_and_disjoint():
    pairs = [{"i": i} for i in range(50)]
    train, held = RM.split_pairs(pairs, 0.1, seed=3)
    assert len(held) == 5 and len(train) == 45
    assert sorted(p["i"] for p in train + held) == list(range(50))
    assert RM.split_pairs(pairs, 0.1, seed=3) == (train, held)
    assert RM.split_pairs(pairs, 0.1, seed=4)[1] != held
    with pytest.raises(ConfigError, match="too few"):
        RM.split_pairs(pairs[:1], 0.5, seed=0)


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "rejected": " b"}, "missing field 'chosen'"),
    ({"prompt": "p", "chosen": "  ", "rejected": " b"}, "field 'chosen' is empty"),
    ({"prompt": "p", "chosen": " a", "rejected": 3}, "field 'rejected' must be"),
])
def test_malformed_pairs_name_file_line_and_field(tmp_path, row, message):
    good = {"prompt": "p", "chosen": " a", "rejected": " b"}
    data = write_jsonl(tmp_path / "prefs.jsonl", [good, row, good])
    config = write_yaml(tmp_path / "rm.yaml",
                        {"dataset": data, "output_dir": str(tmp_path / "out")})
    with pytest.raises(DataError) as err:
        RM.main([config])
    assert str(err.value).startswith(f"{data} line 2: ") and message in str(err.value)


def test_config_errors(tmp_path):
    config = write_yaml(tmp_path / "rm.yaml", {"dataset": "x.jsonl", "eval_fracton": 0.2})
    with pytest.raises(ConfigError, match="did you mean 'eval_fraction'"):
        RM.main([config])
    with pytest.raises(ConfigError, match="eval_fraction"):
        RM.main(["--dataset", "x.jsonl", "--eval_fraction", "1.0"])
    with pytest.raises(ConfigError, match="dataset: required"):
        RM.main([])
    data = write_jsonl(tmp_path / "prefs.jsonl", marker_pairs(10))
    with pytest.raises(ConfigError, match="not found"):
        RM.main(["--dataset", data, "--model", str(tmp_path / "nope")])


def test_help_lists_every_key(capsys):
    assert RM.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"--{key}" in text for key in RM.RewardModelConfig.__dataclass_fields__)
