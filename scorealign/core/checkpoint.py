"""Atomic checkpoints and resume.

A checkpoint directory holds the policy (``save_pretrained``, safetensors), ``optimizer.pt``,
``scheduler.pt``, ``rng.pt`` and ``state.json`` (step, estimator state). It is written into a
temporary sibling directory and renamed into place, so a crash never leaves a half checkpoint.
Tensors are read back with ``torch.load(weights_only=True)``: no arbitrary pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .io import atomic_dir, atomic_write


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
                    state: dict) -> Path:
    """Write ``run_dir/checkpoints/step-{step:06d}`` atomically and return it."""
    final = run_dir / "checkpoints" / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        model.save_pretrained(str(tmp / "model"), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp / "model"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=1))
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"))
    return ckpts[-1] if ckpts else None


def load_checkpoint(ckpt: Path, optimizer, scheduler) -> dict:
    """Restore optimizer, scheduler and RNG in place; return the saved state (step, ...)."""
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    torch.set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True)["torch"])
    return json.loads((ckpt / "state.json").read_text())


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
        from ..errors import ConfigError

        raise ConfigError(f"--resume: checkpoint has no {name} state ('{path}' missing)")
    return torch.load(path, weights_only=True)
