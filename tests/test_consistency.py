"""Tests of CREAM's ranking consistency (ordinal ranks, Kendall, Spearman, top-order, dataset mean),
against values computed by hand in the comments."""

from __future__ import annotations

import pytest
import torch

from selfalign.rewards.consistency import (
    CONSISTENCY,
    dataset_consistency,
    kendall_consistency,
    ordinal_ranks,
    spearman_consistency,
    toporder_consistency,
)


@pytest.mark.parametrize(("scores", "ranks"), [
    ([0.5, 0.9, 0.1], [2, 1, 3]),  # 1 = highest score
    ([1, 1, 2], [2, 3, 1]),  # the tied 1s: the earlier sample gets the better rank
    ([5, 5, 5], [1, 2, 3]),  # constant: ranked in sample order
    ([-1.0], [1]),
    ([], []),
])
def test_ordinal_ranks(scores, ranks):
    assert ordinal_ranks(scores) == ranks


def test_identical_rankings_are_fully_consistent():
    a, b = [3.0, 1.0, 2.0], [30.0, 10.0, 20.0]  # different scores, same ranks [1, 3, 2]
    assert kendall_consistency(a, b) == 1.0
    assert spearman_consistency(a, b) == 1.0
    assert toporder_consistency(a, b) == 1.0


def test_reversed_rankings_are_fully_inconsistent():
    a, b = [1, 2, 3, 4], [4, 3, 2, 1]
    assert kendall_consistency(a, b) == 0.0  # all 6 pairs discordant: τ = −1
    assert spearman_consistency(a, b) == 0.0  # ρ = −1
    assert toporder_consistency(a, b) == 0.0


def test_one_swap_among_four():
    a, b = [4, 3, 2, 1], [4, 3, 1, 2]  # ranks [1, 2, 3, 4] vs [1, 2, 4, 3]
    # 6 pairs, only (2, 3) discordant: τ = (5 − 1)/6 = 2/3, c = (2/3 + 1)/2 = 5/6
    assert kendall_consistency(a, b) == pytest.approx(5 / 6)
    # d = [0, 0, −1, 1], Σd² = 2: ρ = 1 − 6·2/(4·15) = 0.8, c = 0.9
    assert spearman_consistency(a, b) == pytest.approx(0.9)
    # same best (sample 0), different worst (sample 3 vs 2)
    assert toporder_consistency(a, b) == 0.0


def test_ties_are_broken_by_sample_order():
    a, b = [1, 1, 2], [1, 2, 3]  # ranks [2, 3, 1] vs [3, 2, 1]
    # pairs (0,1): 2<3 vs 3>2 discordant; (0,2): 2>1, 3>1 concordant; (1,2): 3>1, 2>1 concordant
    # τ = (2 − 1)/3 = 1/3, c = (1/3 + 1)/2 = 2/3
    assert kendall_consistency(a, b) == pytest.approx(2 / 3)
    # d = [−1, 1, 0], Σd² = 2: ρ = 1 − 6·2/(3·8) = 0.5, c = 0.75
    assert spearman_consistency(a, b) == pytest.approx(0.75)
    # best: sample 2 under both; worst: a's tied minima (0, 1) give the latest, 1, but b's worst is 0
    assert toporder_consistency(a, b) == 0.0


def test_constant_vectors():
    # two constant vectors rank in the same (sample) order: fully consistent
    assert kendall_consistency([5, 5, 5], [2, 2, 2]) == 1.0
    assert spearman_consistency([5, 5, 5], [2, 2, 2]) == 1.0
    assert toporder_consistency([5, 5, 5], [2, 2, 2]) == 1.0
    # a constant vector ranks [1, 2, 3]; increasing scores rank [3, 2, 1]: reversed
    assert kendall_consistency([5, 5, 5], [1, 2, 3]) == 0.0


@pytest.mark.parametrize("fn", list(CONSISTENCY.values()))
def test_fewer_than_two_samples_are_consistent(fn):
    assert fn([], []) == 1.0
    assert fn([0.3], [-7.0]) == 1.0


@pytest.mark.parametrize("fn", list(CONSISTENCY.values()))
def test_lengths_must_match(fn):
    with pytest.raises(ValueError, match="lengths 3 and 2"):
        fn([1, 2, 3], [1, 2])


def test_spearman_and_kendall_on_five_samples():
    a = [0.1, 0.4, 0.3, 0.9, 0.2]  # ranks [5, 2, 3, 1, 4]
    b = [2, 5, 1, 4, 3]  # ranks [4, 1, 5, 2, 3]
    assert ordinal_ranks(a) == [5, 2, 3, 1, 4] and ordinal_ranks(b) == [4, 1, 5, 2, 3]
    # d = [1, 1, −2, −1, 1], Σd² = 8: ρ = 1 − 6·8/(5·24) = 0.6, c = 0.8
    assert spearman_consistency(a, b) == pytest.approx(0.8)
    # discordant pairs (0,2), (1,3), (2,4); 7 of 10 concordant: τ = (7 − 3)/10 = 0.4, c = 0.7
    assert kendall_consistency(a, b) == pytest.approx(0.7)


@pytest.mark.parametrize(("a", "b", "expected"), [
    ([1, 3, 2], [10, 30, 20], 1.0),
    ([3, 2, 1], [3, 1, 2], 0.0),  # same best, different worst
    ([3, 2, 1], [2, 3, 1], 0.0),  # different best, same worst
    ([1, 5, 2, 4, 3], [0, 9, 4, 3, 1], 1.0),  # middle order differs; best (1) and worst (0) agree
    ([2, 2, 1], [2, 1, 1], 1.0),  # best: earliest of tied maxima (0, 0); worst: latest of tied minima (2, 2)
])
def test_toporder(a, b, expected):
    assert toporder_consistency(a, b) == expected


def test_tensors_are_accepted():
    assert kendall_consistency(torch.tensor([4.0, 3.0, 2.0, 1.0]), [4, 3, 1, 2]) == pytest.approx(5 / 6)


def test_dataset_consistency():
    vectors = [([1, 2, 3], [1, 2, 3]), ([1, 2, 3], [3, 2, 1]), ([4, 3, 2, 1], [4, 3, 1, 2])]
    per_prompt, mean = dataset_consistency(vectors, "kendall")
    assert per_prompt == pytest.approx([1.0, 0.0, 5 / 6])
    assert mean == pytest.approx(11 / 18)  # (1 + 0 + 5/6) / 3
    per_prompt, mean = dataset_consistency(vectors, "spearman")
    assert per_prompt == pytest.approx([1.0, 0.0, 0.9])
    assert mean == pytest.approx(1.9 / 3)
    assert dataset_consistency(vectors, "toporder") == ([1.0, 0.0, 0.0], pytest.approx(1 / 3))
    assert dataset_consistency([], "kendall") == ([], 1.0)
    with pytest.raises(ValueError, match="unknown consistency method"):
        dataset_consistency(vectors, "pearson")
