"""The resumable cell loop: each cell's result is ``cells/<id>.json`` (written atomically);
a rerun skips finished cells. Workers (processes) claim cells with lock files
(``locks/<id>.lock``, created exclusively, holding the pid; a dead holder's lock is taken over),
so two workers never run the same cell, and a cell whose inputs are not ready (its seed's prep,
or the shared lr before the selection cells are done) waits."""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

from .budget import cell_seconds
from .cells import run_cell, run_prep, write_json
from .plan import PRESETS, Cell


def result_path(root: Path, cell: Cell) -> Path:
    return root / "cells" / f"{cell.id}.json"


def load(root: Path, cell: Cell) -> dict | None:
    path = result_path(root, cell)
    return json.loads(path.read_text()) if path.exists() else None


def claim(root: Path, cell: Cell) -> bool:
    """Take the cell's lock; a lock whose process is gone is removed first."""
    lock = root / "locks" / f"{cell.id}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    if lock.exists():
        try:
            os.kill(int(lock.read_text() or 0), 0)
            return False                                     # held by a live worker
        except (ProcessLookupError, ValueError):
            lock.unlink(missing_ok=True)
        except PermissionError:
            return False
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def release(root: Path, cell: Cell) -> None:
    (root / "locks" / f"{cell.id}.lock").unlink(missing_ok=True)


def selection(root: Path, preset_name: str, cells: list[Cell]) -> dict | None:
    """{'lr': chosen, 'table': {lr: {method: gold}}} once every selection cell is done: the lr
    with the highest mean final gold score over the selection methods (on the selection seed);
    None while some are missing. Without selection cells: the preset's single lr."""
    p = PRESETS[preset_name]
    grid = [c for c in cells if c.kind == "run" and c.lr is not None]
    if not grid:
        return {"lr": p["lrs"][0], "table": {}}
    results = [load(root, c) for c in grid]
    if any(r is None for r in results):
        return None
    table: dict[str, dict[str, float]] = {}
    for c, r in zip(grid, results):
        table.setdefault(f"{c.lr:g}", {})[c.run.method] = r["final"]["gold"]
    mean = {lr: sum(v.values()) / len(v) for lr, v in table.items()}
    return {"lr": float(max(mean, key=lambda lr: (mean[lr], -float(lr)))), "table": table}


def ready(root: Path, preset_name: str, cells: list[Cell], cell: Cell) -> bool:
    if cell.kind == "prep":
        return True
    if load(root, Cell("prep", cell.seed)) is None:
        return False
    return cell.lr is not None or selection(root, preset_name, cells) is not None


def execute(root: Path, preset_name: str, cells: list[Cell], cell: Cell) -> dict:
    work = root / "work" / f"seed{cell.seed}"
    if cell.kind == "prep":
        return run_prep(preset_name, cell.seed, work)
    lr = cell.lr if cell.lr is not None else selection(root, preset_name, cells)["lr"]
    return run_cell(preset_name, cell, lr, work, root / "logs" / cell.id,
                    load(root, Cell("prep", cell.seed)))


def progress(preset_name: str, cells: list[Cell], root: Path, pace: list[float],
             workers: int) -> str:
    """'12/58 cells done; about 3.1 h left' (estimates scaled by this worker's measured pace)."""
    left = [c for c in cells if not result_path(root, c).exists()]
    est = sum(cell_seconds(preset_name, c) for c in left)
    scale = (pace[0] / pace[1]) if pace[1] > 0 else 1.0
    return (f"{len(cells) - len(left)}/{len(cells)} cells done; about "
            f"{est * scale / workers / 3600:.2f} h left (ETA from the budget x measured pace "
            f"{scale:.2f})")


def work_loop(root: Path, preset_name: str, cells: list[Cell], workers: int = 1) -> int:
    """Run every cell that is not finished; -> number of cells this worker ran."""
    pace, ran = [0.0, 0.0], 0          # [measured s, estimated s] of this worker's cells
    while True:
        pending = [c for c in cells if not result_path(root, c).exists()]
        if not pending:
            return ran
        runnable = [c for c in pending if ready(root, preset_name, cells, c)]
        cell = next((c for c in runnable if claim(root, c)), None)
        if cell is None:
            if not any((root / "locks" / f"{c.id}.lock").exists() for c in pending):
                raise RuntimeError(f"study: nothing can run; blocked: {[c.id for c in pending]}")
            time.sleep(5)               # another worker holds what we wait for
            continue
        est = cell_seconds(preset_name, cell)
        print(f"\n[study] {cell.id} (estimated {est / 60:.1f} min); "
              f"{progress(preset_name, cells, root, pace, workers)}", flush=True)
        t = time.perf_counter()
        try:
            result = execute(root, preset_name, cells, cell)
        except BaseException:
            traceback.print_exc()
            release(root, cell)
            raise
        result["cell_s"] = time.perf_counter() - t
        write_json(result_path(root, cell), result)
        release(root, cell)
        pace[0] += result["cell_s"]
        pace[1] += est
        ran += 1
        print(f"[study] {cell.id} done in {result['cell_s'] / 60:.1f} min", flush=True)
