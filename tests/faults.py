"""Helpers of the fault corpus (tests/test_faults_*.py): run the CLI in-process, check that a
failure is exactly one error line without a traceback, and that a run directory's pre-existing
files were neither changed nor removed."""

import hashlib
import json
from pathlib import Path

from scorealign.cli import main

# A small run: 2 steps of 2 prompts x k=2 on the tiny model, a checkpoint every step.
BASE = dict(dataset="toy", steps=2, prompts_per_step=2, k=2, micro_batch_size=4,
            max_new_tokens=4, lr=1e-3, rewards=["builtin:length"], save_every=1,
            reward_sandbox=False)


def write_config(path: Path, model: str, /, **overrides) -> Path:
    values = {"model": model, **BASE, **overrides}
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str, *parts: str) -> str:
    """The failure's single ``scorealign: error:`` line, which must name every one of ``parts``."""
    assert code != 0, err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("scorealign: error:"), err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (hidden temporaries excluded)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def assert_kept(before: dict[str, str], folder: Path) -> None:
    """Every file of ``before`` is still in ``folder``, unchanged."""
    after = snapshot(folder)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, changed


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    import torch

    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
