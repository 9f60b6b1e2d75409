"""Everything the loop knows about an algorithm, in one place: ``ALGORITHMS``, name -> ``Algorithm``.

What the loop (``train/loop.py``) calls, per rollout step (stage 3):
  advantages(rewards [B], k, state, cfg) -> (advantages [B], state)
      sequence level, on the GLOBAL batch (all processes; ``rewards`` = R = r - beta * KL);
      ``state`` is a small JSON dict saved in checkpoints.
  token_advantages(batch, cfg, global_sum) -> (advantages [b, C], returns [b, C] | None)
      replaces ``advantages``: per token, on this process's rows. With a ``critic`` the loop first
      sets ``batch.values`` (the critic's sampling-time values); without one (a critic-free
      token-level method) ``batch.values`` is None. ``global_sum(t)`` sums a tensor over all
      processes (statistics over the GLOBAL batch, e.g. REINFORCE++'s normalisation).
  select(rewards [B], k, cfg) -> keep [B] bool                                  (RAFT)
      only the kept rows are trained on.
and per micro-batch of each of the num_epochs x num_minibatches optimisation passes (stage 4):
  loss(token_logprobs [m, C], old_logprobs [m, C], values [m, C] | None, mb, cfg)
      -> (loss, stats): one value per item, the item being a sequence ([m], unit 'sequence') or
      a completion token ([m, C], zero on padding, unit 'token'); ``stats`` are named per-item
      tensors of the same shape (``loss/policy`` defaults to the loss itself).
      ``old_logprobs`` are the sampling-time ``mb.logprobs``, or ``token_logprobs.detach()`` when
      the batch is used once (one epoch, one minibatch): the ratio is then exactly 1 and its
      gradient exactly the on-policy one. ``values`` are the critic's V(x, y_<t) with grad, else None.
The loop divides the summed per-item losses (and stats) by the number of items in the global
minibatch (``losses.aggregate``): ``count(batch, rows, cfg)`` counts this process's items among
``rows`` (sequences or completion tokens by ``unit``; an ``items`` function replaces it, e.g. for
TRL's ``dr_grpo`` and ``dapo`` normalisers), and the loop sums the counts over processes.

``defaults`` holds the algorithm's paper values of the config keys that default to None
(``setting(cfg, name)``: the config's value if set, else the algorithm's, e.g. DAPO's
clip_eps_high = 0.28).

What the config and the batch sources read: ``data`` (what a batch holds), ``sources`` (the other
``cfg.source`` values accepted), ``group_size(cfg)``, ``check(cfg)`` (per-algorithm config rules),
``critic`` (a factory of extra trained models, ``critic.py``). Adding an algorithm = a few pure
functions and one entry (and its tests / docs).

The GRPO family (grpo, dapo, gspo) and REINFORCE++ share one clipped per-token loss and TRL's
``loss_type`` counts (``group_policy.py``, math in ``grpo.py``); their entries differ in the
advantage, the ratio and ``defaults``.

CoPG, DPO, IPO and SFT need no advantage: their losses are built from the CURRENT log-ratios
log pi/pi_ref (which is what lets CoPG learn from any scored samples without importance weights).
For them ``advantages`` is a 0/1 row weight (0 for groups whose reward was skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import ConfigError
from . import group_policy, losses
from .critic import value_critic

# What a step's batch holds (``data``, or the kind ``sources`` maps ``cfg.source`` to):
DATA_KINDS = (
    "online",          # k samples per prompt from the current policy, scored by the reward source
    "mixed",           # online samples plus groups drawn from a replay buffer of past samples
    "scored",          # a dataset of scored completions, k per prompt
    "pairs",           # a dataset of preference pairs: (chosen, rejected) groups of 2
    "demonstrations",  # a dataset of demonstrations: groups of 1
)


# How the GRPO family's per-token losses are aggregated, named as TRL names them (``loss_type``).
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def _k(cfg) -> int:
    return cfg.k


def _no_check(cfg) -> None:
    return None


@dataclass(frozen=True)
class Algorithm:
    loss: Callable               # (token_lp [m, C], old_lp [m, C], values, mb, cfg) -> (loss, stats)
    advantages: Callable | None = None        # (rewards [B], k, state, cfg) -> (advantages [B], state)
    token_advantages: Callable | None = None  # (batch, cfg, global_sum) -> (adv [b, C], returns | None)
    unit: str | Callable = "sequence"  # the loss's item, what it is averaged over: sequence | token (or cfg -> one)
    items: Callable | None = None  # (batch, rows [n], cfg) -> this process's item count; default: by unit
    defaults: dict = field(default_factory=dict)  # paper values of config keys left None (``setting``)
    data: str = "online"         # what a batch holds with the default cfg.source (DATA_KINDS)
    sources: dict = field(default_factory=dict)  # other cfg.source values -> the data they give
    group_size: Callable = _k    # cfg -> rows per prompt group (k; 2 for pairs; 1 for demonstrations)
    group_word: str = "prompts x k={k}"  # what a group is, in the printed batch summary
    critic: Callable | None = None  # (cfg, run_dir) -> Critic: extra trained model(s), e.g. PPO's V
    select: Callable | None = None  # RAFT: (rewards [B], k, cfg) -> keep [B] bool
    check: Callable = _no_check  # cfg -> None, raises ConfigError on settings the algorithm rejects
    grouped: bool = False    # the loss couples the k rows of a prompt: micro-batches hold whole groups
    reference: bool = True   # needs pi_ref (sft does not: no reference model is loaded)

    def data_kind(self, cfg) -> str:
        """What this run's batches hold: ``data``, or what ``sources`` maps ``cfg.source`` to."""
        return self.sources.get(cfg.source, self.data)

    def loss_unit(self, cfg) -> str:
        """The loss's item for ``cfg``: sequence | token."""
        return self.unit(cfg) if callable(self.unit) else self.unit

    def count(self, batch, rows, cfg) -> float:
        """This process's items among ``rows`` of ``batch`` (the loop sums them over processes):
        ``items`` if the entry has one, else its sequences or completion tokens."""
        if self.items is not None:
            return float(self.items(batch, rows, cfg))
        if self.loss_unit(cfg) == "sequence":
            return float(rows.numel())
        return batch.completion_mask[rows].sum().item()

    def setting(self, cfg, name: str):
        """``cfg.<name>`` if set, else this algorithm's paper default (``defaults``), else None."""
        value = getattr(cfg, name)
        return self.defaults.get(name) if value is None else value

    def rows_trained(self, cfg, rows: int) -> int:
        """Rows trained on out of ``rows`` sampled per process and step (RAFT keeps the best)."""
        return rows // cfg.k * cfg.raft_top_m if self.select is not None else rows


