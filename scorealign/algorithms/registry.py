"""Which estimator each algorithm uses: a plain dict from name to pure functions.

What the loop (``train.py``) calls, per rollout step (stage 3):
  advantages(rewards [B], k, state, cfg) -> (advantages [B], state)
      sequence level, on the GLOBAL batch (all processes; ``rewards`` = R = r - beta * KL);
      ``state`` is a small JSON dict saved in checkpoints.
  token_advantages(batch, cfg) -> (advantages [b, C], returns [b, C])          (PPO only)
      replaces ``advantages``: per token, on this process's rows, from the value model's
      ``batch.values``; setting it makes the loop build and train a value model (``ppo.py``).
  select(rewards [B], k, cfg) -> keep [B] bool                                  (RAFT only)
      only the kept rows are trained on.
and per micro-batch of each of the num_epochs x num_minibatches optimisation passes (stage 4):
  loss(token_logprobs [m, C], old_logprobs [m, C], values [m, C] | None, mb, cfg)
      -> (loss, stats): one value per item, the item being a sequence ([m], unit 'sequence') or
      a completion token ([m, C], zero on padding, unit 'token'); ``stats`` are named per-item
      tensors of the same shape (``loss/policy`` defaults to the loss itself).
      ``old_logprobs`` are the sampling-time ``mb.logprobs``, or ``token_logprobs.detach()`` when
      the batch is used once (one epoch, one minibatch): the ratio is then exactly 1 and its
      gradient exactly the on-policy one. ``values`` are V(x, y_<t) with grad (PPO), else None.
The loop divides the summed per-item losses (and stats) by the number of items in the global
minibatch (``losses.aggregate``). Adding an algorithm = a few functions and one entry.

CoPG, DPO, IPO and SFT need no advantage: their losses are built from the CURRENT log-ratios
log pi/pi_ref (which is what lets CoPG learn from any scored samples without importance weights).
For them ``advantages`` is a 0/1 row weight (0 for groups whose reward was skipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import losses


@dataclass(frozen=True)
class Algorithm:
    advantages: Callable | None  # (rewards [B], k, state, cfg) -> (advantages [B], state)
    loss: Callable               # (token_lp [m, C], old_lp [m, C], values, mb, cfg) -> (loss, stats)
    unit: str = "sequence"       # the loss's item, also what it is averaged over: sequence | token
    token_advantages: Callable | None = None  # PPO: (batch, cfg) -> (adv [b, C], returns [b, C])
    select: Callable | None = None            # RAFT: (rewards [B], k, cfg) -> keep [B] bool
    grouped: bool = False    # the loss couples the k rows of a prompt: micro-batches hold whole groups
    reference: bool = True   # needs pi_ref (sft does not: no reference model is loaded)


# --- sequence-level policy gradient: vanilla PG, REINFORCE w/ baseline, RLOO (arXiv 2402.14740)


def _vanilla_pg(rewards, k, state, cfg):
    return losses.vanilla_pg_advantages(rewards), state


def _reinforce_baseline(rewards, k, state, cfg):
    adv, baseline, count = losses.moving_average_baseline(
        rewards, state.get("baseline", 0.0), state.get("count", 0), cfg.baseline_decay)
    return adv, {**state, "baseline": baseline, "count": count}


def _rloo(rewards, k, state, cfg):
    return losses.rloo_advantages(rewards, k), state


def _sequence_policy_gradient_loss(token_lp, old_lp, values, mb, cfg):
    """-A * rho per sequence, rho = pi(y|x) / pi_old(y|x) over the whole completion (one action,
    as in 2402.14740), clipped to 1 +- clip_eps as in PPO. One pass over the batch: rho == 1 and
    the gradient is exactly REINFORCE's -A * grad log pi(y|x) (``losses.policy_gradient_loss``).
    Deviation: the paper is on-policy; reusing a batch (num_epochs > 1) is our addition."""
    mask = mb.completion_mask
    seq_lp, old_seq_lp = (token_lp * mask).sum(-1), (old_lp * mask).sum(-1)      # [m]
    loss, clipped = losses.clipped_surrogate_loss(seq_lp, old_seq_lp, mb.advantages, cfg.clip_eps)
    return loss, {"clip_frac": clipped, "approx_kl": losses.approx_kl(seq_lp, old_seq_lp)}


# --- PPO, the RLHF baseline of 2402.14740 (arXiv 1707.06347, 2203.02155): token-level actions


def _ppo_advantages(batch, cfg):
    """Per-token rewards (KL penalty per token, score at the last token), then GAE(gamma, lam)
    over the sampling-time values. -> (advantages [b, C], returns [b, C])."""
    rewards = losses.token_level_rewards(batch.scores, batch.logprobs, batch.ref_logprobs,
                                         batch.completion_mask, cfg.beta)  # [b, C]
    return losses.gae_advantages(rewards, batch.values, batch.completion_mask, cfg.gamma, cfg.lam)


def _ppo_loss(token_lp, old_lp, values, mb, cfg):
    """Clipped surrogate per token + clipped value loss per token, both averaged over tokens.
    The value model has its own parameters, so the sum needs no value coefficient: each model
    only receives the gradient of its own term (a coefficient would just rescale Adam's input)."""
    mask = mb.completion_mask
    policy, clipped = losses.clipped_surrogate_loss(token_lp, old_lp, mb.advantages, cfg.clip_eps)
    value = losses.clipped_value_loss(values, mb.values, mb.returns, cfg.value_clip_eps)
    return (policy + value) * mask, {                                          # [m, C] each
        "loss/policy": policy * mask, "value_loss": value * mask, "clip_frac": clipped * mask,
        "approx_kl": losses.approx_kl(token_lp, old_lp) * mask}


# --- RAFT, reward-ranked fine-tuning (Dong et al., arXiv 2304.06767)


def _raft_weights(rewards, k, state, cfg):
    """Every kept completion is an SFT target of weight 1 (the loop zeroes skipped groups)."""
    return torch.ones_like(rewards), state


def _raft_select(rewards, k, cfg):
    """Best ``raft_top_m`` of the k completions of each prompt by R = r - beta * KL (with
    beta = 0: the paper's plain reward ranking; beta > 0: its KL-regularised variant)."""
    return losses.raft_selection(rewards, k, cfg.raft_top_m)


def _raft_loss(token_lp, old_lp, values, mb, cfg):
    """SFT on the kept completions: NLL per token, averaged over the kept completions' TOKENS
    (as a standard causal-LM SFT step, which is what the paper runs), not over sequences."""
    mask = mb.completion_mask
    nll = losses.nll_loss(token_lp, mask) * mb.advantages[:, None]             # [m, C]
    return nll, {"clip_frac": torch.zeros_like(nll),
                 "approx_kl": losses.approx_kl(token_lp, old_lp) * mask}


# --- CoPG (arXiv 2406.19185), DPO (arXiv 2305.18290), IPO (arXiv 2310.12036), SFT


def _row_weights(rewards, k, state, cfg):
    """No advantage: each row has weight 1 (the loop zeroes the groups it skips)."""
    return torch.ones_like(rewards), state


def _group_logratios(token_lp, mb, average: bool = False):
    """log pi(y|x)/pi_ref(y|x) per completion (summed, or averaged over its tokens), one row per
    group: [m, C] -> [m / k, k]."""
    return losses.sequence_logratio(token_lp, mb.ref_logprobs, mb.completion_mask,
                                    average).view(-1, mb.k)


def _per_row(per_group, mb):
    """[m / k] group losses, zero for skipped groups, -> [m]: each row carries its group's loss, so
    the loop's mean over rows is the mean over groups."""
    return (per_group * mb.advantages.view(-1, mb.k)[:, 0]).repeat_interleave(mb.k)


def _copg_loss(token_lp, old_lp, values, mb, cfg):
    """CoPG, paper eq. (7) over the k(k-1)/2 pairs of each group (``losses.copg_loss``), averaged
    over groups. R_beta uses the current log-ratios, so reused and replayed batches need no
    importance ratio. On-policy, one pass: gradient = k x RLOO's (RLOO averages over sequences,
    CoPG over groups: the eq. (7) gradient of one pair is the RLOO(2) gradient summed over it)."""
    logratios = _group_logratios(token_lp, mb)                                 # [m/k, k]
    per_group = losses.copg_loss(logratios, mb.scores.view(-1, mb.k), cfg.beta)  # [m/k]
    return _per_row(per_group, mb), {"logratio": logratios.detach().flatten()}


def _preference_loss(token_lp, old_lp, values, mb, cfg):
    """DPO (sigmoid) or IPO on (chosen, rejected) groups, h = logratio(chosen) - logratio(rejected);
    IPO's h from summed log-probs (the paper) or per-token averages (TRL, ``ipo_average_logprobs``)."""
    average = cfg.algo == "ipo" and cfg.ipo_average_logprobs
    logratios = _group_logratios(token_lp, mb, average)                        # [m/2, 2]
    h = logratios[:, 0] - logratios[:, 1]                                      # [m/2]
    per_pair = losses.dpo_loss(h, cfg.beta) if cfg.algo == "dpo" else losses.ipo_loss(h, cfg.beta)
    return _per_row(per_pair, mb), {
        "margin": h.detach().repeat_interleave(2),
        "accuracy": (h.detach() > 0).float().repeat_interleave(2),
        "logratio": logratios.detach().flatten()}


def _sft_loss(token_lp, old_lp, values, mb, cfg):
    """SFT: NLL of the completion tokens only, averaged over completion tokens (not sequences)."""
    return losses.nll_loss(token_lp, mb.completion_mask) * mb.advantages[:, None], {}


ALGORITHMS: dict[str, Algorithm] = {
    "pg": Algorithm(_vanilla_pg, _sequence_policy_gradient_loss),
    "reinforce": Algorithm(_reinforce_baseline, _sequence_policy_gradient_loss),
    "rloo": Algorithm(_rloo, _sequence_policy_gradient_loss),
    "ppo": Algorithm(None, _ppo_loss, unit="token", token_advantages=_ppo_advantages),
    "raft": Algorithm(_raft_weights, _raft_loss, unit="token", select=_raft_select),
    "copg": Algorithm(_row_weights, _copg_loss, grouped=True),
    "dpo": Algorithm(_row_weights, _preference_loss, grouped=True),
    "ipo": Algorithm(_row_weights, _preference_loss, grouped=True),
    "sft": Algorithm(_row_weights, _sft_loss, unit="token", reference=False),
}
