"""The registry functions of the GRPO family (``grpo``, ``dapo``, ``gspo``) and REINFORCE++.

They share one per-token loss (``policy_loss``): a clipped importance ratio against the
sampling-time log-probs times the advantage, plus, with ``kl_loss_coef``, GRPO's k3 KL to pi_ref,
aggregated as TRL's ``loss_type`` names it. The math is in ``grpo.py`` and ``losses.py``; what each
entry changes is its advantage (group-normalised, or REINFORCE++'s per-token returns), its ratio
(per token, or GSPO's per sequence) and its paper defaults (``Algorithm.defaults``).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from . import grpo, losses

# This process's items among ``rows``, per loss_type, from the loss mask [b, C] and the rows in the
# loss [b] (the loop sums them over processes). Micro-batches and processes only split the sums, so
# each keeps 1 x 8 = 8 x 1 and 1 process = 2 processes. TRL instead divides its grpo, bnpo and
# dr_grpo losses per micro-batch (then by the accumulation steps): the same value when micro-
# batches have equal sizes (grpo, dr_grpo) or equal token counts (bnpo); its dapo normaliser is
# this one.
ITEMS = {
    "grpo": lambda mask, kept, rows, cfg: kept[rows].sum().item(),                # sequences
    "bnpo": lambda mask, kept, rows, cfg: mask[rows].sum().item(),                # minibatch tokens
    "dr_grpo": lambda mask, kept, rows, cfg: kept[rows].sum().item() * cfg.max_new_tokens,
    "dapo": lambda mask, kept, rows, cfg: mask.sum().item() / cfg.num_minibatches,  # step's tokens
}


# Config keys read only by these algorithms (any other rejects a non-default value).
FAMILY_KEYS = ("loss_type", "scale_rewards", "kl_loss_coef", "clip_eps_low", "clip_eps_high",
               "mask_truncated_completions")


def loss_type(cfg) -> str:
    """``cfg.loss_type``, else the algorithm's paper default (grpo; dapo for algo=dapo)."""
    return cfg.algorithm.setting(cfg, "loss_type")


def loss_unit(cfg) -> str:
    """'sequence' for loss_type=grpo (one item per sequence), else 'token'."""
    return "sequence" if loss_type(cfg) == "grpo" else "token"


def rows_in_loss(batch) -> torch.Tensor:
    """[b] bool: False for the rows of groups the loop left out (a skipped reward, or DAPO's
    dynamic sampling: ``batch.valid``)."""
    valid = batch.valid
    return torch.ones_like(batch.truncated) if valid is None else valid


def loss_mask(batch, cfg) -> torch.Tensor:
    """The completion tokens in the loss [b, C]: those of the rows in the loss, and, with
    mask_truncated_completions, only of completions that ended (DAPO's overlong filtering,
    arXiv 2503.14476 §3.4; TRL still counts those rows as sequences in grpo and dr_grpo)."""
    mask = batch.completion_mask * rows_in_loss(batch)[:, None]
    return mask * (~batch.truncated)[:, None] if cfg.mask_truncated_completions else mask


def loss_items(batch, rows, cfg) -> float:
    """This process's items among ``rows`` for the loop's normaliser (``ITEMS``)."""
    return ITEMS[loss_type(cfg)](loss_mask(batch, cfg), rows_in_loss(batch), rows, cfg)


def clip_range(cfg) -> tuple[float | None, float | None]:
    """(eps_low, eps_high): clip_eps_low, else the algorithm's default, else clip_eps; eps_high
    likewise, else eps_low (TRL's epsilon / epsilon_high). eps_low None: no clipping."""
    low = cfg.algorithm.setting(cfg, "clip_eps_low")
    low = cfg.clip_eps if low is None else low
    high = cfg.algorithm.setting(cfg, "clip_eps_high")
    return low, low if high is None else high


def aggregate(per_token, mask, cfg) -> torch.Tensor:
    """[m, C] per-token values -> the loss_type's items: each sequence's token mean [m] (grpo),
    or the masked tokens [m, C] (bnpo, dr_grpo, dapo: they differ in the loop's count only)."""
    if loss_type(cfg) == "grpo":
        return grpo.per_sequence_token_mean(per_token, mask)
    return per_token * mask


def group_advantages(rewards, k, state, cfg):
    """GRPO's group-normalised advantages on the global batch (``grpo.grpo_advantages``)."""
    return grpo.grpo_advantages(rewards, k, cfg.scale_rewards), state