def check_config(cfg) -> None:
    """The rules ``cfg.algo``'s entry sets on the config (``TrainConfig.__post_init__``)."""
    algo = ALGORITHMS[cfg.algo]
    if algo.items is not group_policy.loss_items:        # keys only the GRPO family reads
        for key in group_policy.FAMILY_KEYS:
            if getattr(cfg, key) != cfg.__dataclass_fields__[key].default:
                family = ", ".join(n for n, a in ALGORITHMS.items()
                                   if a.items is group_policy.loss_items)
                raise ConfigError(f"{key}={getattr(cfg, key)}: read only by algo={family} "
                                  f"(not {cfg.algo})")
    if cfg.source != "online" and cfg.source not in algo.sources:
        offline = ", ".join(f"algo={name}" for name, a in ALGORITHMS.items() if a.sources)
        raise ConfigError(f"source={cfg.source}: only {offline} learns from offline or replayed "
                          "samples without importance weights (dpo, ipo and sft always read "
                          "`dataset`; the online algorithms sample from the current policy)")
    algo.check(cfg)
    if algo.grouped and cfg.micro_batch_size % algo.group_size(cfg):
        raise ConfigError(f"micro_batch_size={cfg.micro_batch_size}: {cfg.algo} needs whole "
                          f"groups of {algo.group_size(cfg)} in a micro-batch (use a multiple)")


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
    # loss/policy is ~0 on one pass (ratio 1, zero-mean advantages): log what moves instead, the
    # advantage-weighted log-likelihood A * log pi(y|x) the step ascends, and the advantage spread.
    return loss, {"clip_frac": clipped, "approx_kl": losses.approx_kl(seq_lp, old_seq_lp),
                  "pg/objective": (mb.advantages * seq_lp).detach(),
                  "pg/advantage_abs": mb.advantages.abs()}


# --- PPO, the RLHF baseline of 2402.14740 (arXiv 1707.06347, 2203.02155): token-level actions


def _ppo_advantages(batch, cfg, global_sum=None):
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


def _preference_stats(h, logratios, beta: float) -> dict:
    """Per-row stats of (chosen, rejected) pairs: h [m/2], logratios [m/2, 2] -> [m] each; with
    TRL's names for the implicit rewards beta * log pi/pi_ref (``rewards/chosen``, ...)."""
    h, rewards = h.detach(), beta * logratios.detach()                         # [m/2], [m/2, 2]
    pair = (lambda x: x.repeat_interleave(2))
    return {"margin": pair(h), "accuracy": pair((h > 0).float()),
            "logratio": logratios.detach().flatten(),
            "rewards/chosen": pair(rewards[:, 0]), "rewards/rejected": pair(rewards[:, 1]),
            "rewards/margins": pair(rewards[:, 0] - rewards[:, 1]),
            "rewards/accuracies": pair((rewards[:, 0] > rewards[:, 1]).float())}


def _dpo_loss(token_lp, old_lp, values, mb, cfg):
    """DPO (arXiv 2305.18290, eq. 7) on (chosen, rejected) groups: -log sigmoid(beta * h),
    h = logratio(chosen) - logratio(rejected) from summed log-probs."""
    logratios = _group_logratios(token_lp, mb)                                 # [m/2, 2]
    h = logratios[:, 0] - logratios[:, 1]                                      # [m/2]
    return _per_row(losses.dpo_loss(h, cfg.beta), mb), _preference_stats(h, logratios, cfg.beta)


