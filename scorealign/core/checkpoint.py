"""Atomic checkpoints and resume.

A checkpoint directory holds the policy (``save_pretrained``, safetensors), ``optimizer.pt``,
``scheduler.pt``, ``rng.pt``, ``state.json`` (step, estimator state) and, written last,
``manifest.json``: the size and sha256 of every file of the checkpoint (and of its sibling state
directories, ``value-step-N``, ``replay-step-N``), the step, and the config that changes the run
with its hash. It is written into a temporary sibling directory and renamed into place, so a crash
never leaves a half checkpoint; resume verifies the manifest (``intact_checkpoint``) and refuses a
config that differs in a key that changes the run (``check_resume_config``).
Tensors are read back with ``torch.load(weights_only=True)``: no arbitrary pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import torch

from ..errors import ConfigError, one_line
from .io import atomic_dir, atomic_write, sha256_file

MANIFEST = "manifest.json"
# Keys that may differ between a run and its resumption: they do not change the updates.
RESUMABLE_KEYS = frozenset({"steps", "save_every", "eval_every", "output_dir", "overwrite",
                            "tensorboard", "eval_prompts", "eval_dataset", "eval_rewards",
                            "save_total_limit", "report_to", "log_every",
                            "log_completions_every"})


def save_model(model, tokenizer, out: Path) -> None:
    """Model (safetensors) + tokenizer, loadable with ``from_pretrained(out)``; atomic.

    A LoRA model is saved twice: the adapter alone in ``out/adapter`` (for ``PeftModel``) and the
    merged weights (base + adapter) in ``out`` itself, so ``from_pretrained(out)`` needs no peft.
    """
    from .models import is_lora, merged_state_dict

    with atomic_dir(out) as tmp:
        if is_lora(model):
            model.save_pretrained(str(tmp / "adapter"), safe_serialization=True)
            tokenizer.save_pretrained(str(tmp / "adapter"))
            model.get_base_model().save_pretrained(str(tmp), state_dict=merged_state_dict(model),
                                                   safe_serialization=True)
        else:
            model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))


def save_checkpoint(run_dir: Path, step: int, model, tokenizer, optimizer, scheduler,
                    state: dict, config: dict | None = None) -> Path:
    """Write ``run_dir/checkpoints/step-{step:06d}`` atomically, its manifest last; return it.
    ``config``: the run's config (``config.to_dict``), recorded without ``RESUMABLE_KEYS``."""
    final = run_dir / "checkpoints" / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        model.save_pretrained(str(tmp / "model"), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp / "model"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=1))
        write_manifest(tmp, final, step, config or {})
    return final


def run_config(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in RESUMABLE_KEYS}


