"""Critics: extra models an algorithm trains next to the policy (``Critic``); PPO's value model.

``Critic`` is all the loop knows: it puts ``model`` in the optimizer, ``accelerator.prepare``,
gradient clipping and no_sync like the policy, asks for sampling-time ``rollout_values`` (stored on
the batch as its critic fields ``values`` / ``returns``), for ``values`` with grad in the loss, and
saves / loads it next to each policy checkpoint (``checkpoints/{name}-step-N``).

PPO's value model V(x, y_<t): a separate copy of the policy's transformer body, scalar head.

Why a separate copy of the policy, and not a value head on the policy itself or a critic built from
a reward model (the two choices in RLHF-PPO code bases, arXiv 2203.02155 / 2402.14740):
- The reward source here is often not a model (a Python function, unit tests, a language check),
  so there is no reward model to start a critic from; the initial policy is always there, reads
  the same tokens with the same tokenizer, and already represents the prompts.
- Separate parameters keep the policy's update exactly the policy gradient: a shared body would
  add value-loss gradients to the policy through a ``vf_coef`` knob, so e.g. PPO with lambda = 1,
  gamma = 1, no clipping and V = 0 would no longer equal vanilla PG. The saved policy also stays
  a plain causal LM (``from_pretrained`` works on ``final/``), with no extra head to strip.
- The cost is memory: PPO keeps four models resident (policy, reference, value model, and the
  reward model if the reward is one) plus AdamW state for two models: the burden 2402.14740
  cites against PPO.
The head is zero-initialised, so V = 0 at the start (the first updates are plain PG plus a
baseline being learned) and building the value model consumes no random numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from ..core.batch import Rollout
from ..core.io import atomic_dir
from ..core.models import DTYPES, disable_dropout, resolve_model_path
from ..engine.rollout import position_ids
from ..errors import ConfigError

Tensor = torch.Tensor


class Critic(Protocol):
    """Extra trained model(s) of an algorithm (PPO's value model): the loop treats ``model`` as it
    treats the policy (optimizer, prepare, clipping, no_sync) and checkpoints it with save / load."""

    name: str                   # checkpoint directory prefix: checkpoints/{name}-step-N
    model: torch.nn.Module      # the trained module; the loop replaces it by its prepared wrapper

    def values(self, batch: Rollout) -> Tensor:
        """Per-token values [b, C] with grad (0 on padding)."""

    def rollout_values(self, batch: Rollout, micro_batch_size: int) -> Tensor:
        """Sampling-time values [b, C], no grad."""

    def metrics(self, batch: Rollout) -> dict[str, float]:
        """Statistics of the critic on a batch with its critic fields set."""

    def save(self, out: Path) -> None:
        """Write the weights to directory ``out`` (atomically)."""

    def load(self, out: Path) -> None:
        """Restore the weights written by ``save`` in place."""


class ValueModel(torch.nn.Module):
    """V(x, y_<t) for every position: transformer body [B, L, H] -> linear head -> [B, L]."""

    def __init__(self, body: torch.nn.Module, hidden_size: int):
        super().__init__()
        self.body = body
        self.head = torch.nn.Linear(hidden_size, 1, dtype=torch.float32)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask,
                           position_ids=position_ids).last_hidden_state        # [B, L, H]
        return self.head(hidden.float()).squeeze(-1)                            # [B, L]


def load_value_model(path: str, cfg) -> ValueModel:
    """A value model on a copy of the body of the (initial) policy at ``path``; dropout off."""
    from transformers import AutoModel

    body = AutoModel.from_pretrained(path, dtype=DTYPES[cfg.dtype],
                                     trust_remote_code=cfg.trust_remote_code)
    return ValueModel(disable_dropout(body), body.config.hidden_size).train()


def token_values(value_model, batch: Rollout) -> Tensor:
    """V(x, y_<t) for each completion token t: the value of the state before y_t is emitted (the
    positions whose logits give log pi(y_t|...)). [B, C], 0 on padding; grad if enabled."""
    ids, mask = batch.input_ids(), batch.attention_mask()                      # [B, P + C]
    values = value_model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))
    return values[:, batch.prompt_ids.shape[1] - 1:-1] * batch.completion_mask


@torch.no_grad()
def rollout_values(value_model, batch: Rollout, micro_batch_size: int) -> Tensor:
    """Sampling-time values of the whole batch, in micro-batches: [B, C] (no grad)."""
    width = batch.completion_ids.shape[1]
    parts = [token_values(value_model, batch.select(rows))
             for rows in torch.arange(batch.size).split(micro_batch_size)]
    return torch.cat([F.pad(v, (0, width - v.shape[1])) for v in parts])


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var(G - V) / Var(G) over completion tokens: 1 = perfect critic, 0 = no better than a
    constant, < 0 worse; 0 when the returns are constant. values, returns, mask: [B, C]."""
    keep = mask.bool()
    var_returns = returns[keep].var(unbiased=False)
    if not keep.any() or var_returns == 0:
        return 0.0
    return float(1.0 - (returns[keep] - values[keep]).var(unbiased=False) / var_returns)


def save_value_model(value_model: ValueModel, out: Path) -> None:
    """Value model weights (body and head) as one safetensors file, atomically."""
    from safetensors.torch import save_model

    with atomic_dir(out) as tmp:
        save_model(value_model, str(tmp / "value_model.safetensors"))


def load_value_state(value_model: ValueModel, out: Path) -> None:
    """Restore the weights written by ``save_value_model`` in place."""
    from safetensors.torch import load_model

    path = out / "value_model.safetensors"
    if not path.is_file():
        raise ConfigError(f"--resume: PPO checkpoint has no value model ('{path}' missing)")
    load_model(value_model, str(path))


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (``accelerator.prepare``)."""
    return getattr(model, "module", model)


class ValueCritic:
    """PPO's critic: a ``ValueModel``, saved as ``checkpoints/value-step-N/value_model.safetensors``."""

    name = "value"

    def __init__(self, model: ValueModel):
        self.model = model

    def values(self, batch: Rollout) -> Tensor:
        return token_values(self.model, batch)                                  # [b, C]

    def rollout_values(self, batch: Rollout, micro_batch_size: int) -> Tensor:
        return rollout_values(self.model, batch, micro_batch_size)              # [b, C]

    def metrics(self, batch: Rollout) -> dict[str, float]:
        return {"explained_variance": explained_variance(batch.values, batch.returns,
                                                         batch.completion_mask)}

    def save(self, out: Path) -> None:
        save_value_model(_unwrap(self.model), out)

    def load(self, out: Path) -> None:
        load_value_state(_unwrap(self.model), out)


def value_critic(cfg, run_dir: Path) -> ValueCritic:
    """PPO's critic factory: a value model on the body of the initial policy ``cfg.model``."""
    return ValueCritic(load_value_model(resolve_model_path(cfg.model, run_dir, cfg.seed, False), cfg))
