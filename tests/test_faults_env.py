"""Fault corpus, part 3: the environment. Disk full (a simulated ``OSError(ENOSPC)``), out of
memory, missing optional modules, broken pipes, interrupts, an unexpected exception (a bug: its
traceback plus one line), and kill -9 at chosen points during training and during checkpoint
writes, after which ``--resume`` reaches the uninterrupted run's weights bit for bit."""

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from faults import one_error, run_cli, same_weights, snapshot, write_config

from scorealign.core.checkpoint import checkpoint_problem

ROOT = Path(__file__).resolve().parents[1]


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "checkpoints/.step-000002.x/f")


class SafetensorError(Exception):
    """What safetensors raises on a full disk (not an OSError)."""


# ----------------------------------------------------------------------------------- disk full

def patch_nth_checkpoint(monkeypatch, n: int, error):
    """The ``n``-th call of the checkpoint's ``torch.save`` raises ``error``."""
    from scorealign.core import checkpoint

    calls, real = {"n": 0}, checkpoint.torch.save

    def save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)


DISK_CASES = [
    ("enospc-optimizer", OSError(errno.ENOSPC, "No space left on device", "optimizer.pt")),
    ("enospc-scheduler", OSError(errno.ENOSPC, "No space left on device")),
    ("safetensors-full", SafetensorError("Error while serializing: IoError(Os { code: 28, "
                                         "kind: StorageFull, message: \"No space left on "
                                         "device\" })")),
    ("quota", OSError(errno.EDQUOT, "Disk quota exceeded")),
]


@pytest.mark.parametrize("name, error", DISK_CASES, ids=[c[0] for c in DISK_CASES])
def test_disk_full_while_checkpointing(capsys, monkeypatch, tmp_path, tiny_model_dir, name,
                                       error):
    """The second checkpoint fails: one line, the first checkpoint stays intact, no temporary
    directory is left, and --resume continues from it."""
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir("llama"))
    run = tmp_path / "run"
    patch_nth_checkpoint(monkeypatch, 4 if name != "enospc-scheduler" else 5, error)
    one_error(*run_cli(capsys, "train", cfg, "--output_dir", run)[::2], "disk")
    ckpts = run / "checkpoints"
    assert checkpoint_problem(ckpts / "step-000001") is None
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000001"]
    monkeypatch.undo()
    assert run_cli(capsys, "train", "--resume", run)[0] == 0


def test_disk_full_writing_metrics(capsys, monkeypatch, tmp_path, tiny_model_dir):
    from scorealign.core.metrics import ProgressLog

    monkeypatch.setattr(ProgressLog, "step", enospc)
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir("llama"))
    one_error(*run_cli(capsys, "train", cfg, "--output_dir", tmp_path / "run")[::2],
              "disk full", "step-000002")


def test_disk_full_writing_a_sample_file_leaves_no_partial_file(capsys, monkeypatch, tmp_path,
                                                                tiny_model_dir):
    from scorealign.core import io

    def write(path, rows):
        io.atomic_write(path, lambda f: (f.write(b"{\"partial\""), enospc()))

    monkeypatch.setattr("scorealign.recipes.sample_score.write_jsonl", write)
    out = tmp_path / "s.jsonl"
    one_error(*run_cli(capsys, "sample", "--model", tiny_model_dir("llama"), "--k", "1",
                       "--max_new_tokens", "2", "--output", out)[::2], "disk full")
    assert list(tmp_path.iterdir()) == []                     # no s.jsonl, no temporary


# ----------------------------------------------------------------------------- out of memory

OOM_CASES = [
    ("cpu-allocator", "scorealign.engine.decoder.LeanDecoder.__init__",
     RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                  "memory: you tried to allocate 123456789 bytes")),
    ("cuda-oom", "scorealign.train.loop.optimise",
     torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")),
    ("memory-error", "scorealign.train.loop.optimise", MemoryError()),
]


@pytest.mark.parametrize("name, target, error", OOM_CASES, ids=[c[0] for c in OOM_CASES])
def test_out_of_memory_is_one_line_with_a_hint(capsys, monkeypatch, tmp_path, tiny_model_dir,
                                               name, target, error):
    def raise_(*args, **kwargs):
        raise error

    monkeypatch.setattr(target, raise_)
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir("llama"))
    run = tmp_path / "run"
    one_error(*run_cli(capsys, "train", cfg, "--output_dir", run)[::2], "out of memory",
              "micro_batch_size", "max_new_tokens")
    assert not run.exists()                                   # failed before step 1: cleaned


def test_huge_k_fails_before_allocating(capsys, monkeypatch, tmp_path, tiny_model_dir):
    """Issue 20: ``k: 1000000`` crashed in the allocator (or was killed); the sampler now checks
    its KV cache against free memory first (free memory patched small, k kept small)."""
    monkeypatch.setattr("scorealign.core.memory.available_bytes", lambda device: 1 << 20)
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir("llama"), k=64, micro_batch_size=128)
    one_error(*run_cli(capsys, "train", cfg, "--output_dir", tmp_path / "run")[::2],
              "out of memory", "sampling 128 sequences", " k")


# ---------------------------------------------------------------------------- optional extras

EXTRA_CASES = [
    ("bandit-matplotlib", "matplotlib", ["bandit", "--epochs", "1", "--seeds", "1", "--output_dir", "OUT"],
     "scorealign[plot]"),
    ("demo-matplotlib", "matplotlib", ["demo", "--toy", "--quick", "--output_dir", "OUT"],
     "scorealign[plot]"),
    ("train-tensorboard", "torch.utils.tensorboard",
     ["train", "CFG", "--tensorboard", "true", "--output_dir", "OUT"], "scorealign[tensorboard]"),
    ("train-peft", "peft", ["train", "CFG", "--lora_r", "4", "--output_dir", "OUT"],
     "scorealign[peft]"),
]


