"""Tests for scorealign.rewards.sources: every source with hand-checked values, specs, and error paths."""

from __future__ import annotations

import math

import pytest
import torch

from scorealign.errors import ConfigError, RewardError, UserError
from scorealign.rewards import sources as R

# --------------------------------------------------------------------------- helpers

def plus_len(prompts, completions, **kw):
    return [float(len(c)) for c in completions]


def uses_field(prompts, completions, target, **kw):
    return [1.0 if c == t else 0.0 for c, t in zip(completions, target)]


def boom_on_bad(prompts, completions, **kw):
    if any("bad" in c for c in completions):
        raise ValueError("cannot score\nthis one")
    return [1.0] * len(completions)


def nan_on_two(prompts, completions, **kw):
    return [float("nan") if c == "two" else 1.0 for c in completions]


def wrong_length(prompts, completions, **kw):
    return [1.0] * (len(completions) - 1)


# --------------------------------------------------------------------------- callable

def test_callable_reward_passes_row_fields_and_names_itself():
    src = R.CallableReward(uses_field)
    assert src.name == "uses_field"
    assert isinstance(src, R.RewardSource)
    out = src(["p", "q"], ["a", "b"], target=["a", "x"])
    assert out == [1.0, 0.0]
    scores, valid = R.score_batch(src, ["p", "q"], ["a", "b"], {"target": ["x", "b"]})
    assert scores.dtype == torch.float32 and valid.dtype == torch.bool
    assert scores.tolist() == [0.0, 1.0] and valid.tolist() == [True, True]
    assert R.CallableReward(uses_field, name="custom").name == "custom"


def test_callable_accepts_tensor_and_tuple_results():
    src = R.CallableReward(lambda p, c, **k: torch.tensor([1.5, 2.5]), name="t")
    assert R.score_batch(src, ["a", "b"], ["x", "y"])[0].tolist() == [1.5, 2.5]
    src = R.CallableReward(lambda p, c, **k: (3, 4), name="tup")
    assert R.score_batch(src, ["a", "b"], ["x", "y"])[0].tolist() == [3.0, 4.0]


# --------------------------------------------------------------------------- file

def write_rewards_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(
        "import math\n"
        "def exclaim(prompts, completions, **kw):\n"
        "    return [float(c.count('!')) for c in completions]\n"
        "def other(prompts, completions, **kw):\n"
        "    return [0.0] * len(completions)\n"
        "CONST = 3\n"
    )
    return path


def test_file_reward_loads_function(tmp_path):
    path = write_rewards_file(tmp_path)
    src = R.FileReward(path, "exclaim")
    assert src.name == "exclaim"
    assert src(["p"] * 3, ["hi!", "no", "!!!"]) == [1.0, 0.0, 3.0]
    src2 = R.reward_from_spec(f"file:{path}:exclaim")
    assert src2(["p"], ["a!b!"]) == [2.0]


def test_file_reward_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found") as ei:
        R.FileReward(tmp_path / "missing.py", "f")
    assert "missing.py" in str(ei.value)

    path = write_rewards_file(tmp_path)
    with pytest.raises(ConfigError) as ei:
        R.FileReward(path, "nope")
    msg = str(ei.value)
    assert "'nope'" in msg and "exclaim" in msg and "other" in msg and "\n" not in msg
    assert "math" not in msg.split("defines:")[1]  # imported modules are not listed

    bad = tmp_path / "broken.py"
    bad.write_text("def f(:\n    pass\n")
    with pytest.raises(ConfigError, match="syntax error") as ei:
        R.FileReward(bad, "f")
    assert "broken.py" in str(ei.value) and "\n" not in str(ei.value)

    bad_import = tmp_path / "bad_import.py"
    bad_import.write_text("import no_such_module_xyz\n")
    with pytest.raises(ConfigError, match="bad_import.py") as ei:
        R.FileReward(bad_import, "f")
    assert "no_such_module_xyz" in str(ei.value)

    not_callable = tmp_path / "nc.py"
    not_callable.write_text("f = 3\n")
    with pytest.raises(ConfigError, match="not a callable"):
        R.FileReward(not_callable, "f")


