"""Tests of the token-level losses (cDPO's token-weighted DPO, T-REG's regulariser and loss) and of the contrastive
token rewards (cDPO's critical-token scores, T-REG's contrastive-prompting rewards), against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfalign.rewards.contrastive import critical_token_scores, treg_token_rewards
from selfalign.trainers.losses import (
    dpo_margin,
    token_weighted_dpo_loss,
    token_weighted_margin,
    treg_loss,
    treg_regularizer,
)

# two pairs, up to 3 tokens: pair 0 has 3 chosen / 2 rejected tokens, pair 1 has 1 chosen / 3 rejected tokens
CHOSEN_MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
REJECTED_MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
# Δ = policy − ref per token; off-mask entries are junk that must not count
POLICY_CHOSEN = torch.tensor([[-1.0, -2.0, -0.5], [-0.25, 99.0, 99.0]])
REF_CHOSEN = torch.tensor([[-2.0, -1.0, -1.5], [-1.25, -99.0, 7.0]])  # Δ_w = [[1, −1, 1], [1, ·, ·]]
POLICY_REJECTED = torch.tensor([[-3.0, -1.0, 50.0], [-1.0, -2.0, -4.0]])
REF_REJECTED = torch.tensor([[-1.0, -2.0, -50.0], [-2.0, -1.0, -2.0]])  # Δ_l = [[−2, 1, ·], [1, −1, −2]]
LOGPS = (POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED, CHOSEN_MASK, REJECTED_MASK)
CHOSEN_WEIGHTS = torch.tensor([[1.0, 0.5, 2.0], [3.0, 7.0, 7.0]])
REJECTED_WEIGHTS = torch.tensor([[0.5, 1.0, 9.0], [0.0, 2.0, 1.0]])


def test_unit_weights_and_sum_is_sigmoid_dpo():
    beta = 0.5
    sums = [(x * m).sum(-1) for x, m in zip(LOGPS[:4], (CHOSEN_MASK, REJECTED_MASK) * 2, strict=True)]
    expected = -F.logsigmoid(beta * dpo_margin(*sums))
    torch.testing.assert_close(token_weighted_dpo_loss(*LOGPS, beta=beta), expected)
    ones = torch.ones_like(CHOSEN_MASK)
    torch.testing.assert_close(token_weighted_dpo_loss(*LOGPS, ones, ones, beta=beta), expected)
    # Σ Δ_w − Σ Δ_l = [(1 − 1 + 1) − (−2 + 1), 1 − (1 − 1 − 2)] = [2, 3]
    torch.testing.assert_close(token_weighted_margin(*LOGPS), torch.tensor([2.0, 3.0]))


def test_weighted_sum_by_hand():
    margin = token_weighted_margin(*LOGPS, CHOSEN_WEIGHTS, REJECTED_WEIGHTS)
    # pair 0: (1·1 + 0.5·(−1) + 2·1) − (0.5·(−2) + 1·1) = 2.5 − 0 = 2.5
    # pair 1: 3·1 − (0·1 + 2·(−1) + 1·(−2)) = 3 − (−4) = 7
    torch.testing.assert_close(margin, torch.tensor([2.5, 7.0]))
    loss = token_weighted_dpo_loss(*LOGPS, CHOSEN_WEIGHTS, REJECTED_WEIGHTS, beta=0.2)
    torch.testing.assert_close(loss, torch.tensor([math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(-1.4))]))


def test_mean_divides_each_weighted_sum_by_its_token_count():
    margin = token_weighted_margin(*LOGPS, CHOSEN_WEIGHTS, REJECTED_WEIGHTS, reduction="mean")
    # pair 0: 2.5 / 3 − 0 / 2; pair 1: 3 / 1 − (−4) / 3 (token counts, not weight sums)
    torch.testing.assert_close(margin, torch.tensor([2.5 / 3, 3 + 4 / 3]))
    unit = token_weighted_margin(*LOGPS, reduction="mean")
    torch.testing.assert_close(unit, torch.tensor([1 / 3 - (-1) / 2, 1 - (-2) / 3]))  # mean Δ_w − mean Δ_l
    loss = token_weighted_dpo_loss(*LOGPS, CHOSEN_WEIGHTS, REJECTED_WEIGHTS, beta=0.1, reduction="mean")
    torch.testing.assert_close(loss, -F.logsigmoid(0.1 * margin))


def test_empty_completion_counts_as_one_token_in_the_mean():
    zeros = torch.zeros(1, 3)
    margin = token_weighted_margin(torch.ones(1, 3), torch.ones(1, 3), zeros, zeros, zeros, torch.ones(1, 3),
                                   reduction="mean")
    torch.testing.assert_close(margin, torch.tensor([-1.0]))  # 0 / 1 − 3 / 3


def test_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="unknown reduction 'max'"):
        token_weighted_dpo_loss(*LOGPS, reduction="max")


def test_weights_act_per_token_in_the_gradient():
    # dh/dlogπ_θ(y_w,t) = a_w(t), dh/dlogπ_θ(y_l,t) = −a_l(t) on the mask, 0 off it
    policy_chosen = POLICY_CHOSEN.clone().requires_grad_()
    policy_rejected = POLICY_REJECTED.clone().requires_grad_()
    margin = token_weighted_margin(policy_chosen, policy_rejected, *LOGPS[2:], CHOSEN_WEIGHTS, REJECTED_WEIGHTS)
    grad_chosen, grad_rejected = torch.autograd.grad(margin.sum(), (policy_chosen, policy_rejected))
    torch.testing.assert_close(grad_chosen, CHOSEN_WEIGHTS * CHOSEN_MASK)
    torch.testing.assert_close(grad_rejected, -REJECTED_WEIGHTS * REJECTED_MASK)


def test_treg_regularizer_by_hand():
    logps = torch.tensor([[-1.0, -2.0, -4.0], [-0.5, -8.0, -8.0]])
    rewards = torch.tensor([[0.25, -0.5, 0.1], [0.4, 0.3, 0.3]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # −β Σ r̂ logp: pair 0: −0.5·(0.25·(−1) + (−0.5)·(−2)) = −0.5·0.75 = −0.375; pair 1: −0.5·(0.4·(−0.5)) = 0.1
    torch.testing.assert_close(treg_regularizer(logps, rewards, mask, beta=0.5), torch.tensor([-0.375, 0.1]))


def test_treg_regularizer_raises_rewarded_tokens():
    logps = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    rewards = torch.tensor([[0.4, -0.2]])
    (grad,) = torch.autograd.grad(treg_regularizer(logps, rewards, torch.ones(1, 2), beta=0.1).sum(), logps)
    torch.testing.assert_close(grad, torch.tensor([[-0.04, 0.02]]))  # −β r̂: descent raises r̂ > 0, lowers r̂ < 0


def test_treg_loss_by_hand():
    beta, alpha = 0.5, 0.25
    margin = torch.tensor([0.0, 2.0 * math.log(3)])  # βh = 0, log 3: σ(−βh) = 1/2, 1/4
    reg_chosen, reg_rejected = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 6.0])
    expected = torch.tensor([math.log(2) + 0.25 * 0.5 * 4.0, math.log(4 / 3) + 0.25 * 0.25 * 4.0])
    torch.testing.assert_close(treg_loss(margin, reg_chosen, reg_rejected, beta, alpha), expected)
    torch.testing.assert_close(treg_loss(margin, reg_chosen, reg_rejected, beta, 0.0), -F.logsigmoid(beta * margin))


def test_treg_weight_has_no_gradient():
    beta, alpha = 0.3, 0.5
    margin = torch.tensor([-1.0, 0.5, 4.0], requires_grad=True)
    regs = torch.tensor([2.0, -1.0, 3.0], requires_grad=True)
    grad_margin, grad_reg = torch.autograd.grad(treg_loss(margin, regs, torch.zeros(3), beta, alpha).sum(),
                                                (margin, regs))
    weight = torch.sigmoid(-beta * margin.detach())
    torch.testing.assert_close(grad_margin, -beta * weight)  # the DPO gradient only
    torch.testing.assert_close(grad_reg, alpha * weight)


def test_critical_token_scores_by_hand():
    ln2 = math.log(2)
    pos = torch.tensor([[[0.0, ln2, 0.0], [1.0, 2.0, 3.0]]])
    neg = torch.tensor([[[0.0, 0.0, ln2], [1.0, 2.0, 3.0]]])
    tokens = torch.tensor([[1, 0]])
    scores = critical_token_scores(pos, neg, tokens, beta=1.0)
    # position 0: 2·z_pos − z_neg = [0, 2 ln 2, −ln 2] → e^· = [1, 4, 1/2], s = 4 / 5.5
    # position 1: equal logits cancel the contrast: softmax([1, 2, 3])[0] = 1 / (1 + e + e²)
    torch.testing.assert_close(scores, torch.tensor([[4 / 5.5, 1 / (1 + math.e + math.e**2)]]))
    assert scores.shape == tokens.shape


def test_critical_token_scores_beta_zero_is_softmax_of_the_positive_model():
    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(2, 4, 7, generator=gen), torch.randn(2, 4, 7, generator=gen)
    tokens = torch.randint(0, 7, (2, 4), generator=gen)
    expected = torch.softmax(pos, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(critical_token_scores(pos, neg, tokens, beta=0.0), expected)
    scores = critical_token_scores(pos, neg, tokens, beta=2.0)
    assert ((scores > 0) & (scores < 1)).all()


def test_critical_token_scores_fall_where_the_negative_model_prefers_the_token():
    pos = torch.zeros(1, 1, 3)
    neg = torch.tensor([[[0.0, 0.0, 2.0]]])
    tokens = torch.tensor([[2]])
    assert critical_token_scores(pos, neg, tokens, beta=1.0) < critical_token_scores(pos, neg, tokens, beta=0.0)


def test_treg_token_rewards():
    better = torch.tensor([[math.log(3), -1.0, -2.0]])
    worse = torch.tensor([[0.0, -1.0, -2.0 + math.log(3)]])
    # σ(log 3) − ½ = ¾ − ½; equal log-probs: 0; σ(−log 3) − ½ = ¼ − ½
    torch.testing.assert_close(treg_token_rewards(better, worse), torch.tensor([[0.25, 0.0, -0.25]]))
    gen = torch.Generator().manual_seed(0)
    better, worse = 2 * torch.randn(4, 16, generator=gen), 2 * torch.randn(4, 16, generator=gen)
    rewards = treg_token_rewards(better, worse)
    assert ((rewards > -0.5) & (rewards < 0.5)).all()
    torch.testing.assert_close(treg_token_rewards(worse, better), -rewards)
    far = treg_token_rewards(torch.tensor([100.0, -100.0]), torch.zeros(2))  # σ saturates in float32: ±0.5
    assert far.abs().max() <= 0.5 and torch.isfinite(far).all()
