"""Mixed precision: bf16 arithmetic over float32 master weights, where the device runs it fast.

``precision: bf16`` (``TrainConfig``) keeps the policy's weights, gradients and AdamW state in
float32 (``dtype: float32``) and runs the rollout (the lean decoder casts its per-rollout weight
copies to bf16: half the bytes streamed per decode step), the reference forward and the training
forward in bf16 through ``torch.autocast``: the same setting on CPU and CUDA. Log-softmax, the
losses and the residual stream stay float32.

Where bf16 is slow (a CPU without AVX-512 BF16 or AMX emulates bf16 products, measured ~50x
slower than float32 on an AVX2 EPYC; a GPU without bf16), ``precision: bf16`` falls back to
float32 with a printed note, and ``precision: auto`` picks bf16 only where it is fast.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16", "auto")
# CPU flags (Linux /proc/cpuinfo) of native bf16 matrix products.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is not readable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    return set(line.partition(":")[2].split())


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 matrix products run natively (faster than float32): a CUDA device that
    reports bf16 support, a CPU with AVX-512 BF16 or AMX (``CPU_BF16_FLAGS``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_flags() & set(CPU_BF16_FLAGS))
    return False


def compute_dtype(precision: str, device, announce: bool = True) -> torch.dtype:
    """The arithmetic dtype of ``precision`` on ``device``: bfloat16 for bf16 (and auto) where
    ``bf16_supported``, else float32 (bf16 asked for but slow here: one printed note)."""
    if precision == "fp32":
        return torch.float32
    if bf16_supported(device):
        return torch.bfloat16
    if precision == "bf16" and announce:
        print(f"precision=bf16: {torch.device(device).type} has no fast bf16 matrix products "
              f"(CPU flags {' or '.join(CPU_BF16_FLAGS)}, or a CUDA bf16 GPU); running float32")
    return torch.float32


def autocast(dtype: torch.dtype, device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``dtype`` = bfloat16; a no-op context for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def full_precision(device) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``device`` (reward models score in their own dtype)."""
    return torch.autocast(torch.device(device).type, enabled=False)


def active_dtype(device, default: torch.dtype) -> torch.dtype:
    """The dtype autocast computes products in on ``device`` now; ``default`` outside autocast
    (the lean decoder and forward read it to cast their weight copies and rotary tables)."""
    kind = torch.device(device).type
    if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return default
