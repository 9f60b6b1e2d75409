"""The GPU path, checked in one command: every path a GPU user takes, on a model with
SmolLM2-135M's configuration (LlamaForCausalLM, 30 layers, hidden 576, 9 heads / 3 KV heads,
vocabulary 49152, tied embeddings) and random weights, plus a tokenizer trained here. Nothing is
downloaded; ``datasets``, ``py3langid`` and ``gguf`` are not needed.

For bfloat16 and float32 it checks:
  sample     the lean decoder's sampling-time log-probs and the lean forward's log-probs of the
             same tokens against the transformers forward (max |diff|, threshold per dtype)
  <algo>     RLOO, GRPO (once registered), CoPG offline, DPO and PPO: 2 training steps each;
             parameters change, every logged metric is finite
  lora       2 RLOO steps with a LoRA adapter (peft): adapted weights change, others do not
  accelerate 2 steps under ``accelerate launch --num_processes 1`` (a subprocess)
  resume     4 steps uninterrupted == 2 steps, a crash, ``resume``, 2 more (bit for bit)
  speed      sampling and training tokens/s, and peak memory (GPU: max_memory_allocated;
             CPU: the process's peak RSS so far)
It prints one table (check | dtype | result | numbers) and exits 1 if any check fails.

  python benchmarks/gpu_check.py                  # GPU (CUDA): the full check, 311 s on one H200
  python benchmarks/gpu_check.py --cpu --small    # CPU smoke test, 2 layers, hidden 64: ~1 min
  python benchmarks/gpu_check.py --cpu            # the 135M configuration on CPU (slow)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))      # gpu_check_fixtures, when imported
from gpu_check_fixtures import (  # noqa: E402
    ALGOS, PLANS, REQUIRED, ROOT, SMALL, SMOLLM2_135M, TOLERANCE, Plan, Table, build_model, changed,
    crc_reward, finite_metrics, load, prompt_batch, train_cfg, uniforms, weights, write_datasets)


# ------------------------------------------------------------------------------------- checks


def check_sample(path: Path, dtype: str, device, plan: Plan, tok):
    """Lean decoder and lean forward vs the transformers forward on the same tokens."""
    import torch

    from scorealign.engine.forward import lean_forward_accepts
    from scorealign.engine.generation import LeanGenerator, TransformersGenerator
    from scorealign.engine.rollout import completion_logprobs, eos_token_ids, pad_token_id

    model = load(path, dtype, device).eval()
    ids, mask = prompt_batch(tok, plan.prompts, 2, device)
    u = uniforms(ids.shape[0], plan.new_tokens, device)
    args = (ids, mask, u, eos_token_ids(tok, model), pad_token_id(tok), 1.0, 1.0)
    lean_ok = LeanGenerator.accepts(model) and lean_forward_accepts(model)
    with torch.inference_mode():
        lean = LeanGenerator().generate(model, *args)
        hf = TransformersGenerator().generate(model, *args)
        sample = (ids, mask, lean.completion_ids, lean.completion_mask)
        padded = completion_logprobs(model, *sample, pack=False)           # transformers
        flat = completion_logprobs(model, *sample)                          # lean forward
    d_dec = (lean.logprobs - padded).abs().max().item()
    d_fwd = (flat - padded).abs().max().item()
    width = min(lean.completion_ids.shape[1], hf.completion_ids.shape[1])
    same = (lean.completion_ids[:, :width] == hf.completion_ids[:, :width]).all(1)
    tol = TOLERANCE[dtype]
    ok = lean_ok and d_dec <= tol and d_fwd <= tol and math.isfinite(d_dec + d_fwd)
    return ok, (f"max|lp diff| decoder-vs-hf {d_dec:.2e}, lean-fwd-vs-hf {d_fwd:.2e} (tol {tol:g});"
                f" lean paths taken {lean_ok}; rows with tokens = hf sampler "
                f"{int(same.sum())}/{len(same)}")




def check_algo(algo: str, model: Path, out: Path, dtype: str, plan: Plan, data: dict):
    from scorealign.rewards import CallableReward
    from scorealign.train import train

    kw = {"copg": dict(source="offline", dataset=str(data["scored"])),
          "dpo": dict(dataset=str(data["pairs"]), k=2, micro_batch_size=2 * plan.prompts_per_step)
          }.get(algo, {})
    t0 = time.perf_counter()
    run = train(train_cfg(model, out, dtype, plan, algo=algo, **kw),
                reward=CallableReward(crc_reward, name="crc"))
    names, diff = changed(weights(model), weights(run / "final"))
    finite, steps = finite_metrics(run)
    total = len(weights(model))
    return (bool(names) and finite and steps == 2,
            f"{steps} steps in {time.perf_counter() - t0:.1f}s; {len(names)}/{total} tensors "
            f"changed (max |dw| {diff:.1e}); metrics finite {finite}")


def check_lora(model: Path, out: Path, dtype: str, plan: Plan):
    from scorealign.rewards import CallableReward
    from scorealign.train import train

    run = train(train_cfg(model, out, dtype, plan, lora_r=8, lora_alpha=16),
                reward=CallableReward(crc_reward, name="crc"))
    names, diff = changed(weights(model), weights(run / "final"))
    adapted = [n for n in names if "proj" in n]
    finite, steps = finite_metrics(run)
    adapter = (run / "final" / "adapter" / "adapter_config.json").is_file()
    ok = bool(adapted) and len(adapted) == len(names) and finite and adapter and steps == 2
    return ok, (f"{len(adapted)} projection tensors changed, {len(names) - len(adapted)} others "
                f"(must be 0); max |dw| {diff:.1e}; adapter saved {adapter}; finite {finite}")


def check_mixed(model: Path, out: Path, plan: Plan, device):
    """``precision: bf16`` over float32 weights (RLOO, 2 epochs: the reused batch's old log-probs
    come from the training forward): weights stay float32 and change, metrics finite; where the
    device has no native bf16 it is the float32 fallback (reported)."""
    import torch

    from scorealign.core.precision import compute_dtype
    from scorealign.rewards import CallableReward
    from scorealign.train import train

    run = train(train_cfg(model, out, "float32", plan, precision="bf16", num_epochs=2),
                reward=CallableReward(crc_reward, name="crc"))
    final = weights(run / "final")
    names, diff = changed(weights(model), final)
    finite, steps = finite_metrics(run)
    fp32 = all(w.dtype == torch.float32 for w in final.values())
    ran = compute_dtype("bf16", device, announce=False)
    # float32 master weights: every tensor moves (bfloat16 weights lose the RMSNorm updates)
    return (len(names) == len(final) and finite and fp32 and steps == 2,
            f"computed in {str(ran).removeprefix('torch.')}; weights float32 {fp32}; "
            f"{len(names)}/{len(final)} tensors changed (max |dw| {diff:.1e}); finite {finite}")


def check_accelerate(model: Path, out: Path, dtype: str, plan: Plan, cpu: bool):
    cfg = out.with_suffix(".yaml")
    cfg.write_text(f"model: {model}\ndtype: {dtype}\ndataset: toy\nsteps: 2\n"
                   f"prompts_per_step: {plan.prompts_per_step}\nk: {plan.k}\n"
                   f"micro_batch_size: {plan.micro}\nmax_new_tokens: {plan.train_tokens}\n"
                   "lr: 1.0e-3\nrewards: [builtin:length]\n")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           *(["--cpu"] if cpu else []), "-m", "scorealign.cli", "train", str(cfg),
           "--output_dir", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        return False, f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
    finite, steps = finite_metrics(out)
    one = "1 process(es)" in proc.stdout
    return (finite and steps == 2 and one,
            f"exit 0 in {time.perf_counter() - t0:.1f}s; {steps} steps; 1 process {one}; "
            f"finite {finite}")


@contextlib.contextmanager
def deterministic_kernels(device):
    """On CUDA: deterministic algorithms (index_select/index_add backward, cuBLAS with
    CUBLAS_WORKSPACE_CONFIG) and the math SDPA kernel, so that two runs of the same steps agree
    bit for bit and the resume check tests the checkpoint, not atomics. A no-op on CPU."""
    import torch

    if device.type != "cuda":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.use_deterministic_algorithms(False)


def check_resume(model: Path, out: Path, dtype: str, plan: Plan, device):
    with deterministic_kernels(device):
        return resume_runs(model, out, dtype, plan)


def resume_runs(model: Path, out: Path, dtype: str, plan: Plan):
    """As tests/test_core.py's resume test: crash in step 3 (the reward raises), resume."""
    from scorealign.rewards import CallableReward
    from scorealign.train import train

    kw = dict(steps=4, save_every=2, lr_schedule="linear", warmup_steps=1)
    reward = CallableReward(crc_reward, name="crc")
    full = train(train_cfg(model, out / "full", dtype, plan, **kw), reward=reward)
    calls = {"n": 0}

    def flaky(prompts, completions, **_):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("machine lost")
        return crc_reward(prompts, completions)

    cfg = train_cfg(model, out / "resumed", dtype, plan, **kw)
    try:
        train(cfg, reward=CallableReward(flaky, name="crc"))
        return False, "the interrupted run did not stop"
    except RuntimeError as e:
        if "machine lost" not in str(e):
            raise
    train(cfg, reward=reward, resume=True)
    names, diff = changed(weights(full / "final"), weights(out / "resumed" / "final"))
    return not names, (f"{len(names)} tensors differ (max |dw| {diff:.1e}) between 4 steps and "
                       "2 + crash + resume + 2 (CUDA: deterministic kernels)")


