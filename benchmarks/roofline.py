"""The machine's limits, measured in the benchmark's own run, and the arithmetic of each stage.

``machine_rates(threads)``: float32 and bf16 matrix-product rates (GFLOP/s) at the shapes of a
135M Llama's layers and at 2048^3, and the memory bandwidth (GB/s, a large tensor copy: read +
write bytes). ``stage_flops``: the matrix-product FLOPs of sampling (prefill + decode steps), the
reference forward and the training forward + backward of one step, from the token counts the
worker records. ``decode_bound_s``: the weight-streaming time of one decode step (every weight
read once per step), the floor of a decode step at batch sizes this small.

    python benchmarks/roofline.py --threads 2      # print the machine's rates
"""

from __future__ import annotations

import argparse
import time

import torch

SHAPES = [(512, 576, 1536), (512, 1536, 576), (2048, 2048, 2048)]   # rows x in x out


def matmul_gflops(dtype: torch.dtype, shape: tuple[int, int, int], seconds: float = 0.5) -> float:
    """Best-of rate of [m, k] @ [k, n] in ``dtype`` over ~``seconds`` (after one warm-up)."""
    m, k, n = shape
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def bandwidth_gbs(mb: int = 256, repeats: int = 5) -> float:
    """Best-of copy bandwidth of a ``mb`` MB float32 tensor (bytes read + written per second)."""
    src = torch.randn(mb * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine_rates(threads: int, quick: bool = False) -> dict:
    """{'fp32': GFLOP/s, 'bf16': GFLOP/s, 'bw': GB/s, per-shape rates}: best shape per dtype (bf16
    is slow where the CPU emulates it: one small shape only, not to spend minutes on it)."""
    torch.set_num_threads(threads)
    shapes = [(128, 256, 256)] if quick else SHAPES
    out = {"threads": threads, "shapes": {}}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        rates = [matmul_gflops(dtype, s, 0.2 if quick else 0.5) for s in shapes[:1]]
        if rates[0] > 20 or name == "fp32":                       # emulated bf16: stop here
            rates += [matmul_gflops(dtype, s, 0.2 if quick else 0.5) for s in shapes[1:]]
        out["shapes"][name] = [round(r, 1) for r in rates]
        out[name] = max(rates)
    out["bw"] = bandwidth_gbs(64 if quick else 256)
    return out


def model_dims(config) -> dict:
    """Per-token matrix-product parameter counts of a Llama-family ``transformers`` config."""
    d, f, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    hd = getattr(config, "head_dim", None) or d // config.num_attention_heads
    kv = config.num_key_value_heads * hd
    layer = d * (config.num_attention_heads * hd) + 2 * d * kv + config.num_attention_heads * hd * d + 3 * d * f
    return {"body": n * layer, "head": d * config.vocab_size, "layers": n, "kv": kv, "hidden": d}


def stage_flops(dims: dict, tokens: dict) -> dict:
    """Matrix-product FLOPs of one step's stages from the worker's token counts: ``prefill`` and
    ``forward`` (distinct prompt + completion tokens through the body), ``head`` (positions whose
    logits are computed), ``decode`` (rows x decode steps, body and head each), ``prefill_rows``
    (distinct prompts: one logits row each). Attention's score products are left out (< 3% here)."""
    fwd = 2 * (dims["body"] * tokens["forward"] + dims["head"] * tokens["head"])
    sampling = 2 * (dims["body"] * (tokens["prefill"] + tokens["decode"])
                    + dims["head"] * (tokens["prefill_rows"] + tokens["decode"]))
    return {"sampling": sampling, "reference": fwd, "train": 3 * fwd}


def decode_bound_s(dims: dict, weight_bytes: int, bw_gbs: float) -> float:
    """Seconds to stream every weight of one decode step once at ``bw_gbs`` (KV cache ignored:
    at 32 new tokens it is < 2% of the weights' bytes)."""
    return (dims["body"] + dims["head"]) * weight_bytes / (bw_gbs * 1e9)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    print(machine_rates(p.parse_args().threads, p.parse_args().quick))
