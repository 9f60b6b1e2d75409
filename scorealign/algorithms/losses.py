"""Advantage estimators and losses: small pure functions over tensors, torch only.

Conventions (shared by every function here):
- B sequences; the k samples of one prompt are contiguous, so ``x.view(-1, k)`` is [prompts, k].
- ``logratio`` of a completion is log pi(y|x) - log pi_ref(y|x) with SUMMED token log-probs.
- Losses return one value per sequence (or per pair/group/token) WITHOUT reduction; the training
  loop sums them and divides by a global count (see ``aggregate``), which is what makes gradient
  accumulation and data parallelism give the same update as one big batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------
# Rewards and KL (arXiv 2402.14740, §3)
# --------------------------------------------------------------------------------------------


def sequence_kl(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """k1 estimator of KL(pi || pi_ref) for each sampled completion.

    kl(x, y) = sum_t [log pi(y_t|x, y_<t) - log pi_ref(y_t|x, y_<t)]   (sampled tokens only)

    logprobs, ref_logprobs, mask: [B, C]  ->  [B]
    """
    return ((logprobs - ref_logprobs) * mask).sum(-1)


def kl_penalized_rewards(scores: Tensor, kl: Tensor, beta: float) -> Tensor:
    """R(x, y) = r(x, y) - beta * kl(x, y), detached: the KL penalty is part of the reward.

    arXiv 2402.14740 eq. (1) with the whole completion as one action. scores, kl: [B] -> [B].
    """
    return (scores - beta * kl).detach()


def overlong_penalty(lengths: Tensor, max_length: int, buffer: int, penalty: float = 1.0) -> Tensor:
    """DAPO's soft overlong punishment (arXiv 2503.14476 eq. 13), added to the score:

      R_length(y) = 0                                  |y| <= L_max - L_cache
                  = ((L_max - L_cache) - |y|) / L_cache   L_max - L_cache < |y| <= L_max
                  = -1                                 |y| > L_max

    times ``penalty``, with L_max = ``max_length`` (max_new_tokens: a completion never exceeds it,
    so the penalty reaches -penalty at the cut) and L_cache = ``buffer``. lengths: [B] -> [B].
    """
    start = max_length - buffer
    over = (lengths.to(torch.float32) - start).clamp(min=0.0)
    return -penalty * torch.where(lengths > max_length, torch.ones_like(over), over / buffer)


def informative_groups(scores: Tensor, k: int) -> Tensor:
    """DAPO's dynamic sampling filter (arXiv 2503.14476 eq. 11, 0 < |{correct}| < G): keep the
    prompt groups whose k rewards are not all equal (a group of equal rewards has zero group-
    relative advantage: no policy gradient). scores: [B] -> keep [B] bool, whole groups."""
    r = scores.view(-1, k)                                                  # [prompts, k]
    return (r != r[:, :1]).any(1).repeat_interleave(k)


def whiten(x: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / (std + eps) over the whole batch. Off by default; not in the paper."""
    return (x - x.mean()) / (x.std(unbiased=False) + eps)


# --------------------------------------------------------------------------------------------
# Advantage estimators (arXiv 2402.14740, §3.2)
# --------------------------------------------------------------------------------------------


def vanilla_pg_advantages(rewards: Tensor) -> Tensor:
    """Vanilla policy gradient: A(x, y) = R(x, y), no baseline. [B] -> [B]."""
    return rewards


