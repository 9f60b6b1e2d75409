"""Hand-computed values for every estimator and loss in scorealign.algorithms.losses."""

import math

import pytest
import torch

from scorealign.algorithms import losses


def test_sequence_kl_is_k1_on_sampled_tokens():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -9.0], [-1.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # row 0: (-1 + 1.5) + (-2 + 1) = -0.5 (third token is padding); row 1: 0.5 + 0.5 = 1.0
    assert losses.sequence_kl(logp, ref, mask).tolist() == [-0.5, 1.0]


def test_kl_penalized_rewards_detached():
    scores = torch.tensor([1.0, 2.0])
    kl = torch.tensor([0.5, -1.0], requires_grad=True)
    r = losses.kl_penalized_rewards(scores, kl, beta=0.1)
    assert torch.allclose(r, torch.tensor([0.95, 2.1]))
    assert not r.requires_grad


def test_rloo_advantages_hand_computed_k4():
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 4.0])
    a = losses.rloo_advantages(r, k=4)
    # prompt 0: A_0 = 1 - (2+3+6)/3 = -8/3 ; A_3 = 6 - (1+2+3)/3 = 4
    expected = [1 - 11 / 3, 2 - 10 / 3, 3 - 9 / 3, 6 - 6 / 3, 0 - 4 / 3, 0 - 4 / 3, 0 - 4 / 3, 4 - 0]
    assert torch.allclose(a, torch.tensor(expected))
    # closed form k/(k-1) (R - mean)
    means = r.view(2, 4).mean(1).repeat_interleave(4)
    assert torch.allclose(a, 4 / 3 * (r - means))


def test_rloo_edge_cases():
    assert torch.equal(losses.rloo_advantages(torch.full((6,), 3.5), k=3), torch.zeros(6))
    # k = 2: A_1 = R_1 - R_2, A_2 = R_2 - R_1
    assert losses.rloo_advantages(torch.tensor([1.0, 4.0]), k=2).tolist() == [-3.0, 3.0]
    with pytest.raises(ValueError, match="k >= 2"):
        losses.rloo_advantages(torch.tensor([1.0]), k=1)


def test_moving_average_baseline_running_mean():
    adv, b, n = losses.moving_average_baseline(torch.tensor([1.0, 3.0]), 0.0, 0)
    assert adv.tolist() == [1.0, 3.0] and b == 2.0 and n == 2      # no past: b = 0
    adv, b, n = losses.moving_average_baseline(torch.tensor([6.0, 8.0]), b, n)
    assert adv.tolist() == [4.0, 6.0] and b == 4.5 and n == 4       # (1+3+6+8)/4


def test_moving_average_baseline_ema():
    _, b, n = losses.moving_average_baseline(torch.tensor([2.0, 4.0]), 0.0, 0, decay=0.9)
    assert b == 3.0                                                  # first batch: its mean
    adv, b, _ = losses.moving_average_baseline(torch.tensor([13.0]), b, n, decay=0.9)
    assert adv.tolist() == [10.0] and math.isclose(b, 0.9 * 3 + 0.1 * 13)


def test_policy_gradient_loss_gradient():
    lp = torch.tensor([-1.0, -2.0], requires_grad=True)
    adv = torch.tensor([2.0, -0.5])
    losses.policy_gradient_loss(lp, adv).sum().backward()
    assert lp.grad.tolist() == [-2.0, 0.5]
    assert losses.vanilla_pg_advantages(adv) is adv


def test_whiten():
    w = losses.whiten(torch.tensor([1.0, 3.0]))
    assert torch.allclose(w, torch.tensor([-1.0, 1.0]), atol=1e-6)


def test_aggregate_accumulation_equals_full_batch():
    x = torch.arange(8.0)
    full = losses.aggregate(x, 8)
    parts = sum(losses.aggregate(c, 8) for c in x.split(3))
    assert torch.allclose(full, parts) and full.item() == 3.5


# ---- CoPG (arXiv 2406.19185) ------------------------------------------------------------------


def _pair(h_a, h_b, r_a, r_b):
    h = torch.tensor([[h_a, h_b]], requires_grad=True)
    return h, torch.tensor([[r_a, r_b]])


