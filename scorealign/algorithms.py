"""Which estimator each algorithm uses: a plain dict from name to pure functions.

``advantages(rewards [B], k, state) -> (advantages [B], state)`` runs on the GLOBAL batch (all
processes), ``state`` being a small dict saved in checkpoints. ``loss(seq_logprobs [b],
advantages [b]) -> [b]`` runs per micro-batch and returns one value per sequence; the loop
normalises by the number of sequences in the optimisation batch. Adding an algorithm = one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import losses


@dataclass(frozen=True)
class Algorithm:
    advantages: Callable  # (rewards [B], k, state: dict, cfg) -> (advantages [B], state)
    loss: Callable        # (seq_logprobs [b], advantages [b]) -> per-sequence loss [b]


def _vanilla_pg(rewards, k, state, cfg):
    return losses.vanilla_pg_advantages(rewards), state


def _reinforce_baseline(rewards, k, state, cfg):
    adv, baseline, count = losses.moving_average_baseline(
        rewards, state.get("baseline", 0.0), state.get("count", 0), cfg.baseline_decay)
    return adv, {**state, "baseline": baseline, "count": count}


def _rloo(rewards, k, state, cfg):
    return losses.rloo_advantages(rewards, k), state


ALGORITHMS: dict[str, Algorithm] = {
    "pg": Algorithm(_vanilla_pg, losses.policy_gradient_loss),
    "reinforce": Algorithm(_reinforce_baseline, losses.policy_gradient_loss),
    "rloo": Algorithm(_rloo, losses.policy_gradient_loss),
}
