"""A memory check before the largest allocations: a batch that cannot fit fails at once with a
one-line error (``errors.describe_failure``: out of memory, with what to lower) instead of
being killed by the operating system half-way."""

from __future__ import annotations

import torch


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` (CUDA: ``mem_get_info``; CPU: MemAvailable of /proc/meminfo);
    None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def ensure_memory(nbytes: int, device: torch.device, what: str) -> None:
    """Raise ``MemoryError`` when ``nbytes`` exceed the free memory of ``device``."""
    free = available_bytes(torch.device(device))
    if free is not None and nbytes > free:
        raise MemoryError(f"{what} needs {nbytes / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free "
                          f"on {device}")
