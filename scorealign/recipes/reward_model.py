"""`scorealign reward-model`: a Bradley-Terry reward model trained on preference pairs.

    loss = -log sigmoid(r(x, y_w) - r(x, y_l))          (losses.bradley_terry_loss, REFERENCE §5)

r is ``AutoModelForSequenceClassification`` with ``num_labels = 1`` on top of a causal-LM
checkpoint (the score head is new), pooled at the last non-pad token. The loop is small and
explicit, separate from the policy loop (a different model class, no rollouts): shuffle pairs,
score chosen and rejected in one forward pass, AdamW step; after every epoch, held-out pairwise
accuracy = share of held-out pairs with r(y_w) > r(y_l) (a tie counts 1/2).

The text scored is built by ``rewards.classifier.reward_batch``, as ``rewards.ModelReward`` scores
(a test checks they agree), so the saved model (``output_dir/final``) scores through
``rewards.reward_from_spec("model:" + output_dir + "/final")`` exactly as it was trained.
Deviations from TRL's RewardTrainer: no margin term, no centring of rewards; ties are not counted
as correct. The held-out split is by pair (seeded), not by prompt.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from ..algorithms.losses import bradley_terry_loss
from ..core import rundir, seeding
from ..core.checkpoint import save_model
from ..core.config import config_from_argv, save_config
from ..core.io import atomic_write_text
from ..core.models import disable_dropout, quiet_transformers, resolve_model_path
from ..data.formats import load_preferences
from ..data.readers import Row
from ..errors import ConfigError
from ..rewards.classifier import load_classifier, reward_batch


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
    """`scorealign reward-model`: train a Bradley-Terry reward model on preference pairs."""

    model: str = "tiny"  # base causal LM: local path or hub id; 'tiny' builds a random tiny Llama in output_dir
    trust_remote_code: bool = False  # allow custom modelling code shipped with a model repo
    dataset: str = ""  # prompt/chosen/rejected pairs (TRL standard or conversational): file, dir or hub id (required)
    dataset_split: str = "train"  # split to read from a hub dataset or dataset dir
    eval_fraction: float = 0.1  # share of pairs held out (seeded) for pairwise accuracy
    max_length: int = 512  # tokens per prompt+completion text; longer texts keep their first tokens
    epochs: int = 1  # passes over the training pairs
    batch_size: int = 8  # pairs per optimizer step (2 * batch_size texts per forward pass)
    lr: float = 1e-5  # AdamW learning rate (constant)
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping by global norm (0 disables)
    seed: int = 0  # seeds the tiny model, the score head, the held-out split and the pair order
    output_dir: str = "runs/reward_model"  # config.yaml, metrics.jsonl, final/ (model + tokenizer)
    overwrite: bool = False  # a non-empty output_dir is moved aside to output_dir.old-<time> (default: refuse; see README, Reliability)

    def __post_init__(self):
        if not self.dataset:
            raise ConfigError("dataset: required (preference pairs with prompt, chosen, rejected)")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction={self.eval_fraction}: must be in (0, 1)")
        for key in ("max_length", "epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: must be >= 1")


def split_pairs(pairs: list[Row], eval_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(train, held-out): a seeded shuffle, ``ceil(eval_fraction * n)`` pairs held out."""
    n_eval = math.ceil(eval_fraction * len(pairs))
    if len(pairs) < 2 or n_eval >= len(pairs):
        raise ConfigError(f"{len(pairs)} preference pairs: too few to hold out "
                          f"eval_fraction={eval_fraction} and still train")
    order = list(range(len(pairs)))
    seeding.python_rng(seed, "reward_model", 0).shuffle(order)        # epochs are 1, 2, ...
    return [pairs[i] for i in order[n_eval:]], [pairs[i] for i in order[:n_eval]]


def load_reward_model(cfg: RewardModelConfig, device: str):
    """(sequence classifier with num_labels=1 and pad_token_id set, right-padding tokenizer)."""
    path = resolve_model_path(cfg.model, Path(cfg.output_dir), cfg.seed, is_main=True)
    torch.manual_seed(cfg.seed)                      # the new score head
    model, tokenizer = load_classifier(path, "model", cfg.trust_remote_code, num_labels=1)
    return disable_dropout(model).to(device), tokenizer   # dropout off, as in the policy loop


def pair_rewards(model, tokenizer, pairs: list[Row],
                 max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """r(x, y_w), r(x, y_l) for ``pairs`` from one forward pass over 2N texts -> [N], [N]."""
    batch = reward_batch(tokenizer, [p["prompt"] for p in pairs] * 2,
                         [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs],
                         max_length)                                     # [2N, L] right-padded
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in batch.items()}).logits  # [2N, 1]
    return logits[:, 0].float().split(len(pairs))