# --------------------------------------------------------------------------- weighted sum, builtins

def test_weighted_sum_values_and_name():
    a = R.CallableReward(plus_len, name="a")
    b = R.CallableReward(lambda p, c, **k: [10.0] * len(c), name="b")
    ws = R.WeightedSum([a, b], [0.5, 1.0])
    assert ws.name == "0.5*a+1.0*b"
    assert ws(["p", "p"], ["xx", "xxxx"]) == [0.5 * 2 + 10.0, 0.5 * 4 + 10.0]
    with pytest.raises(ConfigError):
        R.WeightedSum([a, b], [1.0])


def test_weighted_sum_component_wrong_length_names_component():
    a = R.CallableReward(plus_len, name="a")
    short = R.CallableReward(wrong_length, name="short")
    ws = R.WeightedSum([a, short], [1.0, 1.0])
    with pytest.raises(RewardError, match="'short'.*length 2 for 3"):
        R.score_batch(ws, ["p"] * 3, ["x", "y", "z"], on_error="skip")


def test_builtins():
    count = R.BUILTIN_REWARDS["count"]("cat")
    assert count.name == "count:cat"
    assert count([""] * 3, ["cat cat dog", "catalog cat.", "  cat\ncat\tcat "]) == [2.0, 0.0, 3.0]
    length = R.BUILTIN_REWARDS["length"]("")
    assert length.name == "length"
    assert length([""] * 3, ["a b  c", "", " one "]) == [3.0, 0.0, 1.0]
    with pytest.raises(ConfigError):
        R.BUILTIN_REWARDS["count"]("")


# --------------------------------------------------------------------------- specs

