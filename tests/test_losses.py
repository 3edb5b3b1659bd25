"""Tests of the pure preference losses: the DPO margin and the soft-label DPO loss (CREAM, OSP)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfalign.trainers.losses import dpo_margin, soft_label_dpo_loss

LOG2 = math.log(2)


def test_dpo_margin():
    h = dpo_margin(torch.tensor([-1.0, -5.0]), torch.tensor([-4.0, -5.0]),
                   torch.tensor([-3.0, -6.0]), torch.tensor([-2.0, -4.0]))
    # [(−1 − (−3)) − (−4 − (−2)), (−5 − (−6)) − (−5 − (−4))] = [2 − (−2), 1 − (−1)] = [4, 2]
    torch.testing.assert_close(h, torch.tensor([4.0, 2.0]))


def test_label_one_is_sigmoid_dpo():
    beta, h = 0.5, torch.tensor([-2.0, 0.0, 3.0])
    loss = soft_label_dpo_loss(h, 1.0, beta)
    torch.testing.assert_close(loss, -F.logsigmoid(beta * h))
    # −log σ(x) = log(1 + e^(−x)): x = −1 → log(1 + e), x = 0 → log 2, x = 1.5 → log(1 + e^(−1.5))
    expected = [math.log(1 + math.e), LOG2, math.log(1 + math.exp(-1.5))]
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_label_half_at_zero_margin_is_log2():
    loss = soft_label_dpo_loss(torch.zeros(3), 0.5, 0.1)
    torch.testing.assert_close(loss, torch.full((3,), LOG2))  # 0.5·log 2 + 0.5·log 2


def test_label_zero_is_the_mirror_of_label_one():
    h = torch.tensor([-3.0, -0.5, 0.0, 2.0])
    torch.testing.assert_close(soft_label_dpo_loss(h, 0.0, 0.1), soft_label_dpo_loss(-h, 1.0, 0.1))


@pytest.mark.parametrize("label", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_soft_label_is_sigmoid_dpo_plus_a_linear_term(label):
    # −log σ(−x) = −log σ(x) + x, so L = −log σ(βh) + (1 − label)·βh
    beta, h = 0.2, torch.tensor([-4.0, -1.0, 0.0, 2.5, 10.0])
    expected = -F.logsigmoid(beta * h) + (1 - label) * beta * h
    torch.testing.assert_close(soft_label_dpo_loss(h, label, beta), expected)


def test_extreme_margins_are_finite_with_the_right_limits():
    beta = 0.1
    h = torch.tensor([1e4, -1e4], requires_grad=True)  # β|h| = 1000: σ underflows, logsigmoid does not
    for label, expected in [(1.0, [0.0, 1000.0]), (0.0, [1000.0, 0.0]), (0.5, [500.0, 500.0])]:
        loss = soft_label_dpo_loss(h, label, beta)
        assert torch.isfinite(loss).all()
        torch.testing.assert_close(loss, torch.tensor(expected))  # ≈ 0 when agreeing with the label, ≈ β|h| else
        (grad,) = torch.autograd.grad(loss.sum(), h)
        assert torch.isfinite(grad).all()


def test_per_pair_labels_broadcast():
    beta, h = 0.1, torch.tensor([3.0, -2.0, 0.5])
    labels = torch.tensor([1.0, 0.5, 0.0])
    per_pair = torch.stack([soft_label_dpo_loss(h[i], float(labels[i]), beta) for i in range(3)])
    torch.testing.assert_close(soft_label_dpo_loss(h, labels, beta), per_pair)
    torch.testing.assert_close(soft_label_dpo_loss(h, torch.tensor(0.5), beta), soft_label_dpo_loss(h, 0.5, beta))


@pytest.mark.parametrize("label", [0.0, 0.25, 0.5, 1.0])
def test_gradient_wrt_margin(label):
    # dL/dh = −label·β·(1 − σ(βh)) + (1 − label)·β·σ(βh) = β·(σ(βh) − label)
    beta = 0.3
    h = torch.tensor([-5.0, -1.0, 0.0, 0.7, 4.0], requires_grad=True)
    (grad,) = torch.autograd.grad(soft_label_dpo_loss(h, label, beta).sum(), h)
    torch.testing.assert_close(grad, beta * (torch.sigmoid(beta * h.detach()) - label))


def test_label_half_has_no_gradient_at_zero_margin():
    h = torch.zeros(4, requires_grad=True)
    (grad,) = torch.autograd.grad(soft_label_dpo_loss(h, 0.5, 0.1).sum(), h)
    assert grad.abs().max() == 0  # β·(σ(0) − 0.5) = 0 exactly
    (grad,) = torch.autograd.grad(soft_label_dpo_loss(h, 1.0, 0.1).sum(), h)
    torch.testing.assert_close(grad, torch.full((4,), -0.05))  # β·(0.5 − 1)
