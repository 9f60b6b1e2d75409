"""Experiment tracking through accelerate's tracker integration (``report_to``, TRL's name).

Each backend is accelerate's own tracker class (``accelerate.tracking``), started on the main
process with the resolved config as hyperparameters; metrics go through ``accelerator.log`` and
the completions table to each tracker in the form it supports. Every backend is an optional extra
(``pip install 'scorealign[wandb]'``) and works without a network:

  tensorboard  event files in RUN_DIR/tensorboard
  wandb        RUN_DIR/wandb; offline with WANDB_MODE=offline (``wandb sync`` uploads later)
  mlflow       a file store in RUN_DIR/mlruns unless MLFLOW_TRACKING_URI is set
  trackio      trackio's local store (TRACKIO_DIR, default ~/.cache/huggingface/trackio);
               ``trackio show`` opens it
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..errors import ConfigError, one_line

# report_to name -> (module that must import, pip extra)
TRACKERS = {"tensorboard": ("torch.utils.tensorboard", "tensorboard"),
            "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow"),
            "trackio": ("trackio", "trackio")}


def check_trackers(names) -> None:
    """Refuse a ``report_to`` entry that is not a known backend (a config check: imports nothing)."""
    for name in names:
        if name not in (*TRACKERS, "none"):
            raise ConfigError(f"report_to: unknown tracker {name!r}: choose from "
                              f"{', '.join(TRACKERS)} (or none)")


def require_tracker(name: str) -> None:
    """A one-line ConfigError naming the pip command when backend ``name`` is not installed."""
    module, extra = TRACKERS[name]
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"report_to: {name} is not installed: pip install "
                          f"'scorealign[{extra}]'") from None


def build_trackers(names, run_dir: Path) -> list:
    """accelerate tracker objects for ``names`` (each checked to be installed), not started yet:
    pass them as ``Accelerator(log_with=...)``."""
    from accelerate import tracking

    run_dir, project = Path(run_dir), Path(run_dir).resolve().name
    trackers = []
    for name in names:
        require_tracker(name)
        if name == "tensorboard":
            trackers.append(tracking.TensorBoardTracker("tensorboard", str(run_dir)))
        elif name == "wandb":
            trackers.append(tracking.WandBTracker(project, dir=str(run_dir), name=project))
        elif name == "mlflow":
            trackers.append(tracking.MLflowTracker(experiment_name=project, run_name=project))
        elif name == "trackio":
            trackers.append(tracking.TrackioTracker(project, name=project))
    return trackers


def hyperparameters(config: dict) -> dict:
    """The resolved config as flat bool/int/float/str values (lists joined), as trackers take."""
    return {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else
            (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in config.items()}


def start_trackers(accelerator, run_dir: Path, config: dict) -> None:
    """Start the accelerator's trackers (main process) with ``config`` as hyperparameters; a
    backend that cannot start is one line naming it and the likely fix."""
    if not accelerator.log_with or not accelerator.is_main_process:
        return
    if config.get("tensorboard"):
        print("scorealign: notice: tensorboard: true is deprecated: use report_to: [tensorboard] "
              "(same files, RUN_DIR/tensorboard)", flush=True)
    if any(t.name == "mlflow" for t in accelerator.log_with) and not os.environ.get(
            "MLFLOW_TRACKING_URI"):
        import mlflow

        # mlflow >= 3 refuses the file store unless opted in: it is the offline, serverless one.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri((Path(run_dir) / "mlruns").resolve().as_uri())
    for tracker in accelerator.log_with:
        try:
            tracker.start()
        except Exception as e:
            hint = " (offline: WANDB_MODE=offline)" if tracker.name == "wandb" else ""
            raise ConfigError(f"report_to: {tracker.name} could not start: "
                              f"{one_line(e, 160)}{hint}") from None
        tracker.store_init_configuration(hyperparameters(config))
    accelerator.trackers = list(accelerator.log_with)


def log_table(accelerator, name: str, rows: list[dict], step: int) -> None:
    """``rows`` (one dict per completion, same keys) as a table in every started tracker: a
    wandb / trackio Table, an mlflow table artifact, a markdown text in TensorBoard."""
    if not rows or not accelerator.is_main_process:
        return
    columns = list(rows[0])
    data = [[row[c] for c in columns] for row in rows]
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            tracker.log_table(name, columns=columns, data=data, step=step)
        elif tracker.name == "trackio":
            import trackio

            tracker.log({name: trackio.Table(columns=columns, data=data)}, step=step)
        elif tracker.name == "mlflow":
            import mlflow

            mlflow.log_table({c: [row[c] for row in rows] for c in columns},
                             artifact_file=f"{name}/step-{step:06d}.json")
        elif tracker.name == "tensorboard":
            tracker.writer.add_text(name, markdown_table(columns, data), global_step=step)
            tracker.writer.flush()


def markdown_table(columns: list[str], data: list[list]) -> str:
    cell = (lambda v: f"{v:.4g}" if isinstance(v, float) else
            str(v).replace("|", "\\|").replace("\n", " "))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in data])


def finish_trackers(accelerator) -> None:
    """Close every started tracker (not ``end_training``: that also ends the process group)."""
    for tracker in getattr(accelerator, "trackers", []):
        tracker.finish()
    accelerator.trackers = []


class Trackers:
    """The started trackers of one run, as ``core.metrics.ProgressLog`` uses them."""

    def __init__(self, accelerator):
        self.accelerator = accelerator

    @classmethod
    def start(cls, accelerator, run_dir: Path, config: dict) -> "Trackers | None":
        """Start ``accelerator``'s trackers; None when ``report_to`` names none."""
        if not accelerator.log_with:
            return None
        start_trackers(accelerator, run_dir, config)
        return cls(accelerator)

    def log(self, values: dict, step: int) -> None:
        self.accelerator.log(values, step=step)

    def table(self, name: str, rows: list[dict], step: int) -> None:
        log_table(self.accelerator, name, rows, step)

    def finish(self) -> None:
        finish_trackers(self.accelerator)