def peak_memory(device) -> str:
    import torch

    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20          # KiB -> GiB
    return f"peak RSS {rss:.2f} GiB (process so far)"


def check_speed(path: Path, dtype: str, device, plan: Plan, tok):
    """Sampling tokens/s (lean decoder, no EOS stops) and training tokens/s (prompt + completion
    tokens through the lean forward, backward and a fused AdamW step), peak memory."""
    import torch

    from scorealign.engine.generation import sample
    from scorealign.engine.rollout import completion_logprobs, eos_token_ids, pad_token_id

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = load(path, dtype, device, trainable=True)
    ids, mask = prompt_batch(tok, plan.speed_rows // 4, 4, device)
    args = (eos_token_ids(tok, model), pad_token_id(tok))
    sample(model, ids[:4], mask[:4], uniforms(4, 4, device), *args)           # warm-up
    sync()
    t0 = time.perf_counter()
    gen = sample(model, ids, mask, uniforms(ids.shape[0], plan.speed_tokens, device), *args)
    sync()
    sample_tps = gen.completion_mask.sum().item() / (time.perf_counter() - t0)
    n = plan.speed_train_rows
    batch = (ids[:n], mask[:n], gen.completion_ids[:n].clone(), gen.completion_mask[:n].clone())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6,
                            fused=True)
    times, loss = [], float("nan")
    for _ in range(plan.speed_iters + 1):                                     # 1 warm-up
        sync()
        t0 = time.perf_counter()
        lp = completion_logprobs(model, *batch)
        loss_t = -lp.sum() / n
        loss_t.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t0)
        loss = loss_t.item()
    tokens = (batch[1].sum() + batch[3].sum()).item()
    train_tps = tokens / (sum(times[1:]) / len(times[1:]))
    return math.isfinite(loss), (f"sample {sample_tps:,.0f} tok/s ({ids.shape[0]} rows x "
                                 f"{plan.speed_tokens}); train {train_tps:,.0f} tok/s ({n} seq, "
                                 f"{tokens} tok/step); {peak_memory(device)}")