@torch.no_grad()
def evaluate(model, tokenizer, pairs: list[Row], cfg: RewardModelConfig) -> dict[str, float]:
    """Held-out Bradley-Terry loss, pairwise accuracy (ties count 1/2) and mean margin."""
    model.eval()
    chosen, rejected = (torch.cat(t) for t in zip(*(
        pair_rewards(model, tokenizer, pairs[i:i + cfg.batch_size], cfg.max_length)
        for i in range(0, len(pairs), cfg.batch_size))))
    margin = chosen - rejected                                           # [N]
    accuracy = ((margin > 0).float() + 0.5 * (margin == 0).float()).mean()
    return {"eval/loss": bradley_terry_loss(chosen, rejected).mean().item(),
            "eval/accuracy": accuracy.item(), "eval/margin": margin.mean().item()}


def train_reward_model(cfg: RewardModelConfig) -> dict[str, float]:
    """Train on ``cfg.dataset``, save ``output_dir/final``; return the last epoch's metrics."""
    quiet_transformers()
    run_dir = Path(cfg.output_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rundir.check_new_run(run_dir, cfg.overwrite)          # reads only; the inputs come first
    train_pairs, eval_pairs = split_pairs(load_preferences(cfg.dataset, cfg.dataset_split),
                                          cfg.eval_fraction, cfg.seed)
    with rundir.fresh_run(run_dir) as fresh:
        if cfg.model == "tiny":                            # built in the run directory
            fresh.claim(cfg.overwrite)
        model, tokenizer = load_reward_model(cfg, device)
        fresh.claim(cfg.overwrite)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    save_config(cfg, run_dir / "config.yaml")
    metrics_path = run_dir / "metrics.jsonl"
    atomic_write_text(metrics_path, "")
    print(f"scorealign reward-model: {len(train_pairs)} training pairs, {len(eval_pairs)} held "
          f"out; {cfg.epochs} epoch(s) of batches of {cfg.batch_size} pairs on {device}; "
          f"run dir {run_dir}")

    def log(row: dict) -> None:
        with open(metrics_path, "a") as f:
            f.write(json.dumps({k: round(v, 6) if isinstance(v, float) else v
                                for k, v in row.items()}) + "\n")
        print(f"  epoch {row['epoch']}: held-out accuracy {row['eval/accuracy']:.3f}  "
              f"loss {row['eval/loss']:.4f}  margin {row['eval/margin']:.3f}")

    log({"epoch": 0, "step": 0, **evaluate(model, tokenizer, eval_pairs, cfg)})  # untrained
    step = 0
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = list(range(len(train_pairs)))
        seeding.python_rng(cfg.seed, "reward_model", epoch).shuffle(order)
        losses, correct = [], []
        for start in range(0, len(order), cfg.batch_size):
            # 1. Score chosen and rejected of the batch in one forward pass: [b], [b].
            batch = [train_pairs[i] for i in order[start:start + cfg.batch_size]]
            chosen, rejected = pair_rewards(model, tokenizer, batch, cfg.max_length)
            # 2. Bradley-Terry loss, mean over pairs.
            loss = bradley_terry_loss(chosen, rejected).mean()
            # 3. Step: clip, AdamW.
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.item() * len(batch))
            correct.append((chosen > rejected).float().sum().item())
        # 4. Log training loss/accuracy and held-out metrics of this epoch.
        log({"epoch": epoch, "step": step, "loss/train": sum(losses) / len(order),
             "accuracy/train": sum(correct) / len(order),
             **evaluate(model, tokenizer, eval_pairs, cfg),
             "time/epoch_s": time.perf_counter() - t0})
    model.eval()
    save_model(model, tokenizer, run_dir / "final")
    final = json.loads(metrics_path.read_text().splitlines()[-1])
    print(f"held-out pairwise accuracy {final['eval/accuracy']:.3f} on {len(eval_pairs)} pairs; "
          f"reward model saved to {run_dir / 'final'} (use rewards: [model:{run_dir / 'final'}])")
    return final


def main(argv: list[str]) -> int:
    """``scorealign reward-model CONFIG.yaml [--key value ...]``."""
    cfg = config_from_argv(RewardModelConfig, argv,
                           "scorealign reward-model CONFIG.yaml [--key value ...]")
    if cfg is not None:
        train_reward_model(cfg)
    return 0
