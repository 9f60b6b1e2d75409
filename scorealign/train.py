"""The training loop, written once: rollout -> score -> advantages -> loss -> step -> log.

Every online algorithm runs through ``train``; what differs between them is the pair of pure
functions in ``algorithms.ALGORITHMS``. Batch arithmetic (stated once, checked at start):
  global rollout batch  B = prompts_per_step * k sequences, one optimizer step per batch
  per process           B / world_size sequences (whole prompt groups, never split)
  accumulation          (B / world_size) / micro_batch_size micro-batches per step
Loss aggregation: mean over SEQUENCES of the global batch (``losses.aggregate``), so 1 x 8
accumulation, 8 x 1 and 2-process data parallel give the same update up to float round-off.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from pathlib import Path

import torch

from . import checkpoint, losses
from .algorithms import ALGORITHMS
from .config import TrainConfig, save_config
from .errors import ConfigError
from .rewards import rewards_from_specs, score_batch
from .data import load_prompts, render_prompt
from .metrics import ProgressLog
from .models import build_accelerator, load_models
from .rollout import completion_logprobs, generate_rollout
from .tiny import toy_prompts


def train(cfg: TrainConfig, reward=None, resume: bool = False) -> Path:
    """Run ``cfg`` to completion and return the run directory (final model in ``final/``).

    ``reward``: an optional Python reward source (overrides ``cfg.rewards``); ``resume``: continue
    from the latest checkpoint in ``cfg.output_dir``.
    """
    run_dir = Path(cfg.output_dir)
    accelerator = build_accelerator()
    world, rank = accelerator.num_processes, accelerator.process_index
    if cfg.prompts_per_step % world:
        raise ConfigError(f"prompts_per_step={cfg.prompts_per_step} must be divisible by the "
                          f"number of processes ({world})")
    local_batch = cfg.prompts_per_step // world * cfg.k
    if local_batch % cfg.micro_batch_size:
        raise ConfigError(f"per-process batch {local_batch} (prompts_per_step/processes * k) "
                          f"must be divisible by micro_batch_size={cfg.micro_batch_size}")
    torch.manual_seed(cfg.seed)
    rows = load_prompt_rows(cfg)
    ckpt = checkpoint.latest_checkpoint(run_dir) if resume else None
    if resume and ckpt is None:
        raise ConfigError(f"--resume: no checkpoint found in '{run_dir}/checkpoints'")
    policy, ref_model, tokenizer = load_models(cfg, run_dir, accelerator,
                                               ckpt / "model" if ckpt else None)
    reward = reward or rewards_from_specs(list(cfg.rewards), cfg.reward_weights and list(cfg.reward_weights))
    algo = ALGORITHMS[cfg.algo]
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    policy, optimizer = accelerator.prepare(policy, optimizer)
    state, start = {}, 0
    if ckpt is not None:
        state = checkpoint.load_checkpoint(ckpt, optimizer, scheduler)
        start = state.pop("step")
    if accelerator.is_main_process:
        save_config(cfg, run_dir / "config.yaml")
    log = ProgressLog(run_dir, cfg, start, accelerator.is_main_process)
    if accelerator.is_main_process:
        print(f"scorealign {cfg.algo}: {world} process(es); batch {cfg.prompts_per_step * cfg.k} = "
              f"{cfg.prompts_per_step} prompts x k={cfg.k}; {local_batch // cfg.micro_batch_size} "
              f"micro-batch(es) of {cfg.micro_batch_size} per process; run dir {run_dir}")

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
        # 3. Advantages on the global batch (all processes), then this process's slice.
        g_scores, g_kl, g_valid = (accelerator.gather(t) for t in (batch.scores, kl, batch.valid))
        g_scores = torch.where(g_valid, g_scores, g_scores[g_valid].mean() if g_valid.any() else 0.0)
        rewards = losses.kl_penalized_rewards(g_scores, g_kl, cfg.beta)       # [B]
        if cfg.whiten_rewards:
            rewards = losses.whiten(rewards)
        advantages, state = algo.advantages(rewards, cfg.k, state, cfg)
        group_ok = g_valid.view(-1, cfg.k).all(1).repeat_interleave(cfg.k)  # drop skipped groups
        advantages = (advantages * group_ok).view(world, -1)[rank]           # [b]
        # 4. Loss: micro-batches sorted by length, summed, normalised by the local batch size
        #    (DDP averages over processes, so the update is the mean over the global batch).
        order = (batch.prompt_mask.sum(1) + batch.completion_mask.sum(1)).argsort(stable=True)
        micro = order.split(cfg.micro_batch_size)
        loss_total = 0.0
        for i, rows_i in enumerate(micro):
            mb = batch.select(rows_i)
            sync = i == len(micro) - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(policy):
                token_lp = completion_logprobs(policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids,
                                               mb.completion_mask, cfg.temperature)  # [m, C]
                per_seq = algo.loss(token_lp.sum(-1), advantages[rows_i])
                loss = losses.aggregate(per_seq, local_batch)
                accelerator.backward(loss)
            loss_total += loss.item()
        # 5. Optimizer step: clip, AdamW, schedule.
        grad_norm = (accelerator.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                     if cfg.max_grad_norm > 0 else torch.tensor(float("nan")))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        # 6. Log (global means) and checkpoint.
        elapsed = time.perf_counter() - t0
        stats = accelerator.reduce(torch.tensor([
            g_scores.mean(), g_scores.std(unbiased=False), kl.mean(), batch.entropy.mean(),
            loss_total, batch.completion_mask.sum(1).float().mean(), batch.truncated.float().mean(),
            (~batch.valid).float().sum(), float(grad_norm)]), reduction="mean")
        log.step(step + 1, stats, elapsed, optimizer.param_groups[0]["lr"], g_scores.numel())
        if accelerator.is_main_process and (
                (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps):
            checkpoint.save_checkpoint(run_dir, step + 1, accelerator.unwrap_model(policy),
                                       tokenizer, optimizer, scheduler, state)
        accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        checkpoint.save_model(accelerator.unwrap_model(policy), tokenizer, run_dir / "final")
    log.close()
    accelerator.wait_for_everyone()
    return run_dir


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
