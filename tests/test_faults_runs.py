"""Fault corpus, part 2: run directories and checkpoints. A new run never reuses a run
directory silently; resume verifies checkpoint manifests, falls back to the newest intact one
with a one-line notice, refuses a config that changes the run (naming the key), and removes the
temporaries of interrupted writes. Refusals change no pre-existing file."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from faults import (
    assert_kept,
    one_error,
    run_cli,
    same_weights,
    snapshot,
    write_config,
)

from scorealign.core.checkpoint import checkpoint_problem, sha256_file


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    """A finished 3-step run (checkpoints at steps 1, 2, 3) and its config file."""
    import contextlib
    import io

    from scorealign.cli import main

    folder = tmp_path_factory.mktemp("finished")
    cfg = write_config(folder / "c.yaml", tiny_model_dir("llama"), steps=3)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(cfg), "--output_dir", str(folder / "run")]) == 0
    return folder / "run", cfg


def copy_run(finished, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished[0], run)
    return run


def metrics_steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ new runs into used folders


def test_fresh_run_into_a_finished_run_is_refused(capsys, finished, tmp_path):
    """Issue 20, data loss 1: metrics.jsonl deleted and config.yaml overwritten before."""
    run = copy_run(finished, tmp_path)
    before = snapshot(run)
    one_error(*run_cli(capsys, "train", finished[1], "--output_dir", run)[::2],
              str(run), "--resume", "--overwrite")
    assert snapshot(run) == before


def test_fresh_run_with_another_seed_cannot_continue_an_old_run(capsys, finished, tmp_path):
    """Issue 20, data loss 2: a 2-step seed-1 run in a longer run's folder, then --resume,
    continued from the OLD run's last checkpoint. Now the new run is refused, and a resume
    under seed 1 names the key."""
    run = copy_run(finished, tmp_path)
    before = snapshot(run)
    one_error(*run_cli(capsys, "train", finished[1], "--output_dir", run, "--seed", "1",
                       "--steps", "2")[::2], "already holds a run")
    one_error(*run_cli(capsys, "train", "--resume", run, "--seed", "1", "--steps", "5")[::2],
              "seed=1", "seed=0")
    assert snapshot(run) == before


def test_overwrite_moves_the_old_run_aside(capsys, finished, tmp_path):
    run = copy_run(finished, tmp_path)
    before = snapshot(run)
    code, out, _ = run_cli(capsys, "train", finished[1], "--output_dir", run, "--steps", "2",
                           "--overwrite")
    assert code == 0 and "moved the previous contents" in out
    (aside,) = tmp_path.glob("run.old-*")
    assert snapshot(aside) == before                             # the old run, whole
    assert metrics_steps(run) == [1, 2] and not (run / "checkpoints" / "step-000003").exists()


NEW_RUN_COMMANDS = [
    ("sft", ["sft", "--dataset", "DATA", "--output_dir", "RUN"]),
    ("reward-model", ["reward-model", "--dataset", "DATA", "--output_dir", "RUN"]),
    ("demo", ["demo", "--quick", "--output_dir", "RUN"]),
    ("demo-toy", ["demo", "--toy", "--quick", "--output_dir", "RUN"]),
    ("train-defaults", ["train", "CFG", "--output_dir", "RUN"]),
]


@pytest.mark.parametrize("name, argv", NEW_RUN_COMMANDS, ids=[c[0] for c in NEW_RUN_COMMANDS])
def test_every_run_command_refuses_a_used_folder(capsys, finished, tmp_path, name, argv):
    run = copy_run(finished, tmp_path)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "a", "completion": "b", "chosen": "b",
                                "rejected": "c"}) + "\n")
    before = snapshot(run)
    argv = [{"DATA": data, "RUN": run, "CFG": finished[1]}.get(a, a) for a in argv]
    one_error(*run_cli(capsys, *argv)[::2], "already holds a run", "--overwrite")
    assert snapshot(run) == before


@pytest.mark.parametrize("command", ["sample", "score"])
def test_output_file_is_never_replaced_silently(capsys, tiny_model_dir, tmp_path, command):
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    argv = (["sample", "--model", tiny_model_dir("llama"), "--k", "1", "--max_new_tokens", "2"]
            if command == "sample" else ["score", "--dataset", data, "--rewards", "builtin:length"])
    one_error(*run_cli(capsys, *argv, "--output", out)[::2], str(out), "--overwrite")
    assert out.read_text() == "precious\n"
    assert run_cli(capsys, *argv, "--output", out, "--overwrite")[0] == 0
    assert out.read_text() != "precious\n"


# --------------------------------------------------------------------------- damaged checkpoints


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated-model": lambda c: truncate(c / "model" / "model.safetensors"),
    "truncated-optimizer": lambda c: truncate(c / "optimizer.pt"),
    "flipped-byte-model": lambda c: flip_byte(c / "model" / "model.safetensors"),
    "missing-scheduler": lambda c: (c / "scheduler.pt").unlink(),
    "missing-rng": lambda c: (c / "rng.pt").unlink(),
    "missing-state": lambda c: (c / "state.json").unlink(),
    "missing-tokenizer": lambda c: (c / "model" / "tokenizer.json").unlink(),
    "missing-manifest": lambda c: (c / "manifest.json").unlink(),
    "corrupt-manifest": lambda c: (c / "manifest.json").write_text("{"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_falls_back(capsys, finished, tmp_path, damage):
    """Resume skips the damaged step-3 with a one-line notice, continues from step 2 and ends
    with the uninterrupted run's weights, bit for bit."""
    run = copy_run(finished, tmp_path)
    shutil.rmtree(run / "final")
    DAMAGE[damage](run / "checkpoints" / "step-000003")
    code, out, err = run_cli(capsys, "train", "--resume", run)
    assert code == 0, err
    notices = [x for x in out.splitlines() if "notice" in x]
    assert len(notices) == 1 and "step-000003 is damaged" in notices[0]
    assert "resuming from step-000002" in notices[0]
    assert same_weights(run / "final", finished[0] / "final")
    assert metrics_steps(run) == [1, 2, 3]


