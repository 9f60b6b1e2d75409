"""`scorealign train`'s config: one typed, frozen dataclass (parsing: ``core.config``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..algorithms.registry import ALGORITHMS, LOSS_TYPES, Algorithm, check_config
from ..core.config import DTYPE_CHOICES, Block, RewardBlock
from ..core.precision import PRECISIONS
from ..errors import ConfigError
from . import trl_names
from .tracking import check_trackers


@dataclasses.dataclass(frozen=True)
class TrainModelsData(Block):
    """`scorealign train`'s models and data: the fields before its reward block."""

    # --- models
    model: str = "tiny"  # policy: local path or hub id; 'tiny' builds a random tiny Llama in the run dir
    ref_model: str | None = None  # frozen reference pi_ref (default: the initial `model`)
    trust_remote_code: bool = False  # allow custom modelling code shipped with a model repo
    dtype: str = "float32"  # weights: float32 | bfloat16 | float16 (pure half-precision weights and AdamW state; see precision)
    precision: str = "fp32"  # arithmetic: fp32 | bf16 (bf16 rollout, reference and training forward over float32 weights and AdamW state, where the device has fast bf16, else fp32 with a note) | auto (bf16 only where fast)
    lora_r: int = 0  # LoRA rank (0: full fine-tuning); needs peft; pi_ref = the base weights, adapter off
    lora_alpha: float = 16.0  # LoRA alpha (update scale alpha / r)
    lora_dropout: float = 0.0  # dropout on the LoRA branch (0 keeps log-probs reproducible)
    lora_target_modules: tuple[str, ...] = ("all-linear",)  # module names to adapt, or all-linear (not lm_head)
    # --- data
    dataset: str = "toy"  # .jsonl/.json/.parquet/.csv, saved dataset dir, hub id, or 'toy': prompts (online), scored completions (copg offline), pairs (dpo, ipo), demonstrations (sft)
    dataset_split: str = "train"  # split to read from a hub dataset or dataset dir
    prompt_field: str = "prompt"  # column holding the prompt (a string or chat messages)
    max_prompt_tokens: int = 256  # longer prompts keep their last tokens


