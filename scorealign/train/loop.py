"""The training loop, written once: rollout -> score -> advantages -> loss -> step -> log.

Every algorithm runs through ``train``; what differs between them is its entry in
``algorithms.ALGORITHMS`` (pure functions, its data kind, group size, and an optional critic: extra
trained models, such as PPO's value model, which the loop trains and checkpoints generically).
Batch arithmetic
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
the loss by the importance ratio against the sampling-time log-probs (bf16: the training forward's,
``behaviour_logprobs``); used once, the ratio is exactly 1, no forward spent on "old" log-probs.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..algorithms import losses
from ..algorithms.critic import Critic
from ..algorithms.registry import Algorithm
from ..core import checkpoint, precision, rundir, seeding
from ..core.config import save_config, to_dict
from ..core.metrics import ProgressLog
from ..core.models import build_accelerator, load_models
from ..data.formats import load_prompt_rows
from ..engine.rollout import completion_logprobs
from ..errors import ConfigError
from ..eval.heldout import HeldOutEval
from ..rewards.sandbox import sandbox_limits
from ..rewards.sources import rewards_from_specs
from .batches import BatchSource, build_source
from .config import TrainConfig, batch_summary, check_batch_arithmetic
from .logs import completion_rows, reduce_metrics, rollout_metrics
from .tracking import Trackers, build_trackers


@dataclass
class Run:
    """What the stages of one run share: config, algorithm, models, optimizer, batch source."""

    cfg: TrainConfig
    algo: Algorithm
    run_dir: Path
    accelerator: object
    policy: torch.nn.Module
    critic: Critic | None
    optimizer: torch.optim.Optimizer
    scheduler: object
    source: BatchSource
    tokenizer: object
    compute: torch.dtype = torch.float32   # products' dtype (``core.precision``): bf16 or float32

    @property
    def trained(self) -> list[torch.nn.Module]:
        """Every trained model: the policy, then the critic's (prepared) model if any."""
        return [self.policy] + ([self.critic.model] if self.critic is not None else [])


def train(cfg: TrainConfig, reward=None, resume: bool = False, eval_reward=None) -> Path:
    """Run ``cfg`` to completion and return the run directory (final model in ``final/``).

    ``reward`` / ``eval_reward``: optional Python reward sources (override ``cfg.rewards`` /
    ``cfg.eval_rewards``); ``resume``: continue from the newest intact checkpoint in
    ``cfg.output_dir``. A new run needs an empty (or absent) ``output_dir`` unless
    ``cfg.overwrite`` (``core.rundir``); nothing is written before the inputs are loaded.
    """
    run_dir = Path(cfg.output_dir)
    accelerator = build_accelerator(log_with=build_trackers(cfg.trackers, run_dir))
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    trained_rows = check_batch_arithmetic(cfg, world)
    ckpt = resume_checkpoint(cfg, run_dir, resume, accelerator.is_main_process)
    accelerator.wait_for_everyone()
    with rundir.fresh_run(run_dir, ckpt is None and accelerator.is_main_process) as fresh:
        run, evaluate = setup(cfg, run_dir, accelerator, ckpt, fresh, reward, eval_reward)
        state, start = ({}, 0) if ckpt is None else restore(run, ckpt)
        if accelerator.is_main_process:
            save_config(cfg, run_dir / "config.yaml")
            print(batch_summary(cfg, world, trained_rows, run_dir), flush=True)
            if ckpt is not None:
                print(f"resuming {run_dir} at step {start} of {cfg.steps} from checkpoint "
                      f"{ckpt}", flush=True)
        log = ProgressLog(run_dir, cfg, start, accelerator.is_main_process,
                          Trackers.start(accelerator, run_dir, to_dict(cfg)))
        if evaluate is not None and start == 0:
            log.eval(0, evaluate(accelerator.unwrap_model(run.policy), rank, world, device))
        for step in range(start, cfg.steps):
            state = train_step(run, step, state, log, evaluate)
            fresh.started = True

    if accelerator.is_main_process:
        checkpoint.save_model(accelerator.unwrap_model(run.policy), run.tokenizer,
                              run_dir / "final")
    log.close()
    accelerator.wait_for_everyone()
    return run_dir


