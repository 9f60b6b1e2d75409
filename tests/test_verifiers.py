"""Verifiable rewards on hand-written completions: code extraction, test splitting, unit-test
scoring (right, wrong, non-terminating, syntax error, no code) and math answer equivalence."""

from pathlib import Path

import pytest

from scorealign.errors import ConfigError, DataError, RewardError
from scorealign.rewards import isolation
from scorealign.rewards import sources as R
from scorealign.rewards.isolation import Limits, backend
from scorealign.rewards.verifiers import (
    MathReward,
    UnitTestReward,
    extract_code,
    last_number,
    split_tests,
)

needs_isolation = pytest.mark.skipif(backend() is None, reason="no bubblewrap here")
FAST = Limits(timeout_s=6.0, cpu_s=2, memory_mb=512, file_mb=8, processes=16, tmp_mb=16)
ADD = "def add(a, b):\n    return a + b"


@pytest.mark.parametrize("completion, code", [
    (f"Sure:\n```python\n{ADD}\n```\nDone.", ADD),
    (f"```py\nx = 1\n```\nbetter:\n```python\n{ADD}\n```", ADD),          # the last block
    (f"```\n{ADD}\n```", ADD),                                            # untagged
    (f"  {ADD}  ", ADD),                                                  # plain code
    (f"{ADD}\n```\nThat adds.", ADD),                                     # the prompt opened it
    (f"```python\n{ADD}", ADD),                                           # truncated, unclosed
    ("```bash\nls\n```", None),                                           # other language only
    ("   ", None),
])
def test_extract_code(completion, code):
    assert extract_code(completion) == code


def test_split_tests_forms():
    setup, cases = split_tests("import math\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n", 0)
    assert setup == "import math" and [n for n, _ in cases] == ["assert add(1, 2) == 3",
                                                                "assert add(0, 0) == 0"]
    setup, cases = split_tests("def helper():\n    return 2\n"
                               "def test_one():\n    assert add(1, 1) == helper()\n"
                               "def test_two():\n    assert add(2, 2) == 4\n", 3)
    assert "def helper" in setup and cases == [("test_one", "test_one()"),
                                               ("test_two", "test_two()")]
    assert split_tests(["assert f()", "assert g()"], 0)[1][1] == ("test 2", "assert g()")
    with pytest.raises(DataError, match="row 4, field 'tests': syntax error.*line 1"):
        split_tests("assert (", 4)
    with pytest.raises(DataError, match="row 1, field 'tests': no assert"):
        split_tests("x = 1", 1)
    with pytest.raises(DataError, match="row 2, field 'tests'"):
        split_tests(None, 2)


@needs_isolation
def test_unit_tests_on_hand_written_completions():
    tests = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(2, 2) == 4\n"
    completions = {
        "right": f"```python\n{ADD}\n```",
        "wrong": "```python\ndef add(a, b):\n    return a * b\n```",   # passes 2 + 2 only
        "endless": "```python\ndef add(a, b):\n    while True:\n        pass\n```",
        "syntax": "```python\ndef add(a, b)\n    return a + b\n```",
        "prose": "The sum of a and b is a plus b.",
        "no code": "```bash\necho 3\n```",
        "raises": "```python\ndef add(a, b):\n    raise ValueError('nope')\n```",
    }
    reward = UnitTestReward(limits=FAST)
    scores = reward(["p"] * 7, list(completions.values()), tests=[tests] * 7)
    by = dict(zip(completions, zip(scores, reward.details)))
    assert by["right"][0] == 1.0 and by["right"][1]["failures"] == []
    assert by["wrong"][0] == pytest.approx(1 / 3)
    assert by["wrong"][1]["failures"] == ["assert add(1, 2) == 3: assertion failed",
                                          "assert add(-1, 1) == 0: assertion failed"]
    assert by["endless"][0] == 0.0
    assert by["endless"][1]["limit"] and "not run" in by["endless"][1]["failures"][0]
    assert by["syntax"][0] == 0.0 and "syntax error in the code, line 1" in \
        by["syntax"][1]["failures"][0]
    assert by["prose"][0] == 0.0 and by["prose"][1]["failures"][0].startswith(
        "no code block, and the text is not Python: syntax error, line 1")
    assert by["no code"] == (0.0, {"passed": 0, "total": 3, "limit": None,
                                   "failures": ["no Python code in the completion"]})
    assert by["raises"][1]["failures"][0].endswith("ValueError: nope")
    assert R.reward_details(reward) == reward.details

    strict = UnitTestReward(all_or_nothing=True, limits=FAST)
    assert strict(["p"] * 2, [completions["right"], completions["wrong"]],
                  tests=[tests] * 2) == [1.0, 0.0]


