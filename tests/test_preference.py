"""P(y1 ≻ y2) from a judge, SCIR's regulariser and agreement filter, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from selfalign.methods.scir import agreement, candidate_pairs, implicit_preference
from selfalign.rewards.preference import (
    empirical_distribution,
    judge_probability,
    pairwise_judge_probability,
    preference_strength,
)
from selfalign.trainers.losses import bernoulli_entropy, scir_regularizer, symmetric_bernoulli_kl


def test_preference_strength_by_hand():
    p1 = torch.tensor([0.0, 0.5, 0.5])  # scores 1, 2, 3
    p2 = torch.tensor([0.5, 0.5, 0.0])
    # P(S1 > S2) = .5·.5 (2>1) + .5·1 (3>1 or 3>2) = .75; P(=) = .5·.5 (2=2) = .25 → .75 + .125
    assert float(preference_strength(p1, p2)) == pytest.approx(0.875)
    assert float(preference_strength(p2, p1)) == pytest.approx(0.125)
    same = torch.tensor([0.2, 0.3, 0.5])
    assert float(preference_strength(same, same)) == pytest.approx(0.5)
    one_hot = torch.eye(3)
    assert float(preference_strength(one_hot[2], one_hot[0])) == 1.0
    assert float(preference_strength(one_hot[1], one_hot[1])) == 0.5


def test_preference_strength_batched_and_differentiable():
    logits = torch.randn(4, 5, requires_grad=True)
    p = torch.softmax(logits, -1)
    s = preference_strength(p[:2], p[2:])
    assert s.shape == (2,)
    s.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert torch.allclose(preference_strength(p[:2], p[2:]) + preference_strength(p[2:], p[:2]), torch.ones(2))


def test_empirical_distribution():
    assert empirical_distribution([3, 3, 5], (1, 2, 3, 4, 5)).tolist() == pytest.approx([0, 0, 2 / 3, 0, 1 / 3])
    assert empirical_distribution([], (1, 2)).tolist() == [0, 0]


def test_pairwise_probability_averages_both_orders():
    # y1 first: P(first better) = σ(2 − 0); y2 first: P(second better) = σ(0 − 1)
    p = pairwise_judge_probability(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    expected = 0.5 * (1 / (1 + math.exp(-2)) + 1 / (1 + math.exp(1)))
    assert float(p) == pytest.approx(expected)
    # a judge that always answers "first" (pure position bias) says 0.5
    biased = torch.tensor([[3.0, -3.0]])
    assert float(pairwise_judge_probability(biased, biased)) == pytest.approx(0.5)


def test_judge_probability_dispatch():
    l1, l2 = torch.tensor([[0.0, 0.0, 5.0]]), torch.tensor([[5.0, 0.0, 0.0]])
    assert float(judge_probability("pointwise", l1, l2)) > 0.98
    with pytest.raises(ValueError, match="unknown judge format"):
        judge_probability("listwise", l1, l2)


def test_symmetric_kl_and_entropy_by_hand():
    p, q = torch.tensor([0.8]), torch.tensor([0.6])
    kl_pq = 0.8 * math.log(0.8 / 0.6) + 0.2 * math.log(0.2 / 0.4)
    kl_qp = 0.6 * math.log(0.6 / 0.8) + 0.4 * math.log(0.4 / 0.2)
    assert float(symmetric_bernoulli_kl(p, q)) == pytest.approx(kl_pq + kl_qp)
    assert float(symmetric_bernoulli_kl(q, p)) == pytest.approx(kl_pq + kl_qp)
    assert float(symmetric_bernoulli_kl(p, p)) == 0.0
    assert float(bernoulli_entropy(torch.tensor([0.5]))) == pytest.approx(math.log(2))
    assert float(bernoulli_entropy(torch.tensor([0.8]))) == pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)))
    extreme = symmetric_bernoulli_kl(torch.tensor([0.0]), torch.tensor([1.0]))
    assert torch.isfinite(extreme) and float(bernoulli_entropy(torch.tensor([1.0]))) < 1e-4


def test_scir_regularizer_by_hand_and_gradients():
    pj = torch.tensor([0.8], requires_grad=True)
    pi = torch.tensor([0.6], requires_grad=True)
    reg = scir_regularizer(pj, pi, lambda_cons=2.0, lambda_conf=0.5)
    entropy = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    expected = 2.0 * float(symmetric_bernoulli_kl(pj.detach(), pi.detach())) + 0.5 * entropy
    assert reg.item() == pytest.approx(expected)
    reg.sum().backward()
    # the consistency term pulls the two together: lower p_J, raise p_I (the entropy term pushes both up)
    assert pj.grad.item() > 0 and pi.grad.item() < 0
    assert float(scir_regularizer(pj.detach(), pi.detach(), 0.0, 0.0)) == 0.0


def test_candidate_pairs_orientation_and_cap():
    scores = [0.1, None, 0.7, 0.3]
    assert candidate_pairs(scores) == [(2, 0), (2, 3), (3, 0)]
    assert candidate_pairs(scores, max_pairs=1) == [(2, 0)]
    assert candidate_pairs([0.5, 0.5]) == [(0, 1)]
    assert candidate_pairs([0.5, None]) == []


def test_implicit_preference_and_agreement():
    assert implicit_preference(0.0, 0.0) == 0.5
    assert implicit_preference(1.0, 0.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert implicit_preference(-800.0, 0.0) == pytest.approx(0.0) and implicit_preference(800.0, 0.0) == 1.0
    assert agreement(0.7, 0.6) == 1 and agreement(0.3, 0.2) == -1 and agreement(0.7, 0.4) == 0
    assert agreement(0.7, 0.5) == 0  # an implicit reward with no opinion never agrees
    assert agreement(0.7, 0.55, margin=0.1) == 0 and agreement(0.7, 0.65, margin=0.1) == 1


# ---------------------------------------------------------------------------------------------
# the judge's score distribution over its template's range (OSP, SCIR pointwise)


def test_score_distribution_over_the_template_range():
    from selfalign.rewards.judge import SANDBOX_SCORES, SRLM_SCORES, score_distribution

    # generate mode: shares of the parsed scores; 0 is a score of the srlm range
    d = score_distribution({"parsed": [0, 5, None, 5]}, SRLM_SCORES)
    assert d.tolist() == pytest.approx([1 / 3, 0, 0, 0, 0, 2 / 3])
    d = score_distribution({"parsed": [1, 5, None]}, SANDBOX_SCORES)
    assert d.tolist() == pytest.approx([0.5, 0, 0, 0, 0.5])
    assert score_distribution({"parsed": [None, None]}, SRLM_SCORES) is None
    assert score_distribution({}, SANDBOX_SCORES) is None
    # expected mode: the stored softmax
    probs = [0.1, 0.0, 0.2, 0.3, 0.0, 0.4]
    assert score_distribution({"score_probs": probs}, SRLM_SCORES).tolist() == probs
    # details from a judge with another range are refused
    with pytest.raises(ValueError, match="6 score probabilities for the 5 scores"):
        score_distribution({"score_probs": probs}, SANDBOX_SCORES)
    with pytest.raises(ValueError, match="not all in"):
        score_distribution({"parsed": [0, 3]}, SANDBOX_SCORES)


def test_osp_label_from_judgments_that_score_0():
    from types import SimpleNamespace

    from selfalign.methods.osp import OSP
    from selfalign.rewards.judge import JudgeConfig

    groups = {"p": {"samples": [
        {"details": {"judge": {"parsed": [4, 5, None]}}},  # shares: 4 → ½, 5 → ½
        {"details": {"judge": {"parsed": [0, 4, 0]}}},  # 0 → ⅔, 4 → ⅓
        {"details": {"judge": {"parsed": [None, None]}}},
    ]}}
    pairs = [{"prompt_id": "p", "chosen_sample": 0, "rejected_sample": 1},
             {"prompt_id": "p", "chosen_sample": 0, "rejected_sample": 2}]
    recipe = SimpleNamespace(rewards=SimpleNamespace(judge=JudgeConfig(template="srlm")))
    stats = OSP(recipe).label_pairs(None, 1, groups, pairs)
    # P(S0 > S1) + ½P(=): S0 = 4 beats 0 (½·⅔), ties 4 (½·⅓·½); S0 = 5 beats both (½) → ⅓ + 1/12 + ½ = 11/12
    assert pairs[0]["label"] == pytest.approx(11 / 12)
    assert "label" not in pairs[1]  # the rejected sample has no parsed judgment: the hard label stays
    assert stats == {"label_mean": pytest.approx(11 / 12), "label_missing": 1}