def resume_checkpoint(cfg: TrainConfig, run_dir: Path, resume: bool, is_main: bool):
    """None for a new run (after checking, read-only, that ``run_dir`` may take it); on resume,
    the newest intact checkpoint (stale temporaries of interrupted writes removed first), whose
    config must match ``cfg`` in every key that changes the run."""
    if not resume:
        rundir.check_new_run(run_dir, cfg.overwrite)
        return None
    if is_main and (removed := rundir.remove_stale_temporaries(run_dir)):
        print(f"scorealign: notice: removed {len(removed)} temporary file(s) of interrupted "
              f"writes from {run_dir}: {', '.join(removed)}", flush=True)
    ckpt = checkpoint.intact_checkpoint(run_dir, None if is_main else (lambda text: None))
    if ckpt is None:
        raise ConfigError(f"--resume: no checkpoint found in '{run_dir}/checkpoints'")
    checkpoint.check_resume_config(ckpt, to_dict(cfg))
    return ckpt


def setup(cfg: TrainConfig, run_dir: Path, accelerator, ckpt, fresh, reward, eval_reward):
    """(Run, held-out evaluator or None): models, data, rewards, critic, optimizer. A new run
    claims its directory (``fresh.claim``) only once its inputs are loaded ('tiny' is built in
    the run directory: claimed first)."""
    algo, world = cfg.algorithm, accelerator.num_processes
    if cfg.model == "tiny":
        fresh.claim(cfg.overwrite)
    policy, ref_model, tokenizer = load_models(cfg, run_dir, accelerator,
                                               ckpt / "model" if ckpt else None, algo.reference)
    source, evaluate = build_sources(cfg, tokenizer, ref_model, reward, eval_reward, world)
    fresh.claim(cfg.overwrite)
    critic = algo.critic(cfg, run_dir) if algo.critic is not None else None
    trained = [policy] + ([critic.model] if critic is not None else [])
    optimizer = adamw([p for m in trained for p in m.parameters() if p.requires_grad], cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    policy, optimizer, *extra = accelerator.prepare(policy, optimizer, *trained[1:])
    if critic is not None:
        critic.model = extra[0]
    compute = precision.compute_dtype(cfg.precision, accelerator.device,
                                      announce=accelerator.is_main_process)
    return Run(cfg, algo, run_dir, accelerator, policy, critic, optimizer, scheduler, source,
               tokenizer, compute), evaluate


def train_step(run: Run, step: int, state: dict, log: ProgressLog, evaluate) -> dict:
    """One step of the loop (below); returns the algorithm's state."""
    cfg, accelerator, source = run.cfg, run.accelerator, run.source
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    t0 = time.perf_counter()
    # 1. Batch: this process's prompt groups (never split over processes), scored: sampled
    #    from the policy, read from a dataset, or both (``batches.py``), in the run's precision.
    with precision.autocast(run.compute, device):
        batch = source.batch(accelerator.unwrap_model(run.policy), step, rank, world).to(device)
    # 2. Rewards on the global batch: skipped rewards filled with the mean, KL in the reward.
    kl = (losses.sequence_kl(batch.logprobs, batch.ref_logprobs, batch.completion_mask)
          if batch.logprobs is not None else torch.zeros(batch.size, device=device))  # [b]
    if cfg.overlong_buffer:                                   # DAPO's soft overlong penalty
        batch.scores = batch.scores + losses.overlong_penalty(
            batch.completion_mask.sum(1), cfg.max_new_tokens, cfg.overlong_buffer,
            cfg.overlong_penalty)
    g_scores, g_kl, g_valid = (accelerator.gather(t) for t in (batch.scores, kl, batch.valid))
    g_scores = torch.where(g_valid, g_scores, g_scores[g_valid].mean() if g_valid.any() else 0.0)
    batch.scores = g_scores.view(world, -1)[rank]                             # [b]
    rollout_stats = rollout_metrics(batch, kl, accelerator,
                                    source.source_scores())                 # before selection
    rewards = losses.kl_penalized_rewards(g_scores, g_kl, cfg.beta)         # [B]
    if cfg.whiten_rewards:
        rewards = losses.whiten(rewards)
    group_ok = g_valid.view(-1, batch.k).all(1).repeat_interleave(batch.k)  # drop skipped groups
    if run.algo.setting(cfg, "dynamic_sampling"):      # and DAPO's groups of equal scores
        group_ok, batch.valid, rollout_stats["groups/dropped"] = dynamic_sampling(
            g_scores, group_ok, batch.valid, batch.k, world, rank)
    # 3. Targets: sequence advantages on the global batch, then this process's slice (token
    #    level: per token on this process's rows, over the critic's values if any); then the
    #    algorithm's selection of rows (RAFT keeps the best).
    batch, state, extra = targets(run, batch, rewards, group_ok, state)
    # 4.-5. Loss and optimizer steps: num_epochs x num_minibatches over the batch.
    totals = optimise(run, batch, step)
    run.scheduler.step()
    # 6. Log (global means; counts summed), evaluate, checkpoint.
    elapsed = time.perf_counter() - t0
    metrics = {**rollout_stats, "loss/policy": totals.pop("loss/policy"),
               "grad_norm": totals.pop("grad_norm"), **totals, **extra}
    log.step(step + 1, reduce_metrics(metrics, accelerator), elapsed,
             run.optimizer.param_groups[0]["lr"], batch.size * world)
    if cfg.log_completions_every and (step + 1) % cfg.log_completions_every == 0:
        log.completions(step + 1, completion_rows(batch, source.source_scores(), accelerator))
    if evaluate is not None and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
        log.eval(step + 1, evaluate(accelerator.unwrap_model(run.policy), rank, world, device))
    if (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps:
        save(run, step + 1, state)
    return state


def restore(run: Run, ckpt: Path) -> tuple[dict, int]:
    """Load checkpoint ``ckpt`` into the optimizer, scheduler, critic and batch source; return
    (algorithm state, step to continue from)."""
    state = checkpoint.load_checkpoint(ckpt, run.optimizer, run.scheduler)
    start = state.pop("step")
    if run.critic is not None:
        run.critic.load(checkpoint.state_dir(run.run_dir, run.critic.name, start))
    rank = run.accelerator.process_index
    run.source.load_state_dict({name: checkpoint.load_process_state(run.run_dir, name, start, rank)
                                for name in run.source.state_dict()})
    return state, start


def targets(run: Run, batch, rewards, group_ok, state: dict):
    """Stage 3 from the global rewards [B]: this process's advantages, one per sequence [b] (token
    level: per token [b, C], over the critic's sampling-time values if the algorithm has one),
    then the algorithm's selection of rows. Returns (batch, algorithm state, extra metrics)."""
    algo, cfg, extra = run.algo, run.cfg, {}
    world, rank = run.accelerator.num_processes, run.accelerator.process_index
    if algo.token_advantages is None:
        advantages, state = algo.advantages(rewards, batch.k, state, cfg)
        batch.advantages = (advantages * group_ok).view(world, -1)[rank]          # [b]
    else:
        if run.critic is not None:
            batch.values = run.critic.rollout_values(batch, cfg.micro_batch_size)  # [b, C]
        global_sum = functools.partial(run.accelerator.reduce, reduction="sum")
        advantages, batch.returns = algo.token_advantages(batch, cfg, global_sum)  # [b, C] each
        batch.advantages = advantages * group_ok.view(world, -1)[rank, :, None]
        if run.critic is not None:
            extra.update(run.critic.metrics(batch))
    if algo.select is not None:
        keep = algo.select(rewards, batch.k, cfg).view(world, -1)[rank]          # [b] bool
        batch = batch.select(keep.nonzero().squeeze(1))
    return batch, state, extra


def dynamic_sampling(scores, group_ok, valid, k: int, world: int, rank: int):
    """DAPO's dynamic sampling (arXiv 2503.14476 eq. 11) without refilling: the prompt groups whose
    k scores [B] are all equal get zero advantage (``group_ok``) and leave the loss's item counts
    (``valid`` [b] False: ``Algorithm.count`` of the GRPO family skips them). Deviation: DAPO
    samples more prompts until the batch is full; here the step trains on fewer groups (rows stay
    in place, so every process keeps its micro-batches and 1 process = 2 processes).
    Returns (group_ok [B], valid [b], number of groups dropped)."""
    informative = losses.informative_groups(scores, k)                      # [B]
    return (group_ok & informative, valid & informative.view(world, -1)[rank],
            (~informative).sum() / k)


def optimise(run: Run, batch, step: int) -> dict[str, float]:
    """Stages 4-5 over one batch: num_epochs passes, each split into num_minibatches optimizer
    steps, each minibatch run in micro-batches (whole groups for grouped losses); returns the
    loss statistics averaged over the updates."""
    algo, cfg, accelerator = run.algo, run.cfg, run.accelerator
    world, device = accelerator.num_processes, accelerator.device
    group = batch.k if algo.grouped else 1
    # Micro-batches of whole prompt groups (the forward packs each group into one row) where
    # rows are still in groups (no selection, one minibatch) and the sizes divide evenly.
    whole_groups = (algo.select is None and cfg.num_minibatches == 1
                    and cfg.micro_batch_size % batch.k == 0 and batch.size % batch.k == 0)
    packed = batch.k if whole_groups else group
    totals, n_updates = {}, cfg.num_epochs * cfg.num_minibatches
    reuse = n_updates > 1
    plan = [[(minibatch, micro_batches(batch, minibatch, packed, cfg.micro_batch_size))
             for minibatch in minibatch_rows(batch.size, group, cfg, step, epoch)]
            for epoch in range(cfg.num_epochs)]
    if reuse and batch.logprobs is not None and (run.compute != torch.float32
                                                 or cfg.dtype != "float32"):
        batch.logprobs = behaviour_logprobs(run, batch, [m for _, ms in plan[0] for m in ms])
    for epoch in range(cfg.num_epochs):
        for minibatch, micro in plan[epoch]:
            # 4. Loss: micro-batches sorted by length, summed, divided by the number of
            #    sequences or completion tokens in the minibatch over all processes.
            count = algo.count(batch, minibatch, cfg)
            normaliser = max(accelerator.reduce(torch.tensor(float(count), device=device),
                                                reduction="sum").item(), 1.0) / world  # >= 1 item
            for i, rows in enumerate(micro):
                mb = batch.select(rows)
                with no_sync(accelerator, run.trained, sync=i == len(micro) - 1):
                    with precision.autocast(run.compute, device):
                        token_lp = completion_logprobs(run.policy, mb.prompt_ids, mb.prompt_mask,
                                                       mb.completion_ids, mb.completion_mask,
                                                       cfg.temperature)        # [m, C]
                    old_lp = (mb.logprobs if reuse and mb.logprobs is not None
                              else token_lp.detach())                          # ratio 1 if used once
                    values = None if run.critic is None else run.critic.values(mb)  # [m, C]
                    per_item, stats = algo.loss(token_lp, old_lp, values, mb, cfg)
                    accelerator.backward(losses.aggregate(per_item, normaliser))
                for name, value in {"loss/policy": per_item, **stats}.items():
                    totals[name] = totals.get(name, 0.0) + losses.aggregate(
                        value.detach(), normaliser).item() / n_updates
            # 5. Optimizer step: clip (each trained model, the policy's norm is logged), AdamW.
            norms = [accelerator.clip_grad_norm_(m.parameters(), cfg.max_grad_norm)
                     for m in run.trained] if cfg.max_grad_norm > 0 else []
            grad_norm = norms[0] if norms else torch.tensor(float("nan"))
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(grad_norm) / n_updates
    return totals


def behaviour_logprobs(run: Run, batch, micro: list[torch.Tensor]) -> torch.Tensor:
    """[b, C] "old" log-probs of a reused batch through the training forward (its precision,
    the first pass's micro-batches ``micro``, no gradients) where the sampler's differ from it by
    more than float32 round-off (bf16): the first update's importance ratio is then exactly 1."""
    out = torch.zeros_like(batch.logprobs)
    with torch.no_grad(), precision.autocast(run.compute, run.accelerator.device):
        for rows in micro:
            mb = batch.select(rows)
            out[rows, :mb.completion_ids.shape[1]] = completion_logprobs(
                run.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids,
                mb.completion_mask, run.cfg.temperature)                       # [m, C']
    return out


def adamw(params: list, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, with the fused kernel (one pass over each tensor; ~4x faster than the default
    per-op path on CPU) where every parameter is a CPU or CUDA float tensor."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def build_sources(cfg: TrainConfig, tokenizer, ref_model, reward, eval_reward, world: int):
    """(batch source, held-out evaluator or None) for the run's data kind."""
    sandbox = sandbox_limits(cfg, hide=(cfg.output_dir,))
    reward_specs = (list(cfg.rewards), cfg.reward_weights and list(cfg.reward_weights), sandbox)
    training_reward = functools.cache(lambda: reward or rewards_from_specs(*reward_specs))
    source = build_source(cfg, tokenizer, ref_model, training_reward, world)
    if not cfg.eval_every:
        return source, None
    if eval_reward is None:
        eval_reward = (rewards_from_specs(list(cfg.eval_rewards), None, sandbox) if cfg.eval_rewards
                       else training_reward())
    rows = load_prompt_rows(cfg, cfg.eval_dataset) if cfg.eval_dataset else source.prompt_rows()
    return source, HeldOutEval(cfg, rows, tokenizer, eval_reward)


def save(run: Run, step: int, state: dict) -> None:
    """Checkpoint ``step``: every process's batch-source state and the critic first, so that a
    policy checkpoint (written last, atomically) always has them."""
    accelerator, run_dir = run.accelerator, run.run_dir
    for name, part in run.source.state_dict().items():
        checkpoint.save_process_state(run_dir, name, step, accelerator.process_index, part)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if run.critic is not None:
            run.critic.save(checkpoint.state_dir(run_dir, run.critic.name, step))
        checkpoint.save_checkpoint(run_dir, step, accelerator.unwrap_model(run.policy),
                                   run.tokenizer, run.optimizer, run.scheduler, state,
                                   to_dict(run.cfg))
        checkpoint.prune(run_dir, run.cfg.save_total_limit)
    accelerator.wait_for_everyone()


def minibatch_rows(n_rows: int, group: int, cfg: TrainConfig, step: int, epoch: int
                   ) -> list[torch.Tensor]:
    """Row indices of each minibatch of one pass: all rows in order if there is one minibatch,
    else a seeded shuffle of whole groups of ``group`` rows (same on every process) split into
    num_minibatches near-equal parts. Under data parallelism each process shuffles its own rows:
    the global minibatches then differ from a 1-process run's (same distribution, not the same sets)."""
    if cfg.num_minibatches == 1:
        return [torch.arange(n_rows)]
    gen = seeding.generator(cfg.seed, "minibatch", step, epoch)
    parts = torch.randperm(n_rows // group, generator=gen).tensor_split(cfg.num_minibatches)
    return [(part[:, None] * group + torch.arange(group)).flatten() for part in parts]


def micro_batches(batch, rows: torch.Tensor, group: int, size: int) -> list[torch.Tensor]:
    """``rows`` sorted by length (whole groups of ``group`` rows together, by their longest) and
    split into micro-batches of ``size`` rows: less padding per forward pass."""
    # Host on purpose: row bookkeeping (the indices select rows of a device batch, as CUDA allows).
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
