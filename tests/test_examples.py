"""Every file in `examples/` runs, in the order `examples/README.md` gives, from a clean directory
(only `examples/` present), each command cut to one or two steps on the tiny model."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from scorealign.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# Appended to each command (overrides win): one or two steps, short completions, small batches.
SHORT = {
    "train": ["--steps", "2", "--prompts_per_step", "4", "--micro_batch_size", "4",
              "--max_new_tokens", "8", "--eval_prompts", "4"],
    "sft": ["--num_epochs", "1"],
    "reward-model": ["--epochs", "1"],
    "sample": ["--k", "2", "--max_new_tokens", "8"],
    "synth-prefs": ["--max_new_tokens", "8"],
}


def documented_commands() -> list[list[str]]:
    """The commands of the README's bash block, in order, as argument lists."""
    text = (EXAMPLES / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)\n```", text, re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_every_example_file_is_used_by_the_documented_commands():
    commands = documented_commands()
    used = " ".join(" ".join(c) for c in commands)
    configs = [a for c in commands for a in c if a.endswith(".yaml") and a.startswith("examples/")]
    used += " ".join((ROOT / c).read_text() for c in configs)
    files = [p.relative_to(ROOT).as_posix() for p in EXAMPLES.rglob("*") if p.is_file()
             and p.name != "README.md" and "__pycache__" not in p.parts
             and p.parts[len(EXAMPLES.parts)] != "verifiable"]   # own chain: test_verifiers.py
    assert files and not [f for f in files if f not in used]


@pytest.mark.slow
def test_examples_run_in_documented_order(tmp_path, monkeypatch, capsys):
    (tmp_path / "examples").symlink_to(EXAMPLES)                # a clean clone: examples/ only
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    for argv in documented_commands():
        if argv[0] == "accelerate":                              # 2 processes: a subprocess
            argv = [sys.executable, "-m", "accelerate.commands.launch", *argv[2:],
                    "--steps", "1", "--prompts_per_step", "2", "--micro_batch_size", "4",
                    "--max_new_tokens", "4"]
            done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            continue
        assert argv[0] == "scorealign", argv
        code = cli([*argv[1:], *SHORT.get(argv[1], [])])
        captured = capsys.readouterr()
        assert code == 0, (argv, captured.err[-3000:])
    runs = tmp_path / "runs"
    for final in ("rloo_toy", "rloo_jsonl", "copg_mixed", "dpo", "sft", "reward_model",
                  "copg_offline", "rloo_accel"):
        assert (runs / final / "final").is_dir(), final
    for out in ("samples.jsonl", "scored.jsonl", "prefs.jsonl", "safety_eval/report.md",
                "winrate_eval/report.md", "plots/reward.png", "plots/eval_reward.png"):
        assert (runs / out).is_file(), out


def test_missing_inputs_of_an_example_are_one_line(tmp_path, monkeypatch, capsys):
    """Run out of order in a clean directory, every example that reads an earlier command's output
    stops with one line naming the missing path (no traceback), before loading anything heavy."""
    (tmp_path / "examples").symlink_to(EXAMPLES)
    monkeypatch.chdir(tmp_path)
    dependent = [c for c in documented_commands() if c[0] == "scorealign" and any(
        k in " ".join(c) for k in ("sample.yaml", "score.yaml", "copg_offline", "synth_prefs",
                                   "plot "))]
    assert len(dependent) == 5
    for argv in dependent:
        assert cli(argv[1:]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("scorealign: error: "), (argv, err)
        assert "runs/" in err[0] and ("not found" in err[0] or "not a run directory" in err[0])
