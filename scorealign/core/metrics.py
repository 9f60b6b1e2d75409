"""Metrics: ``metrics.jsonl`` (one line per step), optional TensorBoard, and a progress bar.

Metric names are shared by every algorithm (STYLE.md): reward/mean, reward/std, kl, entropy,
loss/policy, clip_frac, completion_len, throughput/completions_per_s, ...; an algorithm may add
its own after them (PPO: value_loss, explained_variance).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from ..errors import ConfigError


def require_tensorboard() -> None:
    """A one-line ConfigError with the install line when tensorboard is missing."""
    try:
        importlib.import_module("torch.utils.tensorboard")
    except ImportError:
        raise ConfigError("tensorboard: true needs tensorboard: pip install "
                          "'scorealign[tensorboard]'") from None


class ProgressLog:
    """Writes one JSON line per step on the main process and drives a rich progress bar."""

    def __init__(self, run_dir: Path, cfg, start_step: int, is_main: bool):
        self.is_main, self.writer, self.progress = is_main, None, None
        if not is_main:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        self._truncate_after(start_step)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 TextColumn("step {task.completed}/{task.total}"),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                 transient=False)
        self.task = self.progress.add_task(cfg.algo, total=cfg.steps, completed=start_step, info="")
        self.progress.start()

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the file has one line per step;
        on a fresh start (step 0), drop every line a previous run left in the directory."""
        for path in (self.path, self.path.with_name("eval.jsonl")):
            if path.exists() and step == 0:
                path.unlink()
            elif path.exists():
                keep = [ln for ln in path.read_text().splitlines()
                        if ln and json.loads(ln)["step"] <= step]
                path.write_text("".join(ln + "\n" for ln in keep))

    def eval(self, step: int, stats: dict) -> None:
        """One line of held-out metrics in ``eval.jsonl`` (and TensorBoard)."""
        if not self.is_main:
            return
        row = {"step": step, **{k: round(float(v), 6) for k, v in stats.items()}}
        with open(self.path.with_name("eval.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in stats.items():
                self.writer.add_scalar(key, value, step)
        self.progress.console.print(f"step {step}: " + "  ".join(
            f"{k} {v:.4g}" for k, v in row.items() if k != "step"))

    def step(self, step: int, stats: dict, elapsed: float, lr: float, n_completions: int) -> None:
        """``stats``: {name: value}, the shared names first."""
        if not self.is_main:
            return
        row = {"step": step, **{k: round(float(v), 6) for k, v in stats.items()},
               "lr": lr, "throughput/completions_per_s": round(n_completions / elapsed, 3),
               "time/step_s": round(elapsed, 4)}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, step)
        shown = [f"{name.split('/')[0]} {row[name]:.3f}" for name in
                 ("reward/mean", "kl", "loss/policy") if name in row][:2]
        info = "  ".join(shown + [f"{row['throughput/completions_per_s']:.0f} seq/s"])
        self.progress.update(self.task, completed=step, info=info)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.writer is not None:
            self.writer.close()