def test_reward_from_spec_each_prefix(tmp_path, monkeypatch):
    pkg = tmp_path / "user_pkg_rw"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "scores.py").write_text(
        "def plus_len(prompts, completions, **kw):\n"
        "    return [float(len(c)) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    src = R.reward_from_spec("py:user_pkg_rw.scores:plus_len")
    assert src.name == "plus_len"
    assert src(["p"], ["abc"]) == [3.0]
    with pytest.raises(ConfigError, match="plus_len"):
        R.reward_from_spec("py:user_pkg_rw.scores:nothing_here")
    src = R.reward_from_spec("py:os.path:join")  # any importable callable
    assert src.name == "join"
    assert R.reward_from_spec("builtin:count:yes")([""], ["yes no yes"]) == [2.0]
    assert R.reward_from_spec("builtin:length")([""], ["a b"]) == [2.0]
    path = write_rewards_file(tmp_path)
    assert R.reward_from_spec(f"file:{path}:other").name == "other"


def test_reward_from_spec_errors():
    with pytest.raises(ConfigError) as ei:
        R.reward_from_spec("http://x")
    msg = str(ei.value)
    for form in ("py:", "file:", "model:", "builtin:"):
        assert form in msg
    with pytest.raises(ConfigError):
        R.reward_from_spec("no_prefix")
    with pytest.raises(ConfigError, match="unknown builtin"):
        R.reward_from_spec("builtin:nope")
    with pytest.raises(ConfigError, match="no_such_mod"):
        R.reward_from_spec("py:no_such_mod:f")
    with pytest.raises(ConfigError):
        R.reward_from_spec("py:justmodule")
    with pytest.raises(ConfigError):
        R.reward_from_spec("file:only_path.py")


def test_rewards_from_specs():
    one = R.rewards_from_specs(["builtin:length"])
    assert one.name == "length"
    two = R.rewards_from_specs(["builtin:length", "builtin:count:a"])
    assert isinstance(two, R.WeightedSum) and two.name == "1.0*length+1.0*count:a"
    assert two([""], ["a a b"]) == [3.0 + 2.0]
    w = R.rewards_from_specs(["builtin:length", "builtin:count:a"], [2.0, -1.0])
    assert w([""], ["a a b"]) == [2 * 3.0 - 2.0]
    single_weighted = R.rewards_from_specs(["builtin:length"], [0.5])
    assert single_weighted([""], ["a b"]) == [1.0]
    with pytest.raises(ConfigError):
        R.rewards_from_specs(["builtin:length"], [1.0, 2.0])
    with pytest.raises(ConfigError):
        R.rewards_from_specs([])


# --------------------------------------------------------------------------- score_batch errors

def test_raising_source_fail_and_skip():
    src = R.CallableReward(boom_on_bad)
    with pytest.raises(RewardError) as ei:
        R.score_batch(src, ["p"] * 3, ["ok", "bad", "ok"])
    msg = str(ei.value)
    assert "boom_on_bad" in msg and "ValueError" in msg and "cannot score this one" in msg
    assert "\n" not in msg
    assert isinstance(ei.value, UserError)

    scores, valid = R.score_batch(src, ["p"] * 3, ["ok", "bad", "ok"], on_error="skip")
    assert valid.tolist() == [True, False, True]
    assert scores.tolist() == [1.0, 0.0, 1.0]
    assert int((~valid).sum()) == 1


def test_skip_retry_passes_row_fields_per_row():
    seen = []

    def f(prompts, completions, tag):
        seen.append(list(tag))
        if len(completions) > 1:
            raise RuntimeError("batch fails")
        return [float(tag[0])]

    scores, valid = R.score_batch(R.CallableReward(f), ["a", "b"], ["x", "y"],
                                  {"tag": [3, 4]}, on_error="skip")
    assert scores.tolist() == [3.0, 4.0] and valid.all()
    assert seen == [[3, 4], [3], [4]]


def test_nan_score_fail_names_row_and_skip_marks_invalid():
    src = R.CallableReward(nan_on_two)
    with pytest.raises(RewardError) as ei:
        R.score_batch(src, ["p"] * 3, ["one", "two", "three"])
    msg = str(ei.value)
    assert "nan_on_two" in msg and "row 1" in msg and "'two'" in msg

    long = "x" * 100
    inf_src = R.CallableReward(lambda p, c, **k: [1.0, math.inf], name="inf_src")
    with pytest.raises(RewardError) as ei:
        R.score_batch(inf_src, ["p", "p"], ["a", long])
    assert "inf_src" in str(ei.value) and "row 1" in str(ei.value)
    assert "x" * 40 in str(ei.value) and "x" * 41 not in str(ei.value)

    scores, valid = R.score_batch(src, ["p"] * 3, ["one", "two", "three"], on_error="skip")
    assert valid.tolist() == [True, False, True]
    assert scores.tolist() == [1.0, 0.0, 1.0]


def test_wrong_return_shape():
    src = R.CallableReward(wrong_length)
    for mode in ("fail", "skip"):
        with pytest.raises(RewardError, match=r"'wrong_length'.*length 3 for 4 completions"):
            R.score_batch(src, ["p"] * 4, ["a", "b", "c", "d"], on_error=mode)
    with pytest.raises(RewardError, match="returned float"):
        R.score_batch(R.CallableReward(lambda p, c: 1.0, name="scalar"), ["p"], ["a"])
    with pytest.raises(RewardError, match="non-number at row 1"):
        R.score_batch(R.CallableReward(lambda p, c: [1.0, "x"], name="s"), ["p", "q"], ["a", "b"])
    with pytest.raises(RewardError, match="non-number at row 0"):
        R.score_batch(R.CallableReward(lambda p, c: [None], name="s"), ["p"], ["a"])


def test_bad_on_error_and_empty_batch():
    src = R.CallableReward(plus_len)
    with pytest.raises(ConfigError, match="on_error"):
        R.score_batch(src, ["p"], ["a"], on_error="ignore")
    scores, valid = R.score_batch(src, [], [])
    assert scores.shape == (0,) and valid.shape == (0,)


# --------------------------------------------------------------------------- tiny reward model

SENTENCES = [f"the {a} {b} is {c}" for a in ("red", "blue", "green") for b in ("cat", "dog", "bird")
             for c in ("happy", "sad", "here")] + ["hello world", "say yes", "no thanks"]


def build_tiny_reward_model(path, with_pad: bool = True, chat_template: str | None = None):
    """A 1-layer Llama classifier + a WordLevel tokenizer trained on a few sentences."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    special = ["<pad>", "<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=special))
    kwargs = dict(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    if with_pad:
        kwargs["pad_token"] = "<pad>"
    hf_tok = PreTrainedTokenizerFast(**kwargs)
    if chat_template:
        hf_tok.chat_template = chat_template
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64, num_labels=1,
                         pad_token_id=hf_tok.convert_tokens_to_ids("<pad>"))
    model = LlamaForSequenceClassification(config)
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)
    return model, hf_tok


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_rm")
    build_tiny_reward_model(path)
    return path


PROMPTS = ["the red cat is", [{"role": "user", "content": "say yes"}], "hello", "the blue dog",
           "no", [{"role": "system", "content": "hello"}, {"role": "user", "content": "the bird"}]]
COMPLETIONS = [" happy", "yes", " world world world world", " is sad here", " thanks", "is green"]


def test_model_reward_scores(tiny_model_dir):
    src = R.reward_from_spec("model:" + str(tiny_model_dir))
    assert src.name == "model:" + str(tiny_model_dir)
    assert not src.model.training
    scores, valid = R.score_batch(src, PROMPTS, COMPLETIONS)
    assert scores.shape == (6,) and valid.all() and torch.isfinite(scores).all()
    assert torch.equal(scores, R.score_batch(src, PROMPTS, COMPLETIONS)[0])  # deterministic
    one = R.reward_from_spec("model:" + str(tiny_model_dir), batch_size=1)
    s1 = torch.tensor(one(PROMPTS, COMPLETIONS))
    torch.testing.assert_close(s1, scores, atol=1e-5, rtol=0)
    assert len(set(scores.tolist())) > 1  # not a constant

    # manual forward, one text at a time, no padding
    for prompt, completion, score in zip(PROMPTS, COMPLETIONS, scores.tolist()):
        if isinstance(prompt, str):
            text = prompt + completion
        else:  # no chat template: contents joined with newlines
            text = "\n".join([m["content"] for m in prompt] + [completion])
        assert src.format_text(prompt, completion)[0] == text
        ids = src.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            expected = src.model(input_ids=ids).logits[0, 0].item()
        assert abs(expected - score) < 1e-5


def test_model_reward_chat_template_and_eos_pad(tmp_path):
    template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    build_tiny_reward_model(tmp_path, with_pad=False, chat_template=template)
    src = R.ModelReward(str(tmp_path), batch_size=2, max_length=4)
    assert src.tokenizer.pad_token == "</s>"
    assert src.model.config.pad_token_id == src.tokenizer.convert_tokens_to_ids("</s>")
    text, special = src.format_text([{"role": "user", "content": "say"}], "yes")
    assert text == "user: say\nassistant: yes\n" and special is False
    scores = src(PROMPTS, COMPLETIONS)
    assert len(scores) == 6 and all(math.isfinite(s) for s in scores)


def test_model_reward_wrong_path(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(ConfigError) as ei:
        R.reward_from_spec(f"model:{missing}")
    assert str(missing) in str(ei.value) and "\n" not in str(ei.value)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ConfigError) as ei:
        R.ModelReward(str(empty))
    assert str(empty) in str(ei.value) and "\n" not in str(ei.value)


def test_model_reward_does_not_trust_remote_code_unless_asked(tiny_model_dir, monkeypatch):
    import transformers

    calls = []
    for cls in (transformers.AutoModelForSequenceClassification, transformers.AutoTokenizer):
        orig = cls.from_pretrained

        def spy(*args, _orig=orig, **kwargs):
            calls.append(kwargs)
            return _orig(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    R.ModelReward(str(tiny_model_dir))
    assert calls and all(c.get("trust_remote_code") is False for c in calls)
    assert any(c.get("use_safetensors") is True for c in calls)
    calls.clear()
    R.ModelReward(str(tiny_model_dir), trust_remote_code=True)
    assert all(c.get("trust_remote_code") is True for c in calls)