@needs_isolation
def test_unit_tests_from_spec_and_test_functions():
    src = R.reward_from_spec("builtin:unit_tests:all")
    assert src.name == "unit_tests:all"
    tests = "def test_small():\n    assert add(1, 2) == 3\ndef test_big():\n    assert add(10**6, 1) == 1000001\n"
    assert src(["p"], [ADD], tests=[tests]) == [1.0]
    with pytest.raises(RewardError, match="needs a 'tests' column"):
        src(["p"], [ADD])
    with pytest.raises(ConfigError, match="unit_tests:some"):
        R.reward_from_spec("builtin:unit_tests:some")


def test_isolation_unavailable_is_refused_unless_opted_out(monkeypatch):
    monkeypatch.setattr(isolation, "backend", lambda: None)
    monkeypatch.setattr(isolation, "_WARNED", set())         # warned once per process
    with pytest.raises(ConfigError, match="must run isolated.*reward_isolation: false"):
        UnitTestReward()
    with pytest.warns(UserWarning, match="WITHOUT isolation"):
        UnitTestReward(isolate=False)
    from scorealign.train import TrainConfig

    assert TrainConfig().reward_isolation is True


@pytest.mark.parametrize("completion, gold, score, method", [
    (r"So the answer is $\boxed{\frac{1}{2}}$.", "0.5", 1.0, "math-verify"),
    (r"The result is \boxed{3/4}", r"\frac{3}{4}", 1.0, "math-verify"),
    ("Ответ: 12.", "12", 1.0, "math-verify"),
    ("La réponse est 13.", "12", 0.0, "math-verify"),
    ("Son 7 manzanas.", "7", 1.0, "math-verify"),
    ("I do not know.", "4", 0.0, "numeric fallback"),
])
def test_math_answers(completion, gold, score, method):
    pytest.importorskip("math_verify")
    reward = R.reward_from_spec("builtin:math")
    assert reward(["p"], [completion], answer=[gold]) == [score]
    assert reward.details[0]["method"].startswith(method)


def test_math_fallback_and_errors():
    assert last_number("first 3, then 2,5") == 2.5 and last_number("3/4 of it") == 0.75
    assert last_number("none") is None
    pytest.importorskip("math_verify")
    reward = MathReward()
    reward.parse = lambda text, **kw: []            # math-verify parses nothing: numbers compared
    assert reward(["p"] * 2, ["it is 42", "it is 41"], answer=["42", "42"]) == [1.0, 0.0]
    assert "numeric fallback" in reward.details[0]["method"]
    with pytest.raises(RewardError, match="needs an 'answer' column"):
        reward(["p"], ["1"])


SOLUTIONS = {
    "add": "def add(a, b): return a + b", "square": "def square(x): return x * x",
    "is_even": "def is_even(n): return n % 2 == 0", "maximum": "def maximum(xs): return max(xs)",
    "reverse": "def reverse(s): return s[::-1]",
    "count_vowels": "def count_vowels(s): return sum(c in 'aeiou' for c in s)",
    "factorial": "import math\ndef factorial(n): return math.factorial(n)",
    "sum_list": "def sum_list(xs): return sum(xs)",
    "first": "def first(xs): return xs[0] if xs else None",
    "absolute": "def absolute(x): return abs(x)",
    "is_palindrome": "def is_palindrome(s): return s == s[::-1]",
    "double_all": "def double_all(xs): return [2 * x for x in xs]",
    "minimum": "def minimum(a, b): return min(a, b)", "last_char": "def last_char(s): return s[-1]",
    "count_words": "def count_words(s): return len(s.split())",
    "celsius_to_fahrenheit": "def celsius_to_fahrenheit(c): return c * 9 / 5 + 32",
}


