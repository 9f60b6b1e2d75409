"""`scorealign sft`: supervised fine-tuning, loss on completion tokens only.

    loss = -(1 / #completion tokens) * sum_t log pi(y_t | x, y_<t)      (losses.nll_loss)

Data: ``prompt/completion`` rows (strings, or message lists for both) or conversational
``messages`` rows, whose last assistant turn is the completion and every turn before it the
prompt (TRL's formats; ``data.load_sft``). The prompt is tokenized exactly as for sampling (chat
template with the generation prompt), the completion ends with EOS (or the chat template's
end-of-turn), so the model learns to stop. Only the final assistant turn is trained on.

SFT is the ``sft`` entry of the shared loop (``algorithms/registry.py``): this file only maps its own config
(epochs and batch size, the words SFT users think in) onto the loop's, and needs no reference
model. Loss averaged over the completion tokens of the global batch, as a causal-LM SFT step.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ..core.config import config_from_argv
from ..core.models import is_main_process
from ..data.formats import load_sft
from ..errors import ConfigError
from ..train import trl_names
from ..train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """`scorealign sft`: supervised fine-tuning on prompt/completion or messages rows."""

    TRL_NAMES = trl_names.SFT   # not a field (no annotation): TRL argument names, mapped or refused

    model: str = "tiny"  # local path or hub id; 'tiny' builds a random tiny Llama in the run dir
    trust_remote_code: bool = False  # allow custom modelling code shipped with a model repo
    dtype: str = "float32"  # float32 | bfloat16 | float16 (half precision needs a GPU)
    dataset: str = ""  # prompt/completion or messages rows: .jsonl/.json/.parquet/.csv, dataset dir, hub id
    dataset_split: str = "train"  # split to read from a hub dataset or dataset dir
    max_prompt_tokens: int = 256  # longer prompts keep their last tokens
    max_completion_tokens: int = 256  # longer completions keep their first tokens (and lose EOS)
    num_epochs: float = 1.0  # passes over the dataset (optimizer steps = ceil(epochs * rows / batch_size); TRL's num_train_epochs; in `train`, num_epochs means rollout reuse instead)
    batch_size: int = 16  # examples per optimizer step, all processes together
    micro_batch_size: int = 8  # examples per forward/backward on each process
    lr: float = 1e-4  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 0  # linear warm-up steps
    lr_schedule: str = "constant"  # constant | linear | cosine (after warm-up)
    max_grad_norm: float = 1.0  # gradient clipping by global norm (0 disables)
    seed: int = 0  # data order and the tiny model
    output_dir: str = "runs/sft"  # run directory: config, metrics.jsonl, checkpoints, final model
    save_every: int = 25  # checkpoint every N steps and after the last (0: only after the last)
    save_total_limit: int | None = None  # keep only the newest N checkpoints (none: keep all)
    overwrite: bool = False  # a non-empty output_dir is moved aside to output_dir.old-<time> (default: refuse; see README, Reliability)
    report_to: tuple[str, ...] = ()  # trackers, through accelerate: tensorboard, wandb, mlflow, trackio (none: metrics.jsonl only)
    log_every: int = 10  # without a terminal: one plain progress line every N steps (and the first and last)
    tensorboard: bool = False  # deprecated: use report_to: [tensorboard] (true adds it)
    eval_every: int = 0  # every N steps: mean reward of one sample per eval prompt (needs eval_rewards)
    eval_prompts: int = 64  # how many eval prompts
    eval_dataset: str = ""  # prompts to evaluate on (default: the training prompts)
    eval_rewards: tuple[str, ...] = ()  # reward sources for evaluation

    def __post_init__(self):
        if not self.dataset:
            raise ConfigError("dataset: required (prompt/completion or messages rows)")
        if self.num_epochs <= 0:
            raise ConfigError(f"num_epochs={self.num_epochs}: must be > 0")
        if self.eval_every and not self.eval_rewards:
            raise ConfigError("eval_every: set eval_rewards (the reward sources to evaluate with)")


def to_train_config(cfg: SFTConfig, n_rows: int) -> TrainConfig:
    """The loop's config for ``cfg`` over a dataset of ``n_rows`` examples."""
    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(SFTConfig)
              if f.name in TrainConfig.__dataclass_fields__ and f.name != "num_epochs"}
    steps = max(1, math.ceil(cfg.num_epochs * n_rows / cfg.batch_size))
    return TrainConfig(**shared, algo="sft", k=1, prompts_per_step=cfg.batch_size, steps=steps,
                       log_completions_every=0,                 # dataset rows: nothing sampled
                       max_new_tokens=cfg.max_completion_tokens,
                       rewards=cfg.eval_rewards or TrainConfig.rewards)


def run_sft(cfg: SFTConfig, eval_reward=None) -> Path:
    """Train and return the run directory (final model in ``final/``)."""
    from ..train.loop import train

    n_rows = len(load_sft(cfg.dataset, cfg.dataset_split))
    return train(to_train_config(cfg, n_rows), eval_reward=eval_reward)


def main(argv: list[str]) -> int:
    """``scorealign sft CONFIG.yaml [--key value ...]``."""
    cfg = config_from_argv(SFTConfig, argv, "scorealign sft CONFIG.yaml [--key value ...]")
    if cfg is not None:
        run_dir = run_sft(cfg)
        if is_main_process():                               # once under torchrun / accelerate
            print(f"run directory: {run_dir}  (final model: {run_dir / 'final'})")
    return 0
