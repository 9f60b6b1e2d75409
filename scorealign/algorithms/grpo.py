"""The GRPO family and REINFORCE++: advantages, ratios, clips and loss aggregation, torch only.

Same conventions as ``losses.py``: B sequences, the k samples of one prompt contiguous; per-token
tensors are [B, C] with a 0/1 ``mask`` on completion tokens; losses are returned per item without
reduction (the loop sums them and divides by a global count, ``losses.aggregate``).

  GRPO        arXiv 2402.03300  group-normalised advantage, token-level clipped ratio, k3 KL in the loss
  Dr. GRPO    arXiv 2503.20783  no std division, sum over tokens / constant (``dr_grpo``)
  DAPO        arXiv 2503.14476  clip-higher, token-level mean over the batch (``dapo``), dynamic
                                sampling and overlong shaping (``losses.informative_groups``,
                                ``losses.overlong_penalty``)
  GSPO        arXiv 2507.18071  sequence-level, length-normalised importance ratio
  REINFORCE++ arXiv 2501.03262  per-token KL in the reward, return-to-go, global normalisation
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def grpo_advantages(rewards: Tensor, k: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """GRPO outcome-supervision advantages (arXiv 2402.03300 §4.1.2), one per completion:

      A_i = (r_i - mean(r_group)) / (std(r_group) + eps)      scale = 'group' (the paper)
      A_i = (r_i - mean(r_group)) / (std(r_batch) + eps)      scale = 'batch' (TRL; PPO-Lite)
      A_i =  r_i - mean(r_group)                              scale = 'none'  (Dr. GRPO, 2503.20783)

    std is Bessel-corrected and eps = 1e-4, as in TRL's GRPOTrainer (the paper states neither).
    A group of equal rewards gets A = 0 (0 / (0 + eps)). For k = 2, 'group' gives
    A = +-(|r_1 - r_2| / 2) / (|r_1 - r_2| / sqrt(2) + eps), about +-0.7071 whatever the gap.
    rewards: [B], B = prompts * k -> [B].
    """
    if k < 2 and scale == "group":
        raise ValueError(f"GRPO's group std needs k >= 2 samples per prompt (got k={k})")
    r = rewards.view(-1, k)                                                  # [prompts, k]
    centred = r - r.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred.reshape(-1)
    std = r.std(dim=1, keepdim=True) if scale == "group" else rewards.std()
    return (centred / (std + eps)).reshape(-1)


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token KL(pi || pi_ref) in the GRPO loss (arXiv 2402.03300 eq. 4; Schulman's k3):

      D = pi_ref/pi - log(pi_ref/pi) - 1 = exp(ref - logp) - (ref - logp) - 1  >= 0

    unbiased for KL(pi || pi_ref) on tokens sampled from pi; with grad through ``logprobs``.
    [B, C] -> [B, C] (mask it).
    """
    d = ref_logprobs.detach() - logprobs
    return torch.exp(d) - d - 1.0


def sequence_log_ratio(logprobs: Tensor, old_logprobs: Tensor, mask: Tensor) -> Tensor:
    """GSPO's length-normalised sequence log-ratio (arXiv 2507.18071 eq. 7):

      log s_i = 1/|y_i| * sum_t [log pi(y_t|...) - log pi_old(y_t|...)],  s_i = (pi/pi_old)^(1/|y_i|)

    [B, C] -> [B] (0 for an empty row)."""
    return ((logprobs - old_logprobs) * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def reinforce_pp_returns(token_rewards: Tensor, mask: Tensor) -> Tensor:
    """REINFORCE++ (arXiv 2501.03262 eq. 6) before normalisation, gamma = 1, no critic:

      A_t = sum_{s >= t} r_s   (r_s = -beta * KL_s, plus r(x, y) at the last token:
                                ``losses.token_level_rewards``)

    the reward-to-go of every completion token. token_rewards, mask: [B, C] -> [B, C], 0 on padding.
    """
    r = token_rewards * mask
    return (r.flip(-1).cumsum(-1).flip(-1)) * mask


def masked_whiten(x: Tensor, mask: Tensor, global_sum=None, eps: float = 1e-8) -> Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries of the GLOBAL batch (REINFORCE++'s
    advantage normalisation, arXiv 2501.03262 eq. 7; OpenRLHF's masked variance, not Bessel-
    corrected). ``global_sum(t)`` sums a tensor over processes (None: one process).
    x, mask: [B, C] -> [B, C], 0 on padding."""
    total = global_sum or (lambda t: t)
    mask = mask.to(x.dtype)
    stats = total(torch.stack([(x * mask).sum(), mask.sum()]))
    mean = stats[0] / stats[1].clamp(min=1)
    var = total(((x - mean).pow(2) * mask).sum()) / stats[1].clamp(min=1)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def per_sequence_token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """TRL's ``loss_type='grpo'`` item (GRPO eq. 3's 1/|o_i| sum_t): each sequence's mean over its
    completion tokens. per_token, mask: [B, C] -> [B] (0 for a row with no loss token); the loop
    then averages over the sequences of the global minibatch."""
    return (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