def config_hash(config: dict) -> str:
    text = json.dumps(run_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_files(folder: Path, final: Path, step: int) -> dict[str, Path]:
    """{name relative to the checkpoint: path} of every file in ``folder`` (the checkpoint being
    written) and in the sibling state directories ``*-step-N`` of ``final``."""
    files = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    for state in sorted(final.parent.glob(f"*-step-{step:06d}")):
        files.update({f"../{p.relative_to(final.parent).as_posix()}": p
                      for p in state.rglob("*") if p.is_file()})
    files.pop(MANIFEST, None)
    return files


def write_manifest(folder: Path, final: Path, step: int, config: dict) -> None:
    files = {name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for name, p in sorted(checkpoint_files(folder, final, step).items())}
    manifest = {"step": step, "config_sha256": config_hash(config), "config": run_config(config),
                "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why checkpoint ``ckpt`` cannot be used (missing or damaged file), or None when every file
    matches its manifest."""
    try:
        manifest = json.loads((ckpt / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return "no manifest.json (written last: the checkpoint is incomplete)"
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest.json ({one_line(e, 80)})"
    for name, meta in files.items():
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != meta["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {meta['bytes']}"
        if sha256_file(path) != meta["sha256"]:
            return f"{name} does not match its sha256 in the manifest"
    return None


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"))
    return ckpts[-1] if ckpts else None


def intact_checkpoint(run_dir: Path, notice=None) -> Path | None:
    """The newest checkpoint whose files match its manifest; every newer damaged one is named in
    a one-line notice (stdout) saying which checkpoint the run falls back to."""
    notice = notice or (lambda text: print(text, file=sys.stdout, flush=True))
    damaged = []
    for ckpt in sorted((run_dir / "checkpoints").glob("step-*"), reverse=True):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            for name, why in damaged:
                notice(f"scorealign: notice: checkpoint {name} is damaged ({why}); resuming from "
                       f"{ckpt.name}")
            return ckpt
        damaged.append((ckpt.name, problem))
    if damaged:
        name, why = damaged[0]
        raise ConfigError(f"--resume: no intact checkpoint in '{run_dir}/checkpoints' "
                          f"({name}: {why})")
    return None


def check_resume_config(ckpt: Path, config: dict) -> None:
    """Refuse to resume ``ckpt`` under a config that differs in a key that changes the run."""
    saved = json.loads((ckpt / MANIFEST).read_text()).get("config", {})
    now = run_config(config)
    for key in sorted(set(saved) | set(now)):
        if saved.get(key) != now.get(key):
            raise ConfigError(f"--resume: {key}={now.get(key)!r} differs from the checkpoint's "
                              f"{key}={saved.get(key)!r} ({ckpt}); only "
                              f"{', '.join(sorted(RESUMABLE_KEYS - {'overwrite'}))} may change "
                              "on resume (start a new run to change it)")


def safe_load(path: Path):
    """``torch.load(weights_only=True)``; an unreadable or pickled (unsafe) file is one line."""
    try:
        return torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"--resume: '{path}' is missing") from None
    except Exception as e:
        raise ConfigError(f"--resume: cannot read '{path}' (tensors only, no arbitrary pickle): "
                          f"{one_line(e, 160)}") from None


def load_checkpoint(ckpt: Path, optimizer, scheduler) -> dict:
    """Restore optimizer, scheduler and RNG in place; return the saved state (step, ...)."""
    optimizer.load_state_dict(safe_load(ckpt / "optimizer.pt"))
    scheduler.load_state_dict(safe_load(ckpt / "scheduler.pt"))
    torch.set_rng_state(safe_load(ckpt / "rng.pt")["torch"])
    return json.loads((ckpt / "state.json").read_text())


def prune(run_dir: Path, limit: int | None) -> list[str]:
    """Keep the newest ``limit`` checkpoints (none: all): older ``step-N`` directories and their
    ``*-step-N`` state go, oldest first, each renamed to a temporary (``.step-*``, cleaned on
    resume) before it is removed. Returns the names removed."""
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("step-*"))
    removed = []
    for ckpt in ckpts[:-limit] if limit else []:
        step = ckpt.name.split("-")[-1]
        for part in [ckpt, *sorted(ckpt.parent.glob(f"*-step-{step}"))]:
            doomed = part.with_name(f".{part.name}.pruned")
            os.replace(part, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        removed.append(ckpt.name)
    return removed


def state_dir(run_dir: Path, name: str, step: int) -> Path:
    """Where extra state ``name`` of checkpoint ``step-N`` lives: ``checkpoints/{name}-step-N``, a
    sibling of ``step-N`` (not matched by ``latest_checkpoint``), written BEFORE it, so that every
    policy checkpoint has it: a critic's weights (``value``), a batch source's state (``replay``)."""
    return Path(run_dir) / "checkpoints" / f"{name}-step-{step:06d}"


def process_state_path(run_dir: Path, name: str, step: int, rank: int) -> Path:
    """One process's part of state ``name``: ``checkpoints/{name}-step-N/rank-R.pt``."""
    return state_dir(run_dir, name, step) / f"rank-{rank}.pt"


def save_process_state(run_dir: Path, name: str, step: int, rank: int, state: dict) -> None:
    """Tensors, strings and numbers only (read back with ``weights_only``); atomic rename."""
    atomic_write(process_state_path(run_dir, name, step, rank), lambda f: torch.save(state, f))


def load_process_state(run_dir: Path, name: str, step: int, rank: int) -> dict:
    path = process_state_path(run_dir, name, step, rank)
    if not path.is_file():
        raise ConfigError(f"--resume: checkpoint has no {name} state ('{path}' missing)")
    return safe_load(path)