def _ipo_loss(token_lp, old_lp, values, mb, cfg):
    """IPO (arXiv 2310.12036, eq. 17) on (chosen, rejected) groups: (h - 1 / (2 tau))^2, h from
    summed log-probs (the paper) or per-token averages (TRL, ``ipo_average_logprobs``)."""
    logratios = _group_logratios(token_lp, mb, cfg.ipo_average_logprobs)       # [m/2, 2]
    h = logratios[:, 0] - logratios[:, 1]                                      # [m/2]
    return _per_row(losses.ipo_loss(h, cfg.beta), mb), _preference_stats(h, logratios, cfg.beta)


def _sft_loss(token_lp, old_lp, values, mb, cfg):
    """SFT: NLL of the completion tokens only, averaged over completion tokens (not sequences)."""
    return losses.nll_loss(token_lp, mb.completion_mask) * mb.advantages[:, None], {}


# --- per-algorithm config rules (``check``) and group sizes


def _check_rloo(cfg) -> None:
    if cfg.k < 2:
        raise ConfigError(f"k={cfg.k}: RLOO needs k >= 2 samples per prompt for its "
                          "leave-one-out baseline (use algo=reinforce or pg for k=1)")


def _check_ppo(cfg) -> None:
    if cfg.whiten_rewards:
        raise ConfigError("whiten_rewards: not supported with algo=ppo (its per-token rewards "
                          "use the raw scores; the value model learns their scale)")


def _check_raft(cfg) -> None:
    if cfg.raft_top_m >= cfg.k:
        raise ConfigError(f"raft_top_m={cfg.raft_top_m}: RAFT keeps fewer than k={cfg.k} "
                          "completions per prompt (raise k or lower raft_top_m)")


def _check_copg(cfg) -> None:
    if cfg.k < 2:
        raise ConfigError(f"k={cfg.k}: CoPG contrasts k >= 2 completions of the same prompt")


def _pair(cfg) -> int:
    return 2


def _one(cfg) -> int:
    return 1


_PAIRS = dict(data="pairs", group_size=_pair, group_word="pairs", grouped=True)
_DEMONSTRATIONS = dict(data="demonstrations", group_size=_one, group_word="examples",
                       unit="token", reference=False)

# The GRPO family (group_policy.py): one per-token clipped loss, aggregated by loss_type.
_GROUP = dict(loss=group_policy.policy_loss, unit=group_policy.loss_unit,
              items=group_policy.loss_items)

ALGORITHMS: dict[str, Algorithm] = {
    "pg": Algorithm(_sequence_policy_gradient_loss, _vanilla_pg),
    "reinforce": Algorithm(_sequence_policy_gradient_loss, _reinforce_baseline),
    "rloo": Algorithm(_sequence_policy_gradient_loss, _rloo, check=_check_rloo),
    "ppo": Algorithm(_ppo_loss, token_advantages=_ppo_advantages, unit="token",
                     critic=value_critic, check=_check_ppo),
    "raft": Algorithm(_raft_loss, _raft_weights, unit="token", select=_raft_select,
                      check=_check_raft),
    "copg": Algorithm(_copg_loss, _row_weights, grouped=True, check=_check_copg,
                      sources={"offline": "scored", "mixed": "mixed"}),
    "dpo": Algorithm(_dpo_loss, _row_weights, **_PAIRS),
    "ipo": Algorithm(_ipo_loss, _row_weights, **_PAIRS),
    "sft": Algorithm(_sft_loss, _row_weights, **_DEMONSTRATIONS),
    # GRPO (arXiv 2402.03300): group-normalised advantages, token-level clipped ratio
    "grpo": Algorithm(advantages=group_policy.group_advantages, check=group_policy.check_group,
                      defaults={"loss_type": "grpo"}, **_GROUP),
    # DAPO (arXiv 2503.14476): GRPO with clip-higher, token-level loss, dynamic sampling
    "dapo": Algorithm(advantages=group_policy.group_advantages, check=group_policy.check_group,
                      defaults={"loss_type": "dapo", "clip_eps_high": 0.28,
                                "dynamic_sampling": True}, **_GROUP),
    # GSPO (arXiv 2507.18071): GRPO with a sequence-level, length-normalised ratio and its clip
    "gspo": Algorithm(advantages=group_policy.group_advantages, check=group_policy.check_gspo,
                      defaults={"loss_type": "grpo", "clip_eps_low": 3e-4, "clip_eps_high": 4e-4},
                      **{**_GROUP, "loss": group_policy.gspo_loss}),
    # REINFORCE++ (arXiv 2501.03262): per-token KL in the reward, returns normalised globally
    "reinforce++": Algorithm(token_advantages=group_policy.reinforce_pp_advantages,
                             defaults={"loss_type": "bnpo"}, **_GROUP),
    "reinforce++-baseline": Algorithm(
        token_advantages=group_policy.reinforce_pp_baseline_advantages,
        check=group_policy.check_group, defaults={"loss_type": "bnpo"}, **_GROUP),
}
