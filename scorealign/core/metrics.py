"""Metrics for people and machines: ``metrics.jsonl`` (one line per step), ``completions.jsonl``
(sample completions every ``log_completions_every`` steps), the trackers of ``report_to``, and
progress: a rich bar on a terminal, else one plain flushed line every ``log_every`` steps.

Metric names are shared by every algorithm (STYLE.md): reward/mean, reward/std, kl, entropy,
loss/policy, clip_frac, completion_len, throughput/completions_per_s, ...; an algorithm may add
its own after them (PPO: value_loss, explained_variance; DPO: TRL's rewards/chosen, ...).
``docs/metrics.md`` maps TRL's names onto them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def require_tensorboard() -> None:
    """Kept for callers of the old ``tensorboard: true``: a one-line ConfigError with the
    install line when tensorboard is missing."""
    from ..errors import ConfigError

    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("tensorboard: true needs tensorboard: pip install "
                          "'scorealign[tensorboard]'") from None


def duration(seconds: float) -> str:
    """7384.2 -> '2:03:04'."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(step: int, total: int, row: dict, seconds_per_step: float) -> str:
    """One plain line: step, reward mean ± std (or the loss when no samples are drawn), KL, lr,
    seconds per step and the time left."""
    parts = [f"step {step}/{total}"]
    if "reward/mean" in row:
        parts.append(f"reward {row['reward/mean']:.4g} ± {row.get('reward/std', 0.0):.3g}")
    elif "loss/policy" in row:
        parts.append(f"loss {row['loss/policy']:.4g}")
    if "kl" in row:
        parts.append(f"kl {row['kl'] + 0.0:.4g}")          # + 0.0: no '-0'
    parts += [f"lr {row['lr']:.3g}", f"{seconds_per_step:.3g} s/step",
              f"eta {duration(seconds_per_step * (total - step))}"]
    return "  ".join(parts)


class ProgressLog:
    """Writes one JSON line per step on the main process (and to ``tracker``: an object with
    ``log(values, step)`` and ``table(name, rows, step)``), and shows progress."""

    def __init__(self, run_dir: Path, cfg, start_step: int, is_main: bool, tracker=None,
                 terminal: bool | None = None):
        self.is_main, self.tracker, self.progress = is_main, tracker, None
        if not is_main:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path, self.total, self.start = run_dir / "metrics.jsonl", cfg.steps, start_step
        self.log_every = getattr(cfg, "log_every", 1)
        self.t0 = time.perf_counter()
        self._truncate_after(start_step)
        terminal = sys.stdout.isatty() if terminal is None else terminal
        if not terminal:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 TextColumn("step {task.completed}/{task.total}"),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                 transient=False)
        self.task = self.progress.add_task(cfg.algo, total=cfg.steps, completed=start_step, info="")
        self.progress.start()

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the files have one line per step
        (per completion); on a fresh start (step 0), drop every line a previous run left."""
        for name in ("metrics.jsonl", "eval.jsonl", "completions.jsonl"):
            path = self.path.with_name(name)
            if path.exists() and step == 0:
                path.unlink()
            elif path.exists():
                keep = [ln for ln in path.read_text().splitlines()
                        if (row := parse_line(ln)) is not None and row["step"] <= step]
                path.write_text("".join(ln + "\n" for ln in keep))

    def _print(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text)
        else:
            print(text, flush=True)

    def eval(self, step: int, stats: dict) -> None:
        """One line of held-out metrics in ``eval.jsonl`` (and the trackers)."""
        if not self.is_main:
            return
        row = {"step": step, **{k: round(float(v), 6) for k, v in stats.items()}}
        append_lines(self.path.with_name("eval.jsonl"), [row])
        if self.tracker is not None:
            self.tracker.log({k: v for k, v in row.items() if k != "step"}, step)
        self._print(f"step {step}: " + "  ".join(
            f"{k} {v:.4g}" for k, v in row.items() if k != "step"))

    def step(self, step: int, stats: dict, elapsed: float, lr: float, n_completions: int) -> None:
        """``stats``: {name: value}, the shared names first."""
        if not self.is_main:
            return
        row = {"step": step, **{k: round(float(v), 6) for k, v in stats.items()},
               "lr": lr, "throughput/completions_per_s": round(n_completions / elapsed, 3),
               "time/step_s": round(elapsed, 4)}
        append_lines(self.path, [row])
        if self.tracker is not None:
            self.tracker.log({k: v for k, v in row.items() if k != "step"}, step)
        if self.progress is None:
            if step % self.log_every == 0 or step == self.total or step == self.start + 1:
                per_step = (time.perf_counter() - self.t0) / (step - self.start)
                print(progress_line(step, self.total, row, per_step), flush=True)
            return
        shown = progress_line(step, self.total, row, row["time/step_s"]).split("  ")[1:-3]
        info = "  ".join(shown + [f"{row['throughput/completions_per_s']:.0f} seq/s"])
        self.progress.update(self.task, completed=step, info=info)

    def completions(self, step: int, rows: list[dict]) -> None:
        """Sample completions of ``step`` (one dict each: prompt, completion, rewards, advantage)
        appended to ``completions.jsonl`` and logged as a table to the trackers."""
        if not self.is_main or not rows:
            return
        append_lines(self.path.with_name("completions.jsonl"), [{"step": step, **r} for r in rows])
        if self.tracker is not None:
            self.tracker.table("completions", rows, step)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tracker is not None:
            self.tracker.finish()


def append_lines(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` as JSON lines with ONE write of whole lines, flushed: a crash leaves whole
    lines (a torn last line at worst, which resume's truncation drops with the step after it)."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()


def parse_line(line: str) -> dict | None:
    """A JSON line with a ``step``, or None (a blank line, or one torn by a crash)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and "step" in row else None
