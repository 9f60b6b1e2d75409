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
import random
import time
from pathlib import Path

import torch

from . import checkpoint, losses, ppo
from .algorithms import ALGORITHMS
from .config import TrainConfig, save_config
from .errors import ConfigError
from .rewards import rewards_from_specs, score_batch
from .data import load_prompts, render_prompt
from .metrics import ProgressLog
from .models import build_accelerator, load_models, resolve_model_path
from .rollout import completion_logprobs, generate_rollout
from .tiny import toy_prompts


def train(cfg: TrainConfig, reward=None, resume: bool = False) -> Path:
    """Run ``cfg`` to completion and return the run directory (final model in ``final/``).

    ``reward``: an optional Python reward source (overrides ``cfg.rewards``); ``resume``: continue
    from the latest checkpoint in ``cfg.output_dir``.
    """
    run_dir = Path(cfg.output_dir)
    accelerator = build_accelerator()
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    trained_rows = check_batch_arithmetic(cfg, world)
    torch.manual_seed(cfg.seed)
    rows = load_prompt_rows(cfg)
    ckpt = checkpoint.latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        raise ConfigError(f"--resume: no checkpoint found in '{run_dir}/checkpoints'")
    policy, ref_model, tokenizer = load_models(cfg, run_dir, accelerator,
                                               ckpt / "model" if ckpt else None)
    algo = ALGORITHMS[cfg.algo]
    value_model = None if algo.token_advantages is None else ppo.load_value_model(
        resolve_model_path(cfg.model, run_dir, cfg.seed, False), cfg)           # PPO's critic
    reward = reward or rewards_from_specs(list(cfg.rewards), cfg.reward_weights and list(cfg.reward_weights))
    trained = [m for m in (policy, value_model) if m is not None]
    optimizer = torch.optim.AdamW([p for m in trained for p in m.parameters() if p.requires_grad],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    policy, optimizer, *critic = accelerator.prepare(policy, optimizer, *trained[1:])
    value_model = critic[0] if critic else None
    trained = [policy, *critic]
    state, start = {}, 0
    if ckpt is not None:
        state = checkpoint.load_checkpoint(ckpt, optimizer, scheduler)
        start = state.pop("step")
        if value_model is not None:
            ppo.load_value_state(accelerator.unwrap_model(value_model),
                                 ppo.value_checkpoint_dir(run_dir, start))
    if accelerator.is_main_process:
        save_config(cfg, run_dir / "config.yaml")
    log = ProgressLog(run_dir, cfg, start, accelerator.is_main_process)
    if accelerator.is_main_process:
        print(f"scorealign {cfg.algo}: {world} process(es); batch {cfg.prompts_per_step * cfg.k} = "
              f"{cfg.prompts_per_step} prompts x k={cfg.k}; {cfg.num_epochs} epoch(s) x "
              f"{cfg.num_minibatches} minibatch(es) of {trained_rows // cfg.num_minibatches} "
              f"sequences per process, micro-batches of {cfg.micro_batch_size}; run dir {run_dir}")

    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        # 1. Rollout: this process's share of the step's prompts, k samples each.
        idx = step_prompt_indices(len(rows), cfg, step)[rank::world]          # whole groups per rank
        prompts = [rows[i]["prompt"] for i in idx]
        uniforms = torch.rand(cfg.prompts_per_step * cfg.k, cfg.max_new_tokens,
                              generator=torch.Generator().manual_seed(cfg.seed * 100003 + step))
        uniforms = uniforms.view(cfg.prompts_per_step, cfg.k, -1)[rank::world].flatten(0, 1)
        texts, chat = prompt_texts(tokenizer, prompts)
        batch = generate_rollout(accelerator.unwrap_model(policy), ref_model, tokenizer, prompts,
                                 texts, cfg.k, uniforms, cfg.max_prompt_tokens, cfg.temperature,
                                 cfg.top_p, chat)
        # 2. Score: r(x, y) from the reward source; KL in the reward, per sequence (detached).
        fields = {key: [rows[i].get(key) for i in idx for _ in range(cfg.k)]
                  for key in rows[0] if key != "prompt" and not key.startswith("_")}
        batch.scores, batch.valid = score_batch(reward, batch.prompts, batch.completions, fields,
                                                cfg.on_reward_error)
        kl = losses.sequence_kl(batch.logprobs, batch.ref_logprobs, batch.completion_mask)  # [b]
        # 3. Advantages on the global batch (all processes), then this process's slice; PPO:
        #    per token on this process's rows, by GAE over the value model's estimates.
        g_scores, g_kl, g_valid = (accelerator.gather(t) for t in (batch.scores, kl, batch.valid))
        g_scores = torch.where(g_valid, g_scores, g_scores[g_valid].mean() if g_valid.any() else 0.0)
        rollout_stats = rollout_metrics(batch, g_scores, kl)                  # before any selection
        rewards = losses.kl_penalized_rewards(g_scores, g_kl, cfg.beta)       # [B]
        if cfg.whiten_rewards:
            rewards = losses.whiten(rewards)
        group_ok = g_valid.view(-1, cfg.k).all(1).repeat_interleave(cfg.k)  # drop skipped groups
        extra = {}
        if algo.token_advantages is None:
            advantages, state = algo.advantages(rewards, cfg.k, state, cfg)
            batch.advantages = (advantages * group_ok).view(world, -1)[rank]      # [b]
        else:
            batch.scores = g_scores.view(world, -1)[rank]                     # skipped rows filled
            batch.values = ppo.rollout_values(value_model, batch, cfg.micro_batch_size)  # [b, C]
            advantages, batch.returns = algo.token_advantages(batch, cfg)       # [b, C] each
            batch.advantages = advantages * group_ok.view(world, -1)[rank, :, None]
            extra["explained_variance"] = ppo.explained_variance(
                batch.values, batch.returns, batch.completion_mask)
        if algo.select is not None:                                 # RAFT: keep the best rows
            keep = algo.select(rewards, cfg.k, cfg).view(world, -1)[rank]        # [b] bool
            batch = batch.select(keep.nonzero().squeeze(1))
        totals, n_updates = {}, cfg.num_epochs * cfg.num_minibatches
        reuse = n_updates > 1
        for epoch in range(cfg.num_epochs):
            for minibatch in minibatch_rows(batch.size, cfg, step, epoch):
                # 4. Loss: micro-batches sorted by length, summed, divided by the number of
                #    sequences or completion tokens in the minibatch over all processes.
                count = (minibatch.numel() if algo.unit == "sequence"
                         else batch.completion_mask[minibatch].sum().item())
                normaliser = accelerator.reduce(torch.tensor(float(count), device=device),
                                                reduction="sum").item() / world
                lengths = batch.prompt_mask.sum(1) + batch.completion_mask.sum(1)  # [b]
                by_length = minibatch[lengths[minibatch].argsort(stable=True)]
                micro = by_length.split(cfg.micro_batch_size)
                for i, rows_i in enumerate(micro):
                    mb = batch.select(rows_i)
                    with no_sync(accelerator, trained, sync=i == len(micro) - 1):
                        token_lp = completion_logprobs(policy, mb.prompt_ids, mb.prompt_mask,
                                                       mb.completion_ids, mb.completion_mask,
                                                       cfg.temperature)        # [m, C]
                        old_lp = mb.logprobs if reuse else token_lp.detach()   # ratio == 1 if once
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
        scheduler.step()
        # 6. Log (global means) and checkpoint.
        elapsed = time.perf_counter() - t0
        metrics = {**rollout_stats, "loss/policy": totals.pop("loss/policy"),
                   "grad_norm": totals.pop("grad_norm"), **totals, **extra}
        reduced = accelerator.reduce(torch.tensor(list(metrics.values()), device=device), "mean")
        log.step(step + 1, dict(zip(metrics, reduced.tolist())), elapsed,
                 optimizer.param_groups[0]["lr"], g_scores.numel())
        if accelerator.is_main_process and (
                (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps):
            if value_model is not None:       # first, so every policy checkpoint has its critic
                ppo.save_value_model(accelerator.unwrap_model(value_model),
                                     ppo.value_checkpoint_dir(run_dir, step + 1))
            checkpoint.save_checkpoint(run_dir, step + 1, accelerator.unwrap_model(policy),
                                       tokenizer, optimizer, scheduler, state)
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        checkpoint.save_model(accelerator.unwrap_model(policy), tokenizer, run_dir / "final")
    log.close()
    accelerator.wait_for_everyone()
    return run_dir


def check_batch_arithmetic(cfg: TrainConfig, world: int) -> int:
    """Check that the batch splits evenly over processes and micro-batches; return the number of
    rows trained on per process and step (b = B / world, or the m best of each k for RAFT)."""
    if cfg.prompts_per_step % world:
        raise ConfigError(f"prompts_per_step={cfg.prompts_per_step} must be divisible by the "
                          f"number of processes ({world})")
    local_batch = cfg.prompts_per_step // world * cfg.k
    if local_batch % cfg.micro_batch_size:
        raise ConfigError(f"per-process batch {local_batch} (prompts_per_step/processes * k) "
                          f"must be divisible by micro_batch_size={cfg.micro_batch_size}")
    kept = local_batch // cfg.k * cfg.raft_top_m if cfg.algo == "raft" else local_batch
    if kept < cfg.num_minibatches:
        raise ConfigError(f"num_minibatches={cfg.num_minibatches}: more minibatches than the "
                          f"{kept} sequences trained on per process and step")
    return kept


def rollout_metrics(batch, g_scores, kl) -> dict:
    """Rollout statistics (STYLE.md names): rewards over the global batch, the rest per process."""
    return {"reward/mean": g_scores.mean(), "reward/std": g_scores.std(unbiased=False),
            "kl": kl.mean(), "entropy": batch.entropy.mean(),
            "completion_len": batch.completion_mask.sum(1).float().mean(),
            "truncated_frac": batch.truncated.float().mean(),
            "reward/skipped": (~batch.valid).float().sum()}


def minibatch_rows(n_rows: int, cfg: TrainConfig, step: int, epoch: int) -> list[torch.Tensor]:
    """Row indices of each minibatch of one pass: all rows in order if there is one minibatch,
    else a seeded shuffle (same on every process) split into num_minibatches near-equal parts.
    Under data parallelism each process shuffles its own rows: the global minibatches then
    differ from a 1-process run's (same distribution, not the same sets)."""
    if cfg.num_minibatches == 1:
        return [torch.arange(n_rows)]
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 1009 + epoch)
    return list(torch.randperm(n_rows, generator=gen).tensor_split(cfg.num_minibatches))


def no_sync(accelerator, models: list, sync: bool):
    """Skip DDP's gradient all-reduce on every model, except on a minibatch's last micro-batch."""
    stack = contextlib.ExitStack()
    for model in [] if sync else models:
        stack.enter_context(accelerator.no_sync(model))
    return stack


def load_prompt_rows(cfg: TrainConfig) -> list[dict]:
    """Prompt rows from ``cfg.dataset`` ('toy' = the built-in toy prompts)."""
    if cfg.dataset == "toy":
        return [{"prompt": p} for p in toy_prompts(256, cfg.seed)]
    return load_prompts(cfg.dataset, cfg.prompt_field, cfg.dataset_split)


def prompt_texts(tokenizer, prompts: list) -> tuple[list[str], list[bool]]:
    """Render prompts to text (chat template for message lists); flag which were chats."""
    return [render_prompt(tokenizer, p) for p in prompts], [not isinstance(p, str) for p in prompts]


def step_prompt_indices(n_rows: int, cfg: TrainConfig, step: int) -> list[int]:
    """The global prompts of ``step``: consecutive slices of a seeded permutation per epoch."""
    out, pos = [], step * cfg.prompts_per_step
    while len(out) < cfg.prompts_per_step:
        epoch, offset = divmod(pos, n_rows)
        perm = list(range(n_rows))
        random.Random(cfg.seed * 7919 + epoch).shuffle(perm)
        take = min(cfg.prompts_per_step - len(out), n_rows - offset)
        out += perm[offset:offset + take]
        pos += take
    return out


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