@needs_isolation
def test_embedded_task_is_solvable_and_the_examples_are_in_sync(tmp_path):
    """Reference solutions pass every test of the code task; the math answers are the
    operations of their ids; examples/verifiable/ holds exactly what write_task writes."""
    from scorealign.data.formats import load_prompts
    from scorealign.tasks.verifiable import arith_rows, code_rows, math_rows, write_task

    train, held_out = code_rows()
    rows = train + held_out
    assert not {r["id"] for r in train} & {r["id"] for r in held_out}
    reward = UnitTestReward(all_or_nothing=True)
    assert reward(["p"] * len(rows), [f"```python\n{SOLUTIONS[r['id'][5:]]}\n```" for r in rows],
                  tests=[r["tests"] for r in rows]) == [1.0] * len(rows)
    train, held_out = math_rows()
    assert len({r["language"] for r in held_out}) == 4
    assert not {r["id"] for r in train} & {r["id"] for r in held_out}
    for r in train + held_out:
        expression = r["id"].split("/")[-1]
        assert str(eval(expression)) == r["answer"]
    train, held_out = arith_rows()
    assert (len(train), len(held_out)) == (520, 128)
    problems = {split: {r["id"].split("/")[-1] for r in rows}
                for split, rows in (("train", train), ("eval", held_out))}
    assert not problems["train"] & problems["eval"] and len(problems["eval"]) == 32
    for r in train + held_out:
        expression = r["id"].split("/")[-1]
        assert str(eval(expression)) == r["answer"] and expression.replace("*", " * ").replace(
            "+", " + ") in r["prompt"][0]["content"]
    for path in write_task(tmp_path):
        example = Path("examples/verifiable") / path.name
        assert example.read_text() == path.read_text(), f"regenerate {example}"
        assert load_prompts(str(example))[0]["prompt"][0]["role"] == "user"


@pytest.mark.parametrize("name", ["rloo_math", "rloo_code", "rloo_arith"])
def test_example_configs_parse(name):
    from scorealign.core.config import load_config
    from scorealign.train import TrainConfig

    cfg = load_config(TrainConfig, f"examples/verifiable/{name}.yaml")
    assert cfg.rewards[0].startswith("builtin:") and Path(cfg.eval_dataset).is_file()


@needs_isolation
def test_details_of_a_weighted_sum():
    """reward_details merges the parts' per-row details by source name (for completions.jsonl)."""
    source = R.rewards_from_specs(["builtin:unit_tests", "builtin:length"], [1.0, 0.1])
    scores, valid = R.score_batch(source, ["p", "p"], [ADD, "no way"],
                                  {"tests": ["assert add(1, 2) == 3"] * 2})
    assert scores.tolist() == pytest.approx([1.0 + 0.1 * len(ADD.split()), 0.2]) and valid.all()
    details = R.reward_details(source)
    assert details[0] == {"unit_tests": {"passed": 1, "total": 1, "failures": [], "limit": None}}
    assert details[1]["unit_tests"]["failures"][0].startswith("no code block")


@needs_isolation
def test_training_step_with_unit_tests_and_math(tiny_model_dir, tmp_path):
    """The loop hands the `tests` and `answer` columns of the embedded task to the verifiers."""
    import json

    from scorealign.core.config import load_config
    from scorealign.train import TrainConfig, train

    pytest.importorskip("math_verify")
    for name in ("rloo_code", "rloo_math", "rloo_arith"):
        cfg = load_config(TrainConfig, f"examples/verifiable/{name}.yaml",
                          {"model": tiny_model_dir("llama"), "steps": 1, "prompts_per_step": 2,
                           "k": 2, "micro_batch_size": 4, "max_new_tokens": 4, "eval_every": 0,
                           "log_completions_every": 1, "output_dir": str(tmp_path / name)})
        run = train(cfg)
        row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        assert row["reward/skipped"] == 0 and 0.0 <= row["reward/mean"] <= 1.0
        logged = [json.loads(line) for line in (run / "completions.jsonl").read_text().splitlines()]
        assert len(logged) == 4 and all(r["details"] for r in logged)   # why each row scored
