"""Run directories and output files are never silently reused.

A new run into a directory that already holds something stops with one line offering
``--resume`` (continue it) or ``--overwrite`` (move the old run aside to
``RUN_DIR.old-<time>``; nothing is deleted). The checks only read: callers validate their inputs
first and ``claim`` the directory just before the first write. ``fresh_run`` removes what a new
run wrote when it fails before its first logged step (a rejected reward leaves no lonely
``config.yaml`` behind).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from ..errors import ConfigError


def holds_files(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_new_run(run_dir: Path, overwrite: bool, what: str = "output_dir") -> None:
    """Refuse a non-empty ``run_dir`` unless ``overwrite``; reads only."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{what} '{run_dir}' is a file, not a directory")
    if holds_files(run_dir) and not overwrite:
        names = sorted(p.name for p in run_dir.iterdir())
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise ConfigError(f"{what} '{run_dir}' already holds a run ({shown}): pass --overwrite "
                          f"to move it aside to {run_dir.name}.old-<time>, choose another "
                          f"{what}, or continue a train/sft run with `scorealign train --resume "
                          f"{run_dir}`")


def check_output_file(path: str | Path, overwrite: bool, what: str = "output") -> None:
    """Refuse to replace an existing output file unless ``overwrite``; reads only."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} '{path}' is a directory, not a file")
    if path.exists() and not overwrite:
        raise ConfigError(f"{what} '{path}' already exists: pass --overwrite to replace it, or "
                          f"choose another {what}")


def aside_name(run_dir: Path) -> Path:
    """``RUN_DIR.old-YYYYmmdd-HHMMSS`` (with a counter when taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = run_dir.with_name(f"{run_dir.name}.old-{stamp}"), 1
    while candidate.exists():
        n += 1
        candidate = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
    return candidate


def claim(run_dir: Path, overwrite: bool) -> Path | None:
    """Make ``run_dir`` an empty directory for a new run; with ``overwrite``, a non-empty one is
    first renamed to ``RUN_DIR.old-<time>`` (returned; None when nothing was moved)."""
    run_dir = Path(run_dir)
    check_new_run(run_dir, overwrite)
    moved = None
    if holds_files(run_dir):
        moved = aside_name(run_dir)
        os.replace(run_dir, moved)
        print(f"--overwrite: moved the previous contents of {run_dir} to {moved}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return moved


class FreshRun:
    """A new run's directory: ``claim`` it before the first write, set ``started`` once the
    first step is logged; see ``fresh_run``."""

    def __init__(self, run_dir: Path, active: bool):
        self.run_dir, self.active = run_dir, active
        self.claimed = self.started = False

    def claim(self, overwrite: bool) -> None:
        if self.active and not self.claimed:
            claim(self.run_dir, overwrite)
        self.claimed = True


@contextlib.contextmanager
def fresh_run(run_dir: Path, active: bool = True):
    """Around a new run, from before ``claim`` to its first logged step: if the block raises
    before ``.started`` is set, what the run wrote is removed (an empty directory that was there
    before stays, empty)."""
    run_dir = Path(run_dir)
    was_empty_dir = run_dir.is_dir() and not holds_files(run_dir)
    state = FreshRun(run_dir, active)
    try:
        yield state
    except BaseException:
        if active and state.claimed and not state.started and run_dir.is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)
            if was_empty_dir:
                run_dir.mkdir(parents=True, exist_ok=True)
        raise


STALE_PREFIXES = (".step-", ".final.", ".value-step-", ".replay-step-")


def remove_stale_temporaries(run_dir: Path) -> list[str]:
    """Remove hidden temporary directories and files of interrupted atomic writes (``.step-*``,
    ``.final.*``, ``.*.tmp``) from a run directory and its ``checkpoints/``; return their names."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if not p.name.startswith("."):
                continue
            stale = p.name.startswith(STALE_PREFIXES) or p.name.endswith(".tmp")
            if stale:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p.name)
    return removed