def moving_average_baseline(
    rewards: Tensor, baseline: float, count: int, decay: float | None = None
) -> tuple[Tensor, float, int]:
    """REINFORCE with a moving-average baseline (arXiv 2402.14740, "REINFORCE w/ baseline").

    A = R - b, where b is built from rewards of PAST batches only (so it is independent of the
    current samples and the estimator stays unbiased); b = 0 before the first batch.
    Update after the batch:
      decay is None: b <- (count * b + sum R) / (count + n)   running mean of every reward seen
                     (the paper's "average reward across all training steps").
      decay in [0,1): b <- decay * b + (1 - decay) * mean R   (EMA; first batch: b <- mean R).

    rewards: [B]. Returns (advantages [B], new baseline, new count).
    """
    advantages = rewards - baseline
    n = rewards.numel()
    if decay is None:
        new_baseline = (count * baseline + rewards.sum().item()) / (count + n)
    elif count == 0:
        new_baseline = rewards.mean().item()
    else:
        new_baseline = decay * baseline + (1.0 - decay) * rewards.mean().item()
    return advantages, new_baseline, count + n


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """REINFORCE Leave-One-Out (arXiv 2402.14740 eq. (5)).

    A_i = R_i - 1/(k-1) * sum_{j != i} R_j  =  k/(k-1) * (R_i - mean_j R_j)

    rewards: [B] with B = prompts * k, samples of one prompt contiguous -> [B].
    """
    if k < 2:
        raise ValueError(f"RLOO needs k >= 2 samples per prompt (got k={k}): "
                         "with one sample there is no leave-one-out baseline")
    r = rewards.view(-1, k)  # [prompts, k]
    return (k / (k - 1) * (r - r.mean(dim=1, keepdim=True))).view(-1)


def policy_gradient_loss(seq_logprobs: Tensor, advantages: Tensor) -> Tensor:
    """REINFORCE surrogate per sequence: -A(x, y) * log pi(y|x).

    Its gradient is the score-function estimator -A * grad log pi(y|x) (arXiv 2402.14740 eq. 2).
    seq_logprobs: [B] (summed over completion tokens, with grad), advantages: [B] (no grad) -> [B].
    """
    return -advantages.detach() * seq_logprobs


# --------------------------------------------------------------------------------------------
# Contrastive Policy Gradient (arXiv 2406.19185)
# --------------------------------------------------------------------------------------------


def copg_loss(logratios: Tensor, scores: Tensor, beta: float) -> Tensor:
    """CoPG, k completions per prompt, to MINIMISE (the negated objective).

    Pairwise objective, paper eq. (7), to maximise (note beta/2 inside R):
      l(y, y') = (R_{beta/2}(y) - R_{beta/2}(y')) * (h(y) - h(y')),
      R_{beta/2}(y) = r(y) - beta/2 * h(y),   h(y) = log pi(y)/pi_ref(y)
    Its gradient is (R_beta(y) - R_beta(y')) * (grad log pi(y) - grad log pi(y')).
    k-wise form: the mean over the k(k-1)/2 pairs times k/2, i.e. 1/(k-1) * sum_{i>j} l(y_i, y_j),
    whose gradient is sum_i A_i grad log pi(y_i) with A the RLOO(k) advantages of R_beta: one
    on-policy group gives exactly the RLOO update. For k = 2 it is eq. (7).

    logratios, scores: [N, k] (logratios with grad) -> [N] loss per prompt.
    """
    k = logratios.shape[1]
    if k < 2:
        raise ValueError(f"CoPG needs k >= 2 completions per prompt (got k={k})")
    r_half = scores - 0.5 * beta * logratios                      # R_{beta/2}  [N, k]
    d_r = r_half.unsqueeze(2) - r_half.unsqueeze(1)              # [N, k, k]  (i, j)
    d_h = logratios.unsqueeze(2) - logratios.unsqueeze(1)        # [N, k, k]
    pair_objective = (d_r * d_h).triu(diagonal=1).sum(dim=(1, 2))  # sum over i<j == i>j
    return -pair_objective / (k - 1)


def copg_squared_loss(logratios: Tensor, scores: Tensor, beta: float) -> Tensor:
    """CoPG squared form (proof of Theorem 1, arXiv 2406.19185; k-wise as in Cohere's Command A).

      loss = 1/(k-1) * sum_{i>j} (R_beta(y_i) - R_beta(y_j))^2,   R_beta = r - beta * h

    Its gradient is -2*beta times the RLOO(k) policy gradient of R_beta, and it differs from
    ``2*beta*copg_loss`` by a constant. logratios, scores: [N, k] -> [N].
    """
    k = logratios.shape[1]
    reg = scores - beta * logratios                               # R_beta  [N, k]
    d = reg.unsqueeze(2) - reg.unsqueeze(1)                       # [N, k, k]
    return (d.pow(2).triu(diagonal=1).sum(dim=(1, 2))) / (k - 1)