def reinforce_pp_advantages(batch, cfg, global_sum=None, baseline: bool = False):
    """REINFORCE++ (arXiv 2501.03262 §3), critic-free token-level advantages on this process's
    rows, normalised over the GLOBAL batch: per-token rewards r_t = -beta * (log pi_old - log pi_ref)
    (k1 at sampling time) plus r(x, y) at the last token (``losses.token_level_rewards``), their
    return-to-go (gamma = 1, ``grpo.reinforce_pp_returns``), whitened over every loss token of
    every process (``grpo.masked_whiten``). ``baseline`` (REINFORCE++-baseline, the paper's
    group variant): r(x, y) minus the mean of its prompt's k scores first.
    -> (advantages [b, C], None: no critic target)."""
    scores = batch.scores                                                      # [b]
    if baseline:
        group = scores.view(-1, batch.k)
        scores = (group - group.mean(1, keepdim=True)).view(-1)
    mask = loss_mask(batch, cfg)
    rewards = losses.token_level_rewards(scores, batch.logprobs, batch.ref_logprobs,
                                         batch.completion_mask, cfg.beta)      # [b, C]
    returns = grpo.reinforce_pp_returns(rewards, batch.completion_mask)        # [b, C]
    return grpo.masked_whiten(returns, mask, global_sum), None


def reinforce_pp_baseline_advantages(batch, cfg, global_sum=None):
    """REINFORCE++-baseline: ``reinforce_pp_advantages`` with the group mean subtracted first."""
    return reinforce_pp_advantages(batch, cfg, global_sum, baseline=True)


def surrogate_loss(per_token, clipped, token_lp, old_lp, mb, cfg):
    """Add the k3 KL term (``kl_loss_coef``), aggregate by loss_type; per-item stats alike."""
    mask = loss_mask(mb, cfg)
    stats = {"loss/policy": per_token, "clip_frac": clipped,
             "approx_kl": losses.approx_kl(token_lp, old_lp)}
    loss = per_token
    if cfg.kl_loss_coef:
        stats["kl_loss"] = grpo.k3_kl(token_lp, mb.ref_logprobs)
        loss = per_token + cfg.kl_loss_coef * stats["kl_loss"]
    return aggregate(loss, mask, cfg), {n: aggregate(v.detach(), mask, cfg) for n, v in stats.items()}


def policy_loss(token_lp, old_lp, values, mb, cfg):
    """GRPO's objective (arXiv 2402.03300 eq. 3), to minimise, per completion token t:

      -min(rho_t * A, clip(rho_t, 1 - eps_low, 1 + eps_high) * A) + kl_loss_coef * D_k3(pi || pi_ref)

    rho_t = pi(y_t|...) / pi_old(y_t|...) against the sampling-time log-probs (exactly 1 when the
    batch is used once); A the sequence's advantage on each of its tokens, or REINFORCE++'s
    per-token advantage; eps_high > eps_low is DAPO's clip-higher. Aggregated by loss_type.
    token_lp, old_lp: [m, C]; mb.advantages: [m] or [m, C] -> [m] (grpo) or [m, C]."""
    adv = mb.advantages if mb.advantages.dim() == 2 else mb.advantages[:, None]
    per_token, clipped = losses.clipped_surrogate_loss(token_lp, old_lp, adv.expand_as(token_lp),
                                                       *clip_range(cfg))
    return surrogate_loss(per_token, clipped, token_lp, old_lp, mb, cfg)


def gspo_loss(token_lp, old_lp, values, mb, cfg):
    """GSPO (arXiv 2507.18071 eq. 5), to minimise, per sequence:

      -min(s_i * A_i, clip(s_i, 1 - eps_low, 1 + eps_high) * A_i),  s_i = exp(mean_t log pi/pi_old)

    (``grpo.sequence_log_ratio``; the paper clips at 3e-4 / 4e-4), put on each token of y_i so
    that loss_type grpo's per-sequence token mean returns it exactly, and the k3 KL term
    (``kl_loss_coef``) adds per token as in TRL's importance_sampling_level='sequence'.
    Used once (one epoch, one minibatch) s_i = 1 and the gradient is GRPO's."""
    log_s = grpo.sequence_log_ratio(token_lp, old_lp, loss_mask(mb, cfg))[:, None]   # [m, 1]
    log_s = log_s.expand_as(token_lp)
    per_token, clipped = losses.clipped_surrogate_loss(
        log_s, torch.zeros_like(log_s), mb.advantages[:, None].expand_as(token_lp), *clip_range(cfg))
    return surrogate_loss(per_token, clipped, token_lp, old_lp, mb, cfg)


def check_gspo(cfg) -> None:
    """GSPO: groups of k >= 2, and its per-sequence aggregation (loss_type grpo)."""
    check_group(cfg)
    if loss_type(cfg) != "grpo":
        raise ConfigError(f"loss_type={cfg.loss_type}: gspo's ratio is per sequence, so its loss "
                          "is averaged over sequences (loss_type: grpo)")


def check_group(cfg) -> None:
    """Group-relative advantages need k >= 2 samples per prompt."""
    if cfg.k < 2:
        raise ConfigError(f"k={cfg.k}: {cfg.algo} compares k >= 2 completions of each prompt "
                          "(its advantage is relative to the group's rewards)")