@dataclasses.dataclass(frozen=True)
class TrainConfig(RewardBlock, TrainModelsData):
    """`scorealign train`: alignment on one shared loop: online (pg, reinforce, rloo, ppo, raft,
    copg), offline or mixed (copg), from preference pairs (dpo, ipo) or demonstrations (sft)."""

    TRL_NAMES = trl_names.TRAIN   # not a field (no annotation): TRL argument names, mapped or refused

    # Field order: TrainModelsData (models, data), RewardBlock (core.config: rewards,
    # reward_weights, on_reward_error, reward_sandbox, reward_timeout, reward_memory_mb), then:
    on_reward_error: str = "fail"  # fail | skip (skipped rows drop their prompt's group this step)
    # --- algorithm
    algo: str = "rloo"  # pg | reinforce | rloo | ppo | raft | copg | dpo | ipo | sft
    k: int = 4  # completions per prompt (rloo, copg: k >= 2; raft: k > raft_top_m; dpo, ipo: always 2; sft: 1)
    source: str = "online"  # copg: online | offline (dataset of scored completions) | mixed (online + replay buffer)
    replay_size: int = 256  # mixed: prompt groups kept in the replay buffer, all processes together (FIFO)
    replay_ratio: float = 0.5  # mixed: fraction of each step's prompt groups drawn from the replay buffer
    ipo_average_logprobs: bool = False  # ipo: per-token averaged log-ratios as TRL's loss_type=ipo (default: summed, as the IPO paper)
    beta: float = 0.05  # KL coefficient: R = r - beta * sum_t log(pi/pi_ref); dpo: its beta; ipo: its tau
    baseline_decay: float | None = None  # reinforce: None = mean of all past rewards, else EMA decay
    whiten_rewards: bool = False  # standardise rewards over the global batch before advantages (not ppo)
    gamma: float = 1.0  # ppo: GAE discount over completion tokens
    lam: float = 0.95  # ppo: GAE lambda (1 = Monte-Carlo returns minus the value baseline)
    value_clip_eps: float | None = None  # ppo: clip V to +- eps of its sampling-time value, in reward units (none: off)
    raft_top_m: int = 1  # raft: completions kept per prompt, best rewards first (ties: lowest index)
    # --- GRPO family and REINFORCE++ (docs/algorithms.md); None: the algorithm's paper value
    loss_type: str | None = None  # grpo family: grpo | bnpo | dr_grpo | dapo, as TRL names them (default: grpo; dapo for algo=dapo)
    scale_rewards: str = "group"  # grpo family: divide A by the std of the group's rewards | the batch's | none (Dr. GRPO)
    kl_loss_coef: float = 0.0  # KL(pi || pi_ref) in the loss, k3 estimator per token, times this (GRPO paper: 0.04 with beta: 0)
    clip_eps_low: float | None = None  # grpo family, reinforce++: ratio clipped below at 1 - eps (default: clip_eps; gspo 3e-4)
    clip_eps_high: float | None = None  # grpo family, reinforce++: ratio clipped above at 1 + eps (default: clip_eps; dapo 0.28; gspo 4e-4)
    dynamic_sampling: bool | None = None  # drop prompt groups whose scores are all equal from the step (default: on for dapo)
    overlong_buffer: int = 0  # DAPO's soft overlong penalty over the last N tokens before max_new_tokens (0: off)
    overlong_penalty: float = 1.0  # the overlong penalty at max_new_tokens (DAPO: 1)
    mask_truncated_completions: bool = False  # grpo family, reinforce++: completions cut at max_new_tokens leave the loss (DAPO)
    # --- sampling
    max_new_tokens: int = 32  # completion length limit
    temperature: float = 1.0  # sampling temperature (log-probs use logits / temperature too)
    top_p: float = 1.0  # nucleus sampling threshold
    # --- optimisation
    steps: int = 50  # rollout steps; each samples a fresh batch and does num_epochs * num_minibatches optimizer steps
    prompts_per_step: int = 8  # prompts per step summed over all processes (batch = prompts_per_step * k)
    micro_batch_size: int = 8  # sequences per forward/backward on each process (accumulation is derived)
    num_epochs: int = 1  # optimisation passes over each rollout batch (> 1 reuses it with an importance ratio; TRL's num_iterations, not dataset passes: steps counts batches)
    num_minibatches: int = 1  # optimizer steps per pass: the rollout batch is shuffled and split this many ways
    clip_eps: float | None = 0.2  # importance-ratio clip 1 +- eps, active once a batch is reused (none disables)
    lr: float = 1e-5  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 0  # linear warm-up steps
    lr_schedule: str = "constant"  # constant | linear | cosine (after warm-up)
    max_grad_norm: float = 1.0  # gradient clipping by global norm (0 disables)
    seed: int = 0  # seeds the tiny model, prompt order and sampling
    # --- output
    output_dir: str = "runs/train"  # run directory: config, metrics.jsonl, checkpoints, final model
    save_every: int = 25  # checkpoint every N steps and after the last (0: only after the last)
    save_total_limit: int | None = None  # keep only the newest N checkpoints (none: keep all)
    overwrite: bool = False  # a non-empty output_dir is moved aside to output_dir.old-<time> (default: refuse; see README, Reliability)
    report_to: tuple[str, ...] = ()  # trackers, through accelerate: tensorboard, wandb, mlflow, trackio (none: metrics.jsonl only; README, Tracking)
    log_every: int = 10  # without a terminal: one plain progress line every N steps (and the first and last)
    log_completions_every: int = 10  # a table of sample completions to completions.jsonl and the trackers every N steps (0: off)
    tensorboard: bool = False  # deprecated: use report_to: [tensorboard] (true adds it)
    # --- held-out evaluation (eval.jsonl)
    eval_every: int = 0  # every N steps (and before the first and after the last): mean reward of one policy sample per eval prompt (0: off)
    eval_prompts: int = 64  # how many eval prompts (the first of eval_dataset)
    eval_dataset: str = ""  # prompts to evaluate on (default: the training prompts)
    eval_rewards: tuple[str, ...] = ()  # reward sources for evaluation (default: `rewards`)

    def __post_init__(self):
        super().__post_init__()     # the shared blocks' checks (core.config.check_blocks)
        choices = {"algo": tuple(ALGORITHMS), "source": ("online", "offline", "mixed"),
                   "lr_schedule": ("constant", "linear", "cosine"), "dtype": DTYPE_CHOICES,
                   "loss_type": (None, *LOSS_TYPES), "scale_rewards": ("group", "batch", "none"),
                   "precision": PRECISIONS}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                allowed = [a for a in allowed if a is not None]
                raise ConfigError(f"{key}={getattr(self, key)!r}: choose one of {', '.join(allowed)}")
        if self.precision != "fp32" and self.dtype != "float32":
            raise ConfigError(f"precision={self.precision} computes in bf16 over float32 weights: "
                              f"use dtype=float32 (dtype={self.dtype} holds the weights themselves "
                              "in half precision)")
        if not 0.0 <= self.replay_ratio < 1.0:
            raise ConfigError(f"replay_ratio={self.replay_ratio}: must be in [0, 1)")
        for key in ("k", "steps", "prompts_per_step", "micro_batch_size", "max_new_tokens",
                    "num_epochs", "num_minibatches", "raft_top_m", "replay_size", "eval_prompts",
                    "log_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: must be >= 1")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"temperature={self.temperature}, top_p={self.top_p}: temperature "
                              "must be > 0 and top_p in (0, 1]")
        if self.lora_r < 0:
            raise ConfigError(f"lora_r={self.lora_r}: must be >= 0 (0 = full fine-tuning)")
        if self.overlong_buffer and not 0 < self.overlong_buffer <= self.max_new_tokens:
            raise ConfigError(f"overlong_buffer={self.overlong_buffer}: must be in "
                              f"[0, max_new_tokens={self.max_new_tokens}]")
        if self.kl_loss_coef < 0:
            raise ConfigError(f"kl_loss_coef={self.kl_loss_coef}: must be >= 0")
        for key in ("clip_eps", "value_clip_eps", "clip_eps_low", "clip_eps_high"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ConfigError(f"{key}={getattr(self, key)}: must be > 0 (or none to disable)")
        for key in ("gamma", "lam"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{key}={getattr(self, key)}: must be in [0, 1]")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ConfigError(f"save_total_limit={self.save_total_limit}: must be >= 1 (or none "
                              "to keep every checkpoint)")
        check_trackers(self.report_to)
        check_config(self)          # the rules of the algorithm's registry entry

    @property
    def trackers(self) -> tuple[str, ...]:
        """``report_to`` without 'none', plus tensorboard for the deprecated ``tensorboard: true``."""
        names = tuple(t for t in self.report_to if t != "none")
        return names + (("tensorboard",) if self.tensorboard and "tensorboard" not in names
                        else ())

    @property
    def algorithm(self) -> Algorithm:
        """The registry entry of ``algo``."""
        return ALGORITHMS[self.algo]

    @property
    def group_size(self) -> int:
        """Rows per prompt group, by the algorithm's entry (k; 2 for pairs; 1 for demonstrations)."""
        return self.algorithm.group_size(self)

    @property
    def data_kind(self) -> str:
        """What a step's batch holds: online | mixed | scored | pairs | demonstrations."""
        return self.algorithm.data_kind(self)


def batch_summary(cfg: TrainConfig, world: int, trained_rows: int, run_dir: Path) -> str:
    """The batch arithmetic, stated once at the start."""
    g = cfg.group_size
    unit = cfg.algorithm.group_word.format(k=g)
    return (f"scorealign {cfg.algo} ({cfg.data_kind}): {world} process(es); batch "
            f"{cfg.prompts_per_step * g} sequences = {cfg.prompts_per_step} {unit}; "
            f"{cfg.num_epochs} epoch(s) x {cfg.num_minibatches} minibatch(es) of "
            f"{trained_rows // cfg.num_minibatches} sequences per process, micro-batches of "
            f"{cfg.micro_batch_size}; run dir {run_dir}")


def check_batch_arithmetic(cfg: TrainConfig, world: int) -> int:
    """Check that the batch splits evenly over processes and micro-batches; return the number of
    rows trained on per process and step (b = B / world, or the rows the algorithm selects)."""
    if cfg.prompts_per_step % world:
        raise ConfigError(f"prompts_per_step={cfg.prompts_per_step} must be divisible by the "
                          f"number of processes ({world})")
    local_batch = cfg.prompts_per_step // world * cfg.group_size
    if local_batch % cfg.micro_batch_size:
        raise ConfigError(f"per-process batch {local_batch} (prompts_per_step/processes * "
                          f"{'k' if cfg.group_size == cfg.k else cfg.group_size}) must be "
                          f"divisible by micro_batch_size={cfg.micro_batch_size}")
    kept = cfg.algorithm.rows_trained(cfg, local_batch)
    groups = kept // cfg.group_size if cfg.algorithm.grouped else kept
    if groups < cfg.num_minibatches:
        raise ConfigError(f"num_minibatches={cfg.num_minibatches}: more minibatches than the "
                          f"{groups} {'groups' if groups != kept else 'sequences'} trained on "
                          "per process and step")
    return kept