def test_no_intact_checkpoint_is_one_line(capsys, finished, tmp_path):
    run = copy_run(finished, tmp_path)
    for ckpt in (run / "checkpoints").glob("step-*"):
        truncate(ckpt / "model" / "model.safetensors")
    before = snapshot(run)
    one_error(*run_cli(capsys, "train", "--resume", run)[::2], "no intact checkpoint",
              "step-000003", "model.safetensors")
    assert snapshot(run) == before


def test_no_checkpoint_at_all_is_one_line(capsys, finished, tmp_path):
    run = copy_run(finished, tmp_path)
    shutil.rmtree(run / "checkpoints")
    before = snapshot(run)
    one_error(*run_cli(capsys, "train", "--resume", run)[::2], "no checkpoint found")
    assert snapshot(run) == before


def test_resume_needs_config_yaml(capsys, finished, tmp_path):
    run = copy_run(finished, tmp_path)
    (run / "config.yaml").unlink()
    before = snapshot(run)
    one_error(*run_cli(capsys, "train", "--resume", run)[::2], "not a run directory")
    assert snapshot(run) == before


def test_pickled_optimizer_state_is_refused(capsys, finished, tmp_path):
    """An optimizer.pt holding an arbitrary object (its manifest rewritten to match): refused in
    one line naming the file, never unpickled."""
    import argparse

    run = copy_run(finished, tmp_path)
    ckpt = run / "checkpoints" / "step-000003"
    torch.save({"state": argparse.Namespace(x=1)}, ckpt / "optimizer.pt")
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"]["optimizer.pt"] = {"bytes": (ckpt / "optimizer.pt").stat().st_size,
                                         "sha256": sha256_file(ckpt / "optimizer.pt")}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(run)
    one_error(*run_cli(capsys, "train", "--resume", run)[::2], "optimizer.pt", "cannot read")
    assert_kept(before, run)


MISMATCHES = [("seed", "7"), ("lr", "0.5"), ("k", "4"), ("algo", "reinforce"),
              ("rewards", "builtin:count:yes"), ("max_new_tokens", "6"), ("beta", "0.5")]


@pytest.mark.parametrize("key, value", MISMATCHES, ids=[k for k, _ in MISMATCHES])
def test_resume_refuses_a_config_that_changes_the_run(capsys, finished, tmp_path, key, value):
    run = copy_run(finished, tmp_path)
    before = snapshot(run)
    one_error(*run_cli(capsys, "train", "--resume", run, f"--{key}", value)[::2],
              f"{key}=", "step-000003")
    assert snapshot(run) == before


def test_resume_may_change_steps_and_save_every(capsys, finished, tmp_path):
    run = copy_run(finished, tmp_path)
    code, _, err = run_cli(capsys, "train", "--resume", run, "--steps", "4", "--save_every", "2")
    assert code == 0, err
    assert metrics_steps(run) == [1, 2, 3, 4] and checkpoint_problem(
        run / "checkpoints" / "step-000004") is None


def test_stale_temporaries_are_removed_on_resume(capsys, finished, tmp_path):
    run = copy_run(finished, tmp_path)
    shutil.rmtree(run / "final")
    stale = [run / "checkpoints" / ".step-000004.x1y2", run / ".final.ab12",
             run / "checkpoints" / ".value-step-000004.q"]
    for folder in stale:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    code, out, err = run_cli(capsys, "train", "--resume", run)
    assert code == 0, err
    assert not any(p.exists() for p in stale) and "removed 3 temporary" in out
    assert same_weights(run / "final", finished[0] / "final")


def test_manifest_lists_every_file_and_the_config_hash(finished):
    manifest = json.loads((finished[0] / "checkpoints" / "step-000002" / "manifest.json")
                          .read_text())
    assert manifest["step"] == 2 and len(manifest["config_sha256"]) == 64
    assert {"optimizer.pt", "scheduler.pt", "rng.pt", "state.json",
            "model/model.safetensors"} <= set(manifest["files"])
    assert "steps" not in manifest["config"] and manifest["config"]["seed"] == 0