# --------------------------------------------------------------------------------------------
# Direct alignment from preferences (arXiv 2305.18290, 2310.12036) and reward models
# --------------------------------------------------------------------------------------------


def preference_margin(chosen_logratio: Tensor, rejected_logratio: Tensor) -> Tensor:
    """h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]. [N], [N] -> [N]."""
    return chosen_logratio - rejected_logratio


def dpo_loss(h: Tensor, beta: float) -> Tensor:
    """DPO (sigmoid), arXiv 2305.18290 eq. (7): -log sigmoid(beta * h). [N] -> [N]."""
    return -F.logsigmoid(beta * h)


def ipo_loss(h: Tensor, tau: float) -> Tensor:
    """IPO, arXiv 2310.12036 eq. (17): (h - 1/(2 tau))^2 with h from SUMMED log-probs. [N] -> [N].

    TRL's ``loss_type="ipo"`` feeds h built from per-token AVERAGED log-ratios instead; build h
    with ``sequence_logratio(..., average=True)`` to reproduce it (then TRL's beta is this tau).
    """
    return (h - 1.0 / (2.0 * tau)).pow(2)


def bradley_terry_loss(chosen_scores: Tensor, rejected_scores: Tensor) -> Tensor:
    """Bradley-Terry reward-model loss: -log sigmoid(r(y_w) - r(y_l)). [N], [N] -> [N]."""
    return -F.logsigmoid(chosen_scores - rejected_scores)