@pytest.mark.parametrize("name, module, argv, install", EXTRA_CASES,
                         ids=[c[0] for c in EXTRA_CASES])
def test_missing_extra_is_one_line_before_any_work(capsys, monkeypatch, tmp_path, tiny_model_dir,
                                                   name, module, argv, install):
    monkeypatch.setitem(sys.modules, module, None)             # import fails, as if absent
    cfg = write_config(tmp_path / "c.yaml", tiny_model_dir("llama"))
    out = tmp_path / "out"
    argv = [{"OUT": out, "CFG": cfg}.get(a, a) for a in argv]
    one_error(*run_cli(capsys, *argv)[::2], f"pip install '{install}'")
    assert not out.exists()


def test_missing_extra_raised_deep_inside_is_one_line(capsys, monkeypatch):
    def missing(args):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr("scorealign.cli.cmd_train", missing)
    one_error(*run_cli(capsys, "train", "x.yaml")[::2], "pip install 'scorealign[plot]'")


# -------------------------------------------------------------- broken pipes, interrupts, bugs

@pytest.mark.parametrize("argv", [["train", "--help"], ["--help"], ["sft", "--help"]],
                         ids=["train-help", "usage", "sft-help"])
def test_broken_pipe_is_one_line(argv):
    """``scorealign train --help | head -1`` with the reader already gone (deterministic:
    the pipe's read end is closed before the command writes)."""
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "scorealign.cli", *argv], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(write)
    one_error(proc.returncode, proc.stderr, "broken pipe")


def test_broken_pipe_in_process(capsys, monkeypatch):
    class Closed:
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Closed())
    code = __import__("scorealign.cli").cli.main(["train", "--help"])
    one_error(code, capsys.readouterr().err, "broken pipe")


def test_interrupt_is_one_line(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("scorealign.cli.cmd_train", interrupted)
    code, _, err = run_cli(capsys, "train", "x.yaml")
    assert code == 130
    one_error(code, err, "interrupted")


def test_unexpected_exception_shows_traceback_and_asks_for_a_report(capsys, monkeypatch):
    def bug(args):
        return 1 / 0

    monkeypatch.setattr("scorealign.cli.cmd_train", bug)
    code, _, err = run_cli(capsys, "train", "x.yaml")
    lines = err.strip().splitlines()
    assert code == 1 and "Traceback" in err and "ZeroDivisionError" in err
    assert lines[-1].startswith("scorealign: error: internal error") and "bug" in lines[-1]


# --------------------------------------------------------------------------------- kill -9

CHILD = """
import os, sys, time
from pathlib import Path
from scorealign.core import checkpoint, io
from scorealign.core.metrics import ProgressLog
point, target, marker = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])

def hang():
    marker.write_text("here")
    time.sleep(600)

if point == "after-step":
    real_step = ProgressLog.step
    def step(self, n, *a, **k):
        real_step(self, n, *a, **k)
        if n == target:
            hang()
    ProgressLog.step = step
if point in ("checkpoint-manifest", "checkpoint-optimizer"):
    real_manifest, real_save = checkpoint.write_manifest, checkpoint.torch.save
    def write_manifest(folder, final, step, config):
        if step == target:
            hang()
        real_manifest(folder, final, step, config)
    def save(obj, f, *a, **k):
        if str(f).endswith("optimizer.pt") and f"step-{target:06d}" in str(f):
            with open(f, "wb") as out:
                out.write(b"half an optimizer")
            hang()
        real_save(obj, f, *a, **k)
    checkpoint.write_manifest, checkpoint.torch.save = write_manifest, save
if point == "final":
    real_save_model = checkpoint.save_model
    def save_model(model, tokenizer, out):
        with io.atomic_dir(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"partial")
            hang()
    checkpoint.save_model = save_model
from scorealign.cli import main
sys.exit(main(sys.argv[4:]))
"""

KILL_CASES = [("after-step", 2), ("after-step", 3), ("checkpoint-manifest", 2),
              ("checkpoint-optimizer", 3), ("final", 0)]


@contextlib.contextmanager
def one_thread():
    """As the killed child (OMP_NUM_THREADS=1): the same reduction order, the same bits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def straight(tiny_model_dir, tmp_path_factory):
    """The uninterrupted 3-step run the killed runs are compared with."""
    import io

    from scorealign.cli import main

    folder = tmp_path_factory.mktemp("straight")
    cfg = write_config(folder / "c.yaml", tiny_model_dir("llama"), steps=3)
    with contextlib.redirect_stdout(io.StringIO()), one_thread():
        assert main(["train", str(cfg), "--output_dir", str(folder / "run")]) == 0
    return folder / "run", cfg


@pytest.mark.parametrize("point, target", KILL_CASES, ids=[f"{p}-{t}" for p, t in KILL_CASES])
def test_kill_9_then_resume_is_bit_identical(capsys, straight, tmp_path, point, target):
    run, marker = tmp_path / "run", tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, point, str(target), str(marker),
                             "train", str(straight[1]), "--output_dir", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)                          # the point reached: kill -9
    proc.wait()
    before = snapshot(run)
    with one_thread():
        code, out, err = run_cli(capsys, "train", "--resume", run)
    assert code == 0, err
    assert same_weights(run / "final", straight[0] / "final")
    assert [x for x in before if x.startswith("checkpoints/step-000001")]  # older ones kept
    assert not [p for p in run.rglob(".*") if p.name.startswith((".step-", ".final."))]
