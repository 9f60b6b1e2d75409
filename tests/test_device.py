"""Device placement checked without a GPU.

On a CUDA machine a tensor created on the host (``torch.zeros(n)`` without ``device=``) and used
with the model's tensors fails ("Expected all tensors to be on the same device"); on CPU the same
code runs, so the CPU suite cannot see it. ``DeviceTracker`` simulates the accelerator: a tensor
is "on the device" if it is a parameter or buffer of a module moved with ``Module.to(device)``,
was created with an explicit ``device=torch.device(...)``, was moved with ``.to(device)``, or was
computed from such tensors; ``.cpu()`` and the string ``"cpu"`` mean the host. Any operation that
mixes device tensors with host tensors of one dimension or more (CUDA accepts host 0-dim
scalars, and host index tensors for indexing a device tensor) is recorded as a violation.
Training runs of every data kind, LoRA and a non-Llama model then run under it for one step.
"""

import json
import sys
import traceback
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from scorealign.rewards import CallableReward
from scorealign.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
TAG = "_on_simulated_device"


def on_device(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, TAG, False)


def tag(out, value: bool):
    for t in tree_leaves(out):
        if isinstance(t, torch.Tensor):
            setattr(t, TAG, value)
    return out


def target_device(args, kwargs):
    """For ``Tensor.to``: True (the device), False (the host), a tensor's tag, or None."""
    for a in [*args[1:], kwargs.get("device")]:
        if isinstance(a, torch.Tensor):
            return on_device(a)
        if isinstance(a, torch.device):
            return True
        if isinstance(a, str):
            return a != "cpu"
    return None