# --------------------------------------------------------------------------------------- main


def bf16_supported(device) -> bool:
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        x = torch.ones(4, 4, dtype=torch.bfloat16)
        return bool(torch.isfinite((x @ x).float()).all())
    except RuntimeError:
        return False


def run_dtype(table: Table, dtype: str, model: Path, out: Path, device, plan: Plan, cpu: bool):
    from transformers import AutoTokenizer

    from scorealign.algorithms.registry import ALGORITHMS

    tok = AutoTokenizer.from_pretrained(str(model))
    table.run("sample", dtype, check_sample, model, dtype, device, plan, tok)
    data = write_datasets(out, plan.k)
    for algo in ALGOS:
        if algo not in ALGORITHMS:
            table.add(algo, dtype, None, "not in ALGORITHMS yet")
            continue
        table.run(algo, dtype, check_algo, algo, model, out / f"{algo}-{dtype}", dtype, plan, data)
    if importlib.util.find_spec("peft") is None:
        table.add("lora", dtype, None, "peft not installed")
    else:
        table.run("lora", dtype, check_lora, model, out / f"lora-{dtype}", dtype, plan)
    if dtype == "float32":
        table.run("precision bf16", dtype, check_mixed, model, out / "mixed", plan, device)
    table.run("accelerate", dtype, check_accelerate, model, out / f"accelerate-{dtype}", dtype,
              plan, cpu)
    table.run("resume", dtype, check_resume, model, out / f"resume-{dtype}", dtype, plan, device)
    table.run("speed", dtype, check_speed, model, dtype, device, plan, tok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on CPU (no CUDA)")
    parser.add_argument("--small", action="store_true",
                        help="2 layers, hidden 64 (same architecture): a CPU smoke test")
    parser.add_argument("--out", help="work directory (default: a temporary one)")
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--only", nargs="+", metavar="CHECK",
                        help="run only these checks (sample, rloo, ..., lora, accelerate, resume, "
                             "speed), e.g. to rerun the ones that failed")
    args = parser.parse_args(argv)
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    if missing:
        print(f"gpu_check: missing packages {missing}: on a machine with internet, "
              "`pip download <names> -d wheels/`, copy wheels/ over, `pip install wheels/*`")
        return 2
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""          # before torch initialises CUDA
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # deterministic cuBLAS (resume)
    sys.path.insert(0, str(ROOT))
    import torch
    import transformers

    from scorealign.core.models import build_accelerator, quiet_transformers

    quiet_transformers()
    device = build_accelerator().device
    if not args.cpu and device.type != "cuda":
        print("no CUDA device: run with --cpu (add --small for a quick smoke test)")
        return 2
    plan = PLANS["small" if args.small else "cpu" if args.cpu else "gpu"]
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = build_model(out / ("model-small" if args.small else "model-135m"),
                        SMALL if args.small else SMOLLM2_135M)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check: {name}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"model {model} ({'small' if args.small else 'SmolLM2-135M configuration'}), "
          f"out {out}", flush=True)
    table = Table(args.only)
    for dtype in args.dtypes:
        if dtype == "bfloat16" and not bf16_supported(device):
            table.add("all", dtype, None, f"bfloat16 not supported on {name}")
            continue
        run_dtype(table, dtype, model, out, device, plan, args.cpu)
    print(f"\n{table.render()}\n\ngpu_check: {'FAILED' if table.failed else 'all passed'} "
          f"in {time.perf_counter() - t0:.0f}s")
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