def sequence_logratio(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor,
                      average: bool = False) -> Tensor:
    """log pi(y)/pi_ref(y) summed over completion tokens, or averaged if ``average``. [B, C] -> [B]."""
    total = ((logprobs - ref_logprobs) * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


# --------------------------------------------------------------------------------------------
# SFT and RAFT (arXiv 2304.06767)
# --------------------------------------------------------------------------------------------


def nll_loss(token_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Negative log-likelihood per token, for SFT and RAFT: -log pi(y_t | x, y_<t) on completion
    tokens, 0 elsewhere. [B, C] -> [B, C]; aggregate as a mean over tokens."""
    return -token_logprobs * mask


def raft_selection(rewards: Tensor, k: int, top_m: int = 1) -> Tensor:
    """RAFT's data ranking step (Dong et al., arXiv 2304.06767, Algorithm 1, step 2): of the k
    completions of each prompt keep the ``top_m`` with the highest reward (best-of-k for m = 1).

    Ties are broken deterministically: the lower index within the group wins (stable sort).
    rewards: [B] with B = prompts * k, samples of one prompt contiguous -> keep [B] bool.
    """
    if not 1 <= top_m <= k:
        raise ValueError(f"RAFT keeps 1 <= top_m <= k completions per prompt (top_m={top_m}, k={k})")
    r = rewards.view(-1, k)                                                  # [prompts, k]
    best = r.sort(dim=1, descending=True, stable=True).indices[:, :top_m]   # [prompts, m]
    return torch.zeros_like(r, dtype=torch.bool).scatter_(1, best, True).view(-1)


# --------------------------------------------------------------------------------------------
# PPO pieces (arXiv 1707.06347, GAE arXiv 1506.02438), token-level actions
# --------------------------------------------------------------------------------------------


def token_level_rewards(scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor,
                        beta: float) -> Tensor:
    """Per-token rewards of RLHF-PPO (arXiv 1909.08593 §2, 2203.02155 eq. 2, the PPO baseline of
    2402.14740): every completion token pays the per-token KL penalty, and the sequence score
    r(x, y) is added at the LAST completion token (EOS, or the last token of a truncated one):

      r_t = -beta * (log pi(y_t|...) - log pi_ref(y_t|...)) + [t = T] * r(x, y)

    Summed over t this is R(x, y) of ``kl_penalized_rewards``. Detached.
    scores: [B]; logprobs, ref_logprobs, mask: [B, C] (mask a prefix of each row) -> [B, C].
    """
    mask = mask.to(logprobs.dtype)
    rewards = -beta * (logprobs - ref_logprobs) * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)                            # [B]
    rewards = rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))
    return rewards.detach()


def gae_advantages(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
                   lam: float = 1.0) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over completion tokens (arXiv 1506.02438 eq. 16).

    delta_t = r_t + gamma * V_{t+1} - V_t  (V = 0 after the last real token)
    A_t = sum_l (gamma*lam)^l delta_{t+l};  returns_t = A_t + V_t.
    rewards, values, mask: [B, T] with mask 1 on real tokens (a prefix of each row).
    Returns (advantages [B, T], returns [B, T]), zero on padding.
    Deviation: a completion cut at max_new_tokens is treated as terminal (no bootstrap from V).
    """
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


def clipped_surrogate_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor,
                           clip_eps: float | None, clip_eps_high: float | None = None
                           ) -> tuple[Tensor, Tensor]:
    """PPO clipped surrogate (arXiv 1707.06347 eq. 7), to minimise:

      -min(rho * A, clip(rho, 1-eps, 1+eps_high) * A),   rho = exp(log pi - log pi_old)

    eps_high = ``clip_eps_high`` (DAPO's clip-higher, arXiv 2503.14476 eq. 10), else eps.
    ``clip_eps=None``: no clipping, -rho * A (whose gradient at rho = 1 is the REINFORCE one).
    Works per token ([B, T]) or per sequence ([B]). Returns (loss, clipped indicator), the
    indicator being 1 where the clipped term is the minimum, i.e. the item gets no gradient.
    On a tie (rho inside the clip range) the gradient flows through the unclipped term only.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages.detach()
    if clip_eps is None:
        return -unclipped, torch.zeros_like(unclipped)
    high = clip_eps if clip_eps_high is None else clip_eps_high
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + high) * advantages.detach()
    active = clipped < unclipped
    return -torch.where(active, clipped, unclipped), active.to(unclipped.dtype)


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor,
                       clip_eps: float | None) -> Tensor:
    """PPO clipped value loss per token (OpenAI baselines' ppo2; one of the code-level
    optimisations of PPO listed in arXiv 2005.12729 §3), in reward units:

      0.5 * max((V - G)^2, (V_clip - G)^2),   V_clip = V_old + clip(V - V_old, -eps, eps)

    ``clip_eps=None``: 0.5 * (V - G)^2. values with grad; old_values, returns detached.
    [B, T] -> [B, T].
    """
    returns, old_values = returns.detach(), old_values.detach()
    unclipped = (values - returns).pow(2)
    if clip_eps is None:
        return 0.5 * unclipped
    v_clipped = old_values + (values - old_values).clamp(-clip_eps, clip_eps)
    return 0.5 * torch.max(unclipped, (v_clipped - returns).pow(2))


def approx_kl(logprobs: Tensor, old_logprobs: Tensor) -> Tensor:
    """KL(pi_old || pi) per item, k3 estimator: (rho - 1) - log rho >= 0, rho = pi / pi_old
    (J. Schulman, "Approximating KL divergence", 2020; as logged by CleanRL's PPO). 0 at rho = 1."""
    log_ratio = (logprobs - old_logprobs).detach()
    return torch.expm1(log_ratio) - log_ratio


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def aggregate(per_item: Tensor, normaliser: float) -> Tensor:
    """Sum of per-item losses divided by the number of items in the WHOLE optimisation batch.

    Items are sequences (loss [m]) or completion tokens (loss [m, C], zero on padding); the
    training loop counts them over all micro-batches and all processes and passes
    count / world_size (DDP then averages gradients over processes). Summing the micro-batch
    results then equals the mean over the full (mini)batch exactly: 1 x 8 accumulation, 8 x 1
    and 2 processes give the same update, for token-level losses too.
    """
    return per_item.sum() / normaliser