class DeviceTracker(TorchFunctionMode):
    """Records operations that would mix devices on an accelerator (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.violations: list[str] = []
        self.paused = 0                             # inside Module.to: the move itself

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.paused:
            return func(*args, **kwargs)
        self.check(func, args, kwargs)
        out = func(*args, **kwargs)
        if func is torch.Tensor.cpu or func is torch.Tensor.to:
            moved = False if func is torch.Tensor.cpu else target_device(args, kwargs)
            if moved is None:
                return tag(out, on_device(args[0]))
            # a no-op move returns its input: a new view carries the new tag, not the input
            return tag(out.view_as(out) if out is args[0] else out, moved)
        device = kwargs.get("device")
        if device is not None:                      # a factory: torch.zeros(..., device=...)
            return tag(out, not (isinstance(device, str) and device == "cpu"))
        if any(on_device(t) for t in tree_leaves((args, kwargs))):
            tag(out, True)
        return out

    def check(self, func, args, kwargs) -> None:
        if func is torch.Tensor.__getitem__:
            bad = not on_device(args[0]) and any(on_device(t) for t in tree_leaves(args[1]))
        elif func is torch.Tensor.__setitem__:
            values = [t for t in tree_leaves(args[2]) if isinstance(t, torch.Tensor) and t.dim()]
            index_bad = not on_device(args[0]) and any(on_device(t) for t in tree_leaves(args[1]))
            bad = index_bad or any(on_device(v) != on_device(args[0]) for v in values)
        elif func in (torch.Tensor.cpu, torch.Tensor.to):
            bad = False
        else:
            tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            bad = (any(on_device(t) for t in tensors)
                   and any(not on_device(t) and t.dim() > 0 for t in tensors))
        if bad:
            where = [f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_stack()
                     if "scorealign" in f.filename and "test_device" not in f.filename]
            self.violations.append(f"{getattr(func, '__name__', func)} at {where[-3:]}")


@pytest.fixture
def tracker(monkeypatch):
    """A ``DeviceTracker`` active for the test; modules moved with ``.to(device)`` are tagged."""
    real_to, mode = torch.nn.Module.to, DeviceTracker()

    def module_to(self, *args, **kwargs):
        mode.paused += 1
        try:
            out = real_to(self, *args, **kwargs)
        finally:
            mode.paused -= 1
        if any(isinstance(a, torch.device) for a in [*args, kwargs.get("device")]):
            for t in [*out.parameters(), *out.buffers()]:
                setattr(t, TAG, True)
        return out

    monkeypatch.setattr(torch.nn.Module, "to", module_to)
    with mode:
        yield mode


def test_tracker_flags_host_tensors_mixed_with_device_ones(tracker):
    dev = torch.device("cpu")                       # the simulated accelerator's device
    x = torch.ones(3, device=dev)
    _ = x + torch.tensor(2.0)                       # host scalar: allowed on CUDA
    _ = x[torch.arange(2)]                          # host index into a device tensor: allowed
    _ = x + torch.ones(3).to(dev)                   # moved first: fine
    assert not tracker.violations, sorted(set(tracker.violations))
    _ = x + torch.ones(3)                           # host tensor: a CUDA error
    _ = torch.cat([x, torch.zeros(2)])
    _ = torch.ones(3)[torch.arange(2, device=dev)]  # device index into a host tensor
    assert len(tracker.violations) == 3
    assert not on_device(x.cpu()) and on_device(x)  # .cpu() is the host, x itself unchanged


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def datasets(tmp_path: Path) -> dict[str, str]:
    words = ["yes", "no", "cat dog", "one two three", "sun", "red blue"]
    prompts = ["hello", "cat", "one two", "sun moon"]
    return {"scored": write_jsonl(tmp_path / "scored.jsonl", [
                {"prompt": p, "completion": words[(i + j) % 6], "score": float(j)}
                for i, p in enumerate(prompts) for j in range(2)]),
            "pairs": write_jsonl(tmp_path / "pairs.jsonl", [
                {"prompt": p, "chosen": words[i], "rejected": words[i + 1]}
                for i, p in enumerate(prompts)]),
            "sft": write_jsonl(tmp_path / "sft.jsonl", [
                {"prompt": p, "completion": words[i]} for i, p in enumerate(prompts)])}


RUNS = {"rloo": dict(algo="rloo"),
        "ppo": dict(algo="ppo", num_epochs=2),
        "copg-offline": dict(algo="copg", source="offline", dataset="scored"),
        "copg-mixed": dict(algo="copg", source="mixed", replay_ratio=0.5, steps=2),
        "dpo": dict(algo="dpo", k=2, dataset="pairs"),
        "sft": dict(algo="sft", k=1, dataset="sft")}


@pytest.mark.parametrize("name", list(RUNS))
def test_training_steps_keep_tensors_on_the_model_device(name, tracker, tiny_model_dir, tmp_path):
    kw = dict(RUNS[name])
    if kw.get("dataset") in ("scored", "pairs", "sft"):
        kw["dataset"] = datasets(tmp_path)[kw["dataset"]]
    cfg = TrainConfig(**{**dict(model=tiny_model_dir("llama"), dataset="toy", steps=1,
                                prompts_per_step=4, k=2, micro_batch_size=4, max_new_tokens=6,
                                lr=1e-3, output_dir=str(tmp_path / "run"), eval_every=1,
                                eval_prompts=4), **kw})
    train(cfg, reward=CallableReward(lambda p, c, **_: [float(len(x)) for x in c], name="len"))
    assert not tracker.violations, sorted(set(tracker.violations))


@pytest.mark.parametrize("variant", ["lora", "gpt2"])
def test_lora_and_transformers_paths_keep_tensors_on_the_model_device(variant, tracker,
                                                                     tiny_model_dir, tmp_path):
    if variant == "lora":
        pytest.importorskip("peft")
    model = tiny_model_dir("gpt2" if variant == "gpt2" else "llama")
    cfg = TrainConfig(model=model, dataset="toy", steps=1, prompts_per_step=4, k=2,
                      micro_batch_size=4, max_new_tokens=6, lr=1e-3,
                      output_dir=str(tmp_path / "run"), rewards=("builtin:length",),
                      lora_r=4 if variant == "lora" else 0)
    train(cfg)
    assert not tracker.violations, sorted(set(tracker.violations))


def test_lora_bfloat16_policy_samples_on_the_lean_decoder(tiny_model_dir, tmp_path):
    """peft keeps adapters in float32 under a bfloat16 base: the decoder's folded weights must
    come back in bfloat16 (the dtype error the GPU check's bfloat16 LoRA run hit on CPU)."""
    pytest.importorskip("peft")
    cfg = TrainConfig(model=tiny_model_dir("llama"), dataset="toy", steps=1, prompts_per_step=2,
                      k=2, micro_batch_size=4, max_new_tokens=4, lr=1e-3, dtype="bfloat16",
                      output_dir=str(tmp_path / "run"), rewards=("builtin:length",), lora_r=4)
    run = train(cfg)
    assert (run / "final" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_gpu_check_cpu_small_end_to_end(tmp_path):
    """``benchmarks/gpu_check.py --cpu --small`` passes, without datasets, py3langid or gguf
    (absent on the GPU machine: importing them fails here), and prints its table."""
    import os
    import subprocess

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in ("datasets", "py3langid", "gguf"):
        (blocked / f"{name}.py").write_text(f"raise ImportError('{name} is not installed')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(ROOT)])}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu",
                           "--small", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("check "):]
    rows = {tuple(c.strip() for c in line.split("|")[:3]) for line in table.splitlines()[2:]
            if line.count("|") >= 3}
    for dtype in ("bfloat16", "float32"):
        for check in ("sample", "rloo", "copg", "dpo", "ppo", "accelerate", "resume", "speed"):
            assert (check, dtype, "PASS") in rows or ("all", dtype, "SKIP") in rows, (check, dtype)
    assert "gpu_check: all passed" in proc.stdout


def test_gpu_check_only_runs_the_named_checks():
    """``--only`` (to rerun what failed within the GPU machine's minutes) skips every other row."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gpu_check              # dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    table, ran = gpu_check.Table(["rloo"]), []
    for check in ("sample", "rloo", "speed"):
        table.run(check, "float32", lambda c=check: (ran.append(c) or True, "n"))
    assert ran == ["rloo"] and [r[0] for r in table.rows] == ["rloo"]
    everything = gpu_check.Table()
    everything.run("sample", "float32", lambda: (False, "boom"))
    assert everything.failed
