"""Reward code in a sandboxed worker (``scorealign/rewards/sandbox.py``): results, errors, limits."""

import os
import time

import pytest

from scorealign.errors import ConfigError, RewardError
from scorealign.rewards import isolation
from scorealign.rewards import sources as R
from scorealign.rewards.sandbox import SandboxedFunction, SandboxLimits, SandboxTimeout

CODE = '''
import os, time
def pid(prompts, completions, **kw):
    return [float(os.getpid())] * len(completions)
def exclaim(prompts, completions, **kw):
    print("user output goes to stderr, not into the protocol")
    return [float(c.count("!")) + len(kw.get("lang", [])) for c in completions]
def slow(prompts, completions, **kw):
    time.sleep(30)
def hog(prompts, completions, **kw):
    block = bytearray(2 << 30)          # 2 GiB, over the limit
    return [0.0] * len(completions)
def boom(prompts, completions, **kw):
    raise ValueError("bad row")
def words(texts, source_lang, target_lang):
    return [f"{t}/{source_lang}>{target_lang}" for t in texts]
def big_file(prompts, completions, **kw):
    with open(os.environ.get("OUT_FILE", "/tmp/out.bin"), "wb") as f:
        f.write(b"x" * (4 << 20))
    return [0.0]
'''


@pytest.fixture
def code(tmp_path):
    path = tmp_path / "rw.py"
    path.write_text(CODE)
    return path


def test_runs_in_another_process_with_fields_and_prints(code, capfd):
    src = R.reward_from_spec(f"file:{code}:pid")
    assert isinstance(src, SandboxedFunction) and src.name == "pid"
    assert src(["p", "q"], ["a", "b"])[0] != float(os.getpid())
    ex = R.reward_from_spec(f"file:{code}:exclaim")
    scores, valid = R.score_batch(ex, ["p", "p"], ["hi!", "!!"], {"lang": ["en", "fr"]})
    assert scores.tolist() == [3.0, 4.0] and valid.all()        # '!' count + 2 field entries
    assert "user output goes to stderr" in capfd.readouterr().err
    words = R.reward_from_spec(f"file:{code}:words")
    assert words.fn(["a"], "en", "fr") == ["a/en>fr"]             # any JSON signature (translators)


def test_load_errors_are_config_errors(tmp_path, code):
    with pytest.raises(ConfigError, match="not found"):
        R.reward_from_spec(f"file:{tmp_path / 'missing.py'}:f")
    with pytest.raises(ConfigError, match="no function 'nope'.*exclaim"):
        R.reward_from_spec(f"file:{code}:nope")
    (tmp_path / "broken.py").write_text("def f(:\n")
    with pytest.raises(ConfigError, match="syntax error.*line 1"):
        R.reward_from_spec(f"file:{tmp_path / 'broken.py'}:f")
    with pytest.raises(ConfigError, match="no_such_module"):
        R.reward_from_spec("py:no_such_module:f")


def test_raise_timeout_and_memory_are_reward_errors(code):
    boom = R.reward_from_spec(f"file:{code}:boom")
    with pytest.raises(RewardError, match="'boom' raised ValueError: bad row"):
        R.score_batch(boom, ["p"], ["a"])
    _, valid = R.score_batch(boom, ["p", "p"], ["a", "b"], on_error="skip")
    assert not valid.any()

    slow = SandboxedFunction(f"file:{code}:slow", SandboxLimits(timeout_s=1.0))
    t0 = time.monotonic()
    with pytest.raises(SandboxTimeout, match="within 1 s"):
        R.score_batch(slow, ["p"], ["a"])
    assert time.monotonic() - t0 < 10
    _, valid = R.score_batch(slow, ["p", "p"], ["a", "b"], on_error="skip")   # one wait, no retry
    assert not valid.any()

    hog = SandboxedFunction(f"file:{code}:hog", SandboxLimits(memory_mb=1024))
    with pytest.raises(RewardError, match="MemoryError|memory limit"):
        R.score_batch(hog, ["p"], ["a"])
    ok = R.reward_from_spec(f"file:{code}:exclaim")
    R.score_batch(boom, ["p"], ["a"], on_error="skip")
    assert ok(["p"], ["!"]) == [1.0]                    # other workers are unaffected


def test_file_size_limit_is_named(code, tmp_path, monkeypatch):
    """A file over file_mb is reported as the file-size limit (it was once called a memory-limit
    hit), isolated or not; without isolation the file is cut at the limit."""
    src = SandboxedFunction(f"file:{code}:big_file", SandboxLimits(file_mb=1))
    with pytest.raises(Exception, match=r"File too large \[file-size limit \(1 MB"):
        src(["p"], ["a"])
    monkeypatch.setenv("OUT_FILE", str(tmp_path / "out.bin"))
    monkeypatch.setattr(isolation, "_WARNED", set())         # warned once per process
    with pytest.warns(UserWarning, match="WITHOUT isolation"):
        src = SandboxedFunction(f"file:{code}:big_file", SandboxLimits(file_mb=1, isolate=False))
    with pytest.raises(Exception, match=r"file-size limit \(1 MB"):
        src(["p"], ["a"])
    assert (tmp_path / "out.bin").stat().st_size <= 1 << 20


def test_in_process_when_disabled(code):
    src = R.reward_from_spec(f"file:{code}:pid", sandbox=None)
    assert src(["p"], ["a"]) == [float(os.getpid())]
    src = R.reward_from_spec(f"file:{code}:pid", sandbox=SandboxLimits(isolate=False))
    assert src(["p"], ["a"]) != [float(os.getpid())]


def test_train_config_limits():
    from scorealign.train import TrainConfig

    with pytest.raises(ConfigError, match="reward_timeout"):
        TrainConfig(reward_timeout=0)
    assert TrainConfig().reward_sandbox


def test_training_with_a_sandboxed_file_reward(code, tiny_model_dir, tmp_path):
    """The loop scores through the worker; a reward that exceeds reward_timeout with
    on_reward_error=skip costs one timeout per step and skips the step's rows, not the run."""
    import json

    from scorealign.train import TrainConfig, train

    def run(name, fn, **kw):
        cfg = TrainConfig(model=tiny_model_dir("llama"), dataset="toy", steps=1, k=2,
                          prompts_per_step=2, micro_batch_size=4, max_new_tokens=4,
                          rewards=(f"file:{code}:{fn}",), output_dir=str(tmp_path / name), **kw)
        return json.loads((train(cfg) / "metrics.jsonl").read_text().splitlines()[0])

    assert run("ok", "exclaim")["reward/skipped"] == 0
    row = run("slow", "slow", reward_timeout=1.0, on_reward_error="skip")
    assert row["reward/skipped"] == 4
