"""The training loop, written once: rollout -> score -> advantages -> loss -> step -> log.

Every online algorithm runs through ``train``; what differs between them is the handful of pure
functions in ``algorithms.ALGORITHMS`` (PPO adds a value model, ``ppo.py``). Batch arithmetic
(stated once, checked at start):
  global rollout batch  B = prompts_per_step * k sequences per step
  per process           b = B / world_size sequences (whole prompt groups, never split)
  optimisation          num_epochs passes over the batch, each split into num_minibatches
                        minibatches; one optimizer step per minibatch
  accumulation          each minibatch runs in micro-batches of micro_batch_size sequences
Loss aggregation: the mean over the items of the GLOBAL minibatch, items being sequences or
completion tokens as the algorithm declares (``losses.aggregate``; token counts are summed over
micro-batches and processes), so 1 x 8 accumulation, 8 x 1 and 2-process data parallel give the
same update up to float round-off. Reusing a batch (num_epochs or num_minibatches > 1) weights
the loss by the importance ratio against the sampling-time log-probs; used once, the ratio is
exactly 1 and no forward pass is spent on "old" log-probs.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from ..algorithms import critic as ppo
from ..algorithms import losses
from ..algorithms.registry import ALGORITHMS
from ..core import checkpoint
from ..core.config import save_config
from ..core.metrics import ProgressLog
from ..core.models import build_accelerator, load_models, resolve_model_path
from ..data.formats import load_prompt_rows
from ..engine.rollout import completion_logprobs
from ..errors import ConfigError
from ..eval.heldout import HeldOutEval
from ..rewards.sandbox import SandboxLimits
from ..rewards.sources import rewards_from_specs
from .batches import MixedSource, OfflineSource, OnlineSource, offline_groups
from .config import TrainConfig

OFFLINE_FIELDS = ("completion", "score", "chosen", "rejected", "truncated", "sample_index",
                  "_file", "_line")


def train(cfg: TrainConfig, reward=None, resume: bool = False, eval_reward=None) -> Path:
    """Run ``cfg`` to completion and return the run directory (final model in ``final/``).

    ``reward`` / ``eval_reward``: optional Python reward sources (override ``cfg.rewards`` /
    ``cfg.eval_rewards``); ``resume``: continue from the latest checkpoint in ``cfg.output_dir``.
    """
    run_dir = Path(cfg.output_dir)
    accelerator = build_accelerator()
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    trained_rows = check_batch_arithmetic(cfg, world)
    torch.manual_seed(cfg.seed)
    ckpt = checkpoint.latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        raise ConfigError(f"--resume: no checkpoint found in '{run_dir}/checkpoints'")
    algo = ALGORITHMS[cfg.algo]
    policy, ref_model, tokenizer = load_models(cfg, run_dir, accelerator,
                                               ckpt / "model" if ckpt else None, algo.reference)
    source, evaluate = build_sources(cfg, tokenizer, ref_model, reward, eval_reward, world)
    value_model = None if algo.token_advantages is None else ppo.load_value_model(
        resolve_model_path(cfg.model, run_dir, cfg.seed, False), cfg)           # PPO's critic
    trained = [m for m in (policy, value_model) if m is not None]
    optimizer = adamw([p for m in trained for p in m.parameters() if p.requires_grad], cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    policy, optimizer, *critic = accelerator.prepare(policy, optimizer, *trained[1:])
    value_model = critic[0] if critic else None
    state, start = ({}, 0) if ckpt is None else restore(ckpt, run_dir, optimizer, scheduler,
                                                        value_model, source, accelerator)
    if accelerator.is_main_process:
        save_config(cfg, run_dir / "config.yaml")
        print(batch_summary(cfg, world, trained_rows, run_dir))
    log = ProgressLog(run_dir, cfg, start, accelerator.is_main_process)
    if evaluate is not None and start == 0:
        log.eval(0, evaluate(accelerator.unwrap_model(policy), rank, world, device))

    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        # 1. Batch: this process's prompt groups (never split over processes), scored: sampled
        #    from the policy, read from a dataset, or both (``sources.py``).
        batch, n_new = source.batch(accelerator.unwrap_model(policy), step, rank, world)
        batch = batch.to(device)
        # 2. Rewards on the global batch: skipped rewards filled with the mean, KL in the reward.
        kl = (losses.sequence_kl(batch.logprobs, batch.ref_logprobs, batch.completion_mask)
              if batch.logprobs is not None else torch.zeros(batch.size, device=device))  # [b]
        g_scores, g_kl, g_valid = (accelerator.gather(t) for t in (batch.scores, kl, batch.valid))
        g_scores = torch.where(g_valid, g_scores, g_scores[g_valid].mean() if g_valid.any() else 0.0)
        batch.scores = g_scores.view(world, -1)[rank]                             # [b]
        rollout_stats = rollout_metrics(batch, n_new, kl, accelerator)          # before selection
        rewards = losses.kl_penalized_rewards(g_scores, g_kl, cfg.beta)         # [B]
        if cfg.whiten_rewards:
            rewards = losses.whiten(rewards)
        group_ok = g_valid.view(-1, batch.k).all(1).repeat_interleave(batch.k)  # drop skipped groups
        # 3. Targets: sequence advantages on the global batch, then this process's slice (PPO: per
        #    token on this process's rows, GAE over the value model); RAFT keeps the best rows.
        batch, state, extra = targets(batch, algo, rewards, group_ok, state, cfg, value_model,
                                      world, rank)
        # 4.-5. Loss and optimizer steps: num_epochs x num_minibatches over the batch.
        totals = optimise(batch, algo, cfg, policy, value_model, optimizer, accelerator, step)
        scheduler.step()
        # 6. Log (global means), evaluate, checkpoint.
        elapsed = time.perf_counter() - t0
        metrics = {**rollout_stats, "loss/policy": totals.pop("loss/policy"),
                   "grad_norm": totals.pop("grad_norm"), **totals, **extra}
        reduced = accelerator.reduce(torch.tensor(list(metrics.values()), device=device), "mean")
        log.step(step + 1, dict(zip(metrics, reduced.tolist())), elapsed,
                 optimizer.param_groups[0]["lr"], batch.size * world)
        if evaluate is not None and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            log.eval(step + 1, evaluate(accelerator.unwrap_model(policy), rank, world, device))
        if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps:
            save(run_dir, step + 1, accelerator, policy, value_model, source, tokenizer,
                 optimizer, scheduler, state)

    if accelerator.is_main_process:
        checkpoint.save_model(accelerator.unwrap_model(policy), tokenizer, run_dir / "final")
    log.close()
    accelerator.wait_for_everyone()
    return run_dir


def restore(ckpt: Path, run_dir: Path, optimizer, scheduler, value_model, source, accelerator
            ) -> tuple[dict, int]:
    """Load checkpoint ``ckpt`` into the optimizer, scheduler, value model and replay buffer;
    return (algorithm state, step to continue from)."""
    state = checkpoint.load_checkpoint(ckpt, optimizer, scheduler)
    start = state.pop("step")
    if value_model is not None:
        ppo.load_value_state(accelerator.unwrap_model(value_model),
                             ppo.value_checkpoint_dir(run_dir, start))
    if isinstance(source, MixedSource):
        source.buffer.load_state_dict(checkpoint.load_replay(run_dir, start,
                                                             accelerator.process_index))
    return state, start


def targets(batch, algo, rewards, group_ok, state: dict, cfg: TrainConfig, value_model,
            world: int, rank: int):
    """Stage 3 from the global rewards [B]: this process's advantages, one per sequence [b] (PPO:
    per token [b, C], GAE over the value model), then RAFT's selection of the best rows.
    Returns (batch, algorithm state, extra metrics)."""
    extra = {}
    if algo.token_advantages is None:
        advantages, state = algo.advantages(rewards, batch.k, state, cfg)
        batch.advantages = (advantages * group_ok).view(world, -1)[rank]          # [b]
    else:
        batch.values = ppo.rollout_values(value_model, batch, cfg.micro_batch_size)  # [b, C]
        advantages, batch.returns = algo.token_advantages(batch, cfg)           # [b, C] each
        batch.advantages = advantages * group_ok.view(world, -1)[rank, :, None]
        extra["explained_variance"] = ppo.explained_variance(
            batch.values, batch.returns, batch.completion_mask)
    if algo.select is not None:
        keep = algo.select(rewards, batch.k, cfg).view(world, -1)[rank]          # [b] bool
        batch = batch.select(keep.nonzero().squeeze(1))
    return batch, state, extra


def optimise(batch, algo, cfg: TrainConfig, policy, value_model, optimizer, accelerator,
             step: int) -> dict[str, float]:
    """Stages 4-5 over one batch: num_epochs passes, each split into num_minibatches optimizer
    steps, each minibatch run in micro-batches (whole groups for grouped losses); returns the
    loss statistics averaged over the updates."""
    world, device = accelerator.num_processes, accelerator.device
    trained = [m for m in (policy, value_model) if m is not None]
    group = batch.k if algo.grouped else 1
    # Micro-batches of whole prompt groups (the forward packs each group into one row) where
    # rows are still in groups (no RAFT selection, one minibatch) and the sizes divide evenly.
    whole_groups = (algo.select is None and cfg.num_minibatches == 1
                    and cfg.micro_batch_size % batch.k == 0 and batch.size % batch.k == 0)
    packed = batch.k if whole_groups else group
    totals, n_updates = {}, cfg.num_epochs * cfg.num_minibatches
    reuse = n_updates > 1
    for epoch in range(cfg.num_epochs):
        for minibatch in minibatch_rows(batch.size, group, cfg, step, epoch):
            # 4. Loss: micro-batches sorted by length, summed, divided by the number of
            #    sequences or completion tokens in the minibatch over all processes.
            count = (minibatch.numel() if algo.unit == "sequence"
                     else batch.completion_mask[minibatch].sum().item())
            normaliser = accelerator.reduce(torch.tensor(float(count), device=device),
                                            reduction="sum").item() / world
            micro = micro_batches(batch, minibatch, packed, cfg.micro_batch_size)
            for i, rows in enumerate(micro):
                mb = batch.select(rows)
                with no_sync(accelerator, trained, sync=i == len(micro) - 1):
                    token_lp = completion_logprobs(policy, mb.prompt_ids, mb.prompt_mask,
                                                   mb.completion_ids, mb.completion_mask,
                                                   cfg.temperature)            # [m, C]
                    old_lp = (mb.logprobs if reuse and mb.logprobs is not None
                              else token_lp.detach())                          # ratio 1 if used once
                    values = None if value_model is None else ppo.token_values(value_model, mb)
                    per_item, stats = algo.loss(token_lp, old_lp, values, mb, cfg)
                    accelerator.backward(losses.aggregate(per_item, normaliser))
                for name, value in {"loss/policy": per_item, **stats}.items():
                    totals[name] = totals.get(name, 0.0) + losses.aggregate(
                        value.detach(), normaliser).item() / n_updates
            # 5. Optimizer step: clip (each model), AdamW.
            grad_norm = (accelerator.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                         if cfg.max_grad_norm > 0 else torch.tensor(float("nan")))
            if value_model is not None and cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(value_model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(grad_norm) / n_updates
    return totals


def adamw(params: list, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, with the fused kernel (one pass over each tensor; ~4x faster than the default
    per-op path on CPU) where every parameter is a CPU or CUDA float tensor."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def build_sources(cfg: TrainConfig, tokenizer, ref_model, reward, eval_reward, world: int):
    """(batch source, held-out evaluator or None) for ``cfg.data_source``."""
    sandbox = (SandboxLimits(cfg.reward_timeout, cfg.reward_memory_mb) if cfg.reward_sandbox
               else None)
    reward_specs = (list(cfg.rewards), cfg.reward_weights and list(cfg.reward_weights), sandbox)
    if cfg.data_source == "offline":
        groups = offline_groups(cfg, tokenizer)
        source = OfflineSource(cfg, groups, tokenizer, ref_model)
        rows = [{**{k: v for k, v in g[0].items() if k not in OFFLINE_FIELDS}, "prompt": g[0]["prompt"]}
                for g in groups]
    else:
        rows = load_prompt_rows(cfg)
        reward = reward or rewards_from_specs(*reward_specs)
        online = OnlineSource(cfg, rows, tokenizer, ref_model, reward)
        source = MixedSource(cfg, online, world) if cfg.data_source == "mixed" else online
    if not cfg.eval_every:
        return source, None
    if eval_reward is None:
        eval_reward = (rewards_from_specs(list(cfg.eval_rewards), None, sandbox) if cfg.eval_rewards
                       else reward or rewards_from_specs(*reward_specs))
    if cfg.eval_dataset:
        rows = load_prompt_rows(cfg, cfg.eval_dataset)
    return source, HeldOutEval(cfg, rows, tokenizer, eval_reward)


def save(run_dir: Path, step: int, accelerator, policy, value_model, source, tokenizer,
         optimizer, scheduler, state: dict) -> None:
    """Checkpoint ``step``: every process's replay buffer and the value model first, so that a
    policy checkpoint (written last, atomically) always has them."""
    if isinstance(source, MixedSource):
        checkpoint.save_replay(run_dir, step, accelerator.process_index, source.buffer.state_dict())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if value_model is not None:
            ppo.save_value_model(accelerator.unwrap_model(value_model),
                                 ppo.value_checkpoint_dir(run_dir, step))
        checkpoint.save_checkpoint(run_dir, step, accelerator.unwrap_model(policy), tokenizer,
                                   optimizer, scheduler, state)
    accelerator.wait_for_everyone()


def batch_summary(cfg: TrainConfig, world: int, trained_rows: int, run_dir: Path) -> str:
    """The batch arithmetic, stated once at the start."""
    g = cfg.group_size
    unit = {"dpo": "pairs", "ipo": "pairs", "sft": "examples"}.get(cfg.algo, f"prompts x k={g}")
    return (f"scorealign {cfg.algo} ({cfg.data_source}): {world} process(es); batch "
            f"{cfg.prompts_per_step * g} sequences = {cfg.prompts_per_step} {unit}; "
            f"{cfg.num_epochs} epoch(s) x {cfg.num_minibatches} minibatch(es) of "
            f"{trained_rows // cfg.num_minibatches} sequences per process, micro-batches of "
            f"{cfg.micro_batch_size}; run dir {run_dir}")


def check_batch_arithmetic(cfg: TrainConfig, world: int) -> int:
    """Check that the batch splits evenly over processes and micro-batches; return the number of
    rows trained on per process and step (b = B / world, or the m best of each k for RAFT)."""
    if cfg.prompts_per_step % world:
        raise ConfigError(f"prompts_per_step={cfg.prompts_per_step} must be divisible by the "
                          f"number of processes ({world})")
    local_batch = cfg.prompts_per_step // world * cfg.group_size
    if local_batch % cfg.micro_batch_size:
        raise ConfigError(f"per-process batch {local_batch} (prompts_per_step/processes * "
                          f"{'k' if cfg.group_size == cfg.k else cfg.group_size}) must be "
                          f"divisible by micro_batch_size={cfg.micro_batch_size}")
    kept = local_batch // cfg.k * cfg.raft_top_m if cfg.algo == "raft" else local_batch
    groups = kept // cfg.group_size if ALGORITHMS[cfg.algo].grouped else kept
    if groups < cfg.num_minibatches:
        raise ConfigError(f"num_minibatches={cfg.num_minibatches}: more minibatches than the "
                          f"{groups} {'groups' if groups != kept else 'sequences'} trained on "
                          "per process and step")
    return kept


def rollout_metrics(batch, n_new: int, kl, accelerator) -> dict:
    """Statistics of the samples drawn this step (the first ``n_new`` rows): rewards over the
    global batch, the rest per process. Dataset rows (offline) have none."""
    if n_new == 0:
        return {}
    scores = accelerator.gather(batch.scores[:n_new])
    return {"reward/mean": scores.mean(), "reward/std": scores.std(unbiased=False),
            "kl": kl[:n_new].mean(), "entropy": batch.entropy[:n_new].mean(),
            "completion_len": batch.completion_mask[:n_new].sum(1).float().mean(),
            "truncated_frac": batch.truncated[:n_new].float().mean(),
            "reward/skipped": (~batch.valid[:n_new]).float().sum()}


def minibatch_rows(n_rows: int, group: int, cfg: TrainConfig, step: int, epoch: int
                   ) -> list[torch.Tensor]:
    """Row indices of each minibatch of one pass: all rows in order if there is one minibatch,
    else a seeded shuffle of whole groups of ``group`` rows (same on every process) split into
    num_minibatches near-equal parts. Under data parallelism each process shuffles its own rows:
    the global minibatches then differ from a 1-process run's (same distribution, not the same sets)."""
    if cfg.num_minibatches == 1:
        return [torch.arange(n_rows)]
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 1009 + epoch)
    parts = torch.randperm(n_rows // group, generator=gen).tensor_split(cfg.num_minibatches)
    return [(part[:, None] * group + torch.arange(group)).flatten() for part in parts]


def micro_batches(batch, rows: torch.Tensor, group: int, size: int) -> list[torch.Tensor]:
    """``rows`` sorted by length (whole groups of ``group`` rows together, by their longest) and
    split into micro-batches of ``size`` rows: less padding per forward pass."""
    lengths = (batch.prompt_mask.sum(1) + batch.completion_mask.sum(1)).cpu()   # [b]
    groups = rows.view(-1, group)                                               # [n, group]
    order = lengths[groups].max(1).values.argsort(stable=True)
    return list(groups[order].flatten().split(size))


def no_sync(accelerator, models: list, sync: bool):
    """Skip DDP's gradient all-reduce on every model, except on a minibatch's last micro-batch."""
    stack = contextlib.ExitStack()
    for model in [] if sync else models:
        stack.enter_context(accelerator.no_sync(model))
    return stack


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up, then constant, linear or cosine decay to 0 at ``cfg.steps``."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        if cfg.lr_schedule == "linear":
            return max(0.0, 1.0 - progress)
        if cfg.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor
