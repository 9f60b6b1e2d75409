"""The command line: configs, overrides, and one-line errors for bad input (no traceback)."""

import subprocess
import sys

import pytest

from scorealign.cli import main
from scorealign.core.config import load_config, parse_overrides
from scorealign.errors import ConfigError
from scorealign.train import TrainConfig


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err):
    assert code == 2
    lines = [x for x in err.strip().splitlines() if x]
    assert len(lines) == 1 and lines[0].startswith("scorealign: error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_yaml_and_overrides_typed(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("algo: reinforce\nk: 3\nlr: 1.0e-4\nrewards: [builtin:length, 'builtin:count:yes']\n")
    cfg = load_config(TrainConfig, f, ["--lr", "2e-5", "--whiten-rewards", "true",
                                       "--baseline_decay=0.9", "--reward_weights", "1,0.5"])
    assert (cfg.algo, cfg.k, cfg.lr, cfg.whiten_rewards) == ("reinforce", 3, 2e-5, True)
    assert cfg.rewards == ("builtin:length", "builtin:count:yes")
    assert cfg.reward_weights == (1.0, 0.5) and cfg.baseline_decay == 0.9
    with pytest.raises(Exception):                       # frozen: never mutated at run time
        cfg.lr = 1.0


def test_unknown_key_suggests(capsys, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lerning_rate: 0.1\n")
    line = one_line_error(*run_cli(capsys, "train", str(f))[::2])
    assert "unknown key 'lerning_rate'" in line and str(f) in line
    line = one_line_error(*run_cli(capsys, "train", str(f).replace("c.yaml", "x.yaml"))[::2])
    assert "not found" in line
    f.write_text("k: 2\n")
    line = one_line_error(*run_cli(capsys, "train", str(f), "--max_new_token", "3")[::2])
    assert "did you mean 'max_new_tokens'" in line


def test_bad_values(capsys, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("algo: rloo\nk: 1\n")
    assert "RLOO needs k >= 2" in one_line_error(*run_cli(capsys, "train", str(f))[::2])
    f.write_text("k: two\n")
    assert "k: expected int" in one_line_error(*run_cli(capsys, "train", str(f))[::2])
    f.write_text("algo: ppo2\n")
    assert "algo='ppo2'" in one_line_error(*run_cli(capsys, "train", str(f))[::2])


@pytest.mark.parametrize("content,expected", [
    (None, "not found"),
    ('{"question": "hi"}\n', "line 1: missing field 'prompt'"),
    ('{"prompt": "ok"}\n{"prompt": "   "}\n', "line 2"),
    ("", "no rows"),
])
def test_dataset_errors_are_one_line(capsys, tmp_path, tiny_model_dir, content, expected):
    data = tmp_path / "prompts.jsonl"
    if content is not None:
        data.write_text(content)
    f = tmp_path / "c.yaml"
    f.write_text(f"model: {tiny_model_dir('llama')}\ndataset: {data}\nsteps: 1\n"
                 f"output_dir: {tmp_path / 'run'}\n")
    line = one_line_error(*run_cli(capsys, "train", str(f))[::2])
    assert expected in line and "prompts.jsonl" in line


def test_resume_needs_a_run_dir(capsys, tmp_path):
    line = one_line_error(*run_cli(capsys, "train", "--resume", str(tmp_path))[::2])
    assert "not a run directory" in line


def test_parse_overrides_requires_values():
    assert parse_overrides(["--a=1", "--b-c", "x"]) == {"a": "1", "b_c": "x"}
    with pytest.raises(ConfigError, match="missing value"):
        parse_overrides(["--lr"])


def test_console_script_prints_no_traceback(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("nope: 1\n")
    proc = subprocess.run([sys.executable, "-m", "scorealign.cli", "train", str(f)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("scorealign: error:")


def test_help_lists_every_key(capsys):
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    for name in TrainConfig.__dataclass_fields__:
        assert f"--{name}" in out