def test_copg_pairwise_value_and_gradient():
    beta = 0.5
    h, r = _pair(0.2, -0.4, 1.0, 0.0)
    loss = losses.copg_loss(h, r, beta)
    # eq. 7: l = (R_{b/2}(y) - R_{b/2}(y')) (h - h'), R_{b/2} = r - b/2 h
    rh_a, rh_b = 1.0 - 0.25 * 0.2, 0.0 - 0.25 * -0.4
    assert torch.allclose(loss, torch.tensor([-(rh_a - rh_b) * 0.6]))
    loss.sum().backward()
    # gradient of -l w.r.t. h: -(R_b(y) - R_b(y')) * (+1, -1), R_b = r - b h
    d = (1.0 - 0.5 * 0.2) - (0.0 - 0.5 * -0.4)
    assert torch.allclose(h.grad, torch.tensor([[-d, d]]))


def test_copg_ipo_special_case_same_direction():
    beta = 0.3
    h, r = _pair(0.7, -0.1, 0.25, -0.25)
    losses.copg_loss(h, r, beta).sum().backward()
    g_copg = h.grad.clone()
    h2 = h.detach().clone().requires_grad_(True)
    losses.ipo_loss(h2[:, 0] - h2[:, 1], tau=beta).sum().backward()
    # -l = (beta/2) (h - 1/(2 beta))^2 + const: gradients proportional with factor beta/2
    assert torch.allclose(g_copg, beta / 2 * h2.grad, atol=1e-6)


def test_copg_kwise_gradient_is_rloo_gradient():
    torch.manual_seed(0)
    beta, k = 0.2, 4
    h = torch.randn(3, k, requires_grad=True)
    r = torch.randn(3, k)
    losses.copg_loss(h, r, beta).sum().backward()
    reg = (r - beta * h).detach()
    adv = losses.rloo_advantages(reg.view(-1), k).view(3, k)
    assert torch.allclose(h.grad, -adv, atol=1e-5)       # d(loss)/dh_i = -A_i
    h.grad = None
    losses.copg_squared_loss(h, r, beta).sum().backward()
    # d(loss)/dh_i = -2 beta A_i: -2 beta times the RLOO policy-gradient (ascent) direction
    assert torch.allclose(h.grad, -2 * beta * adv, atol=1e-5)


def test_copg_rejects_k1():
    with pytest.raises(ValueError):
        losses.copg_loss(torch.zeros(2, 1), torch.zeros(2, 1), 0.1)


# ---- direct alignment -------------------------------------------------------------------------


def test_dpo_ipo_bt_values():
    h = torch.tensor([0.0, 2.0])
    assert torch.allclose(losses.dpo_loss(h, beta=0.5), -torch.nn.functional.logsigmoid(torch.tensor([0.0, 1.0])))
    assert losses.dpo_loss(torch.tensor([0.0]), 1.0).item() == pytest.approx(math.log(2))
    assert losses.ipo_loss(h, tau=0.25).tolist() == [4.0, 0.0]        # 1/(2 tau) = 2
    assert losses.bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2))


def test_ipo_averaged_differs_by_length_normalisation():
    logp = torch.tensor([[-1.0, -1.0, -1.0, 0.0], [-2.0, -2.0, 0.0, 0.0]])
    ref = torch.tensor([[-2.0, -2.0, -2.0, 0.0], [-1.0, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    summed = losses.sequence_logratio(logp, ref, mask)
    avg = losses.sequence_logratio(logp, ref, mask, average=True)
    assert summed.tolist() == [3.0, -2.0] and avg.tolist() == [1.0, -1.0]
    assert torch.allclose(avg * mask.sum(1), summed)


def test_nll_loss_masks_prompt_padding():
    lp = torch.tensor([[-1.0, -2.0, -5.0]])
    assert losses.nll_loss(lp, torch.tensor([[1, 1, 0]])).tolist() == [[1.0, 2.0, 0.0]]


# ---- DAPO's reward shaping and dynamic sampling (arXiv 2503.14476), used by the loop ---------


def test_overlong_penalty_hand_computed():
    lengths = torch.tensor([3, 6, 7, 8, 9])
    # L_max = 8, L_cache = 2: 0 up to 6 tokens, then (6 - |y|) / 2, -1 beyond 8
    pen = losses.overlong_penalty(lengths, max_length=8, buffer=2)
    assert pen.tolist() == [0.0, 0.0, -0.5, -1.0, -1.0]
    assert losses.overlong_penalty(lengths, 8, 2, penalty=0.5).tolist()[2] == -0.25


def test_informative_groups_drop_all_equal_groups():
    scores = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0])
    assert losses.informative_groups(scores, k=2).tolist() == [False, False, True, True,
                                                                False, False]
    assert losses.informative_groups(torch.tensor([0.5, 0.5, 0.5]), k=3).tolist() == [False] * 3
