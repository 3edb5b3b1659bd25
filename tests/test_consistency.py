"""Tests of CREAM's ranking consistency (ordinal ranks, Kendall, Spearman, top-order, dataset mean),
against values computed by hand in the comments, and against scipy's ordinal ranks, Kendall and Spearman as CREAM's
released code (Raibows/CREAM, cal_consistency.py) calls them, when scipy is installed."""

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
    ([0.5, 0.9, 0.1], [2, 3, 1]),  # 1 = lowest score, n = highest
    ([1, 1, 2], [1, 2, 3]),  # the tied 1s: the earlier sample gets the lower rank
    ([2, 1, 1], [3, 1, 2]),
    ([5, 5, 5], [1, 2, 3]),  # constant: ranked in sample order
    ([3, 7, 3, 7, 3], [1, 4, 2, 5, 3]),  # 3s take ranks 1..3 in sample order, then the 7s 4..5
    ([-1.0], [1]),
    ([], []),
])
def test_ordinal_ranks(scores, ranks):
    assert ordinal_ranks(scores) == ranks


def test_identical_rankings_are_fully_consistent():
    a, b = [3.0, 1.0, 2.0], [30.0, 10.0, 20.0]  # different scores, same ranks [3, 1, 2]
    assert kendall_consistency(a, b) == 1.0
    assert spearman_consistency(a, b) == 1.0
    assert toporder_consistency(a, b) == 1.0


def test_reversed_rankings_are_fully_inconsistent():
    a, b = [1, 2, 3, 4], [4, 3, 2, 1]
    assert kendall_consistency(a, b) == 0.0  # all 6 pairs discordant: τ = −1
    assert spearman_consistency(a, b) == 0.0  # ρ = −1
    assert toporder_consistency(a, b) == 0.0


def test_one_swap_among_four():
    a, b = [4, 3, 2, 1], [4, 3, 1, 2]  # ranks [4, 3, 2, 1] vs [4, 3, 1, 2]
    # 6 pairs, only (2, 3) discordant: τ = (5 − 1)/6 = 2/3, c = (2/3 + 1)/2 = 5/6
    assert kendall_consistency(a, b) == pytest.approx(5 / 6)
    # d = [0, 0, −1, 1], Σd² = 2: ρ = 1 − 6·2/(4·15) = 0.8, c = 0.9
    assert spearman_consistency(a, b) == pytest.approx(0.9)
    # same best (sample 0), different worst (sample 3 vs 2)
    assert toporder_consistency(a, b) == 0.0


def test_ties_are_broken_by_sample_order():
    # CREAM's rule: among equal scores the earlier sample ranks lower, i.e. counts as the worse one
    a, b = [1, 1, 2], [1, 2, 3]  # ranks [1, 2, 3] vs [1, 2, 3]: the same ranking
    assert kendall_consistency(a, b) == 1.0
    assert spearman_consistency(a, b) == 1.0
    assert toporder_consistency(a, b) == 1.0
    # the earlier sample better instead: ranks [1, 2, 3] vs [2, 1, 3]
    a, b = [1, 1, 2], [2, 1, 3]
    # pairs (0,1): 1<2 vs 2>1 discordant; (0,2) and (1,2) concordant: τ = (2 − 1)/3 = 1/3, c = 2/3
    assert kendall_consistency(a, b) == pytest.approx(2 / 3)
    # d = [−1, 1, 0], Σd² = 2: ρ = 1 − 6·2/(3·8) = 0.5, c = 0.75
    assert spearman_consistency(a, b) == pytest.approx(0.75)
    # best: sample 2 under both; worst: a's tied minima (0, 1) give the earliest, 0, but b's worst is 1
    assert toporder_consistency(a, b) == 0.0


def test_tied_scores_on_both_sides():
    a, b = [2, 2, 1, 1], [1, 1, 2, 2]  # ranks [3, 4, 1, 2] vs [1, 2, 3, 4]
    # pairs: (0,1) concordant (3<4, 1<2); (2,3) concordant (1<2, 3<4); the 4 cross pairs discordant
    # τ = (2 − 4)/6 = −1/3, c = 1/3
    assert kendall_consistency(a, b) == pytest.approx(1 / 3)
    # d = [2, 2, −2, −2], Σd² = 16: ρ = 1 − 6·16/(4·15) = −0.6, c = 0.2
    assert spearman_consistency(a, b) == pytest.approx(0.2)
    # best: sample 1 (rank 4) vs 3; worst: sample 2 (rank 1) vs 0
    assert toporder_consistency(a, b) == 0.0


def test_constant_vectors():
    # two constant vectors rank in the same (sample) order: fully consistent
    assert kendall_consistency([5, 5, 5], [2, 2, 2]) == 1.0
    assert spearman_consistency([5, 5, 5], [2, 2, 2]) == 1.0
    assert toporder_consistency([5, 5, 5], [2, 2, 2]) == 1.0
    # a constant vector ranks [1, 2, 3], as increasing scores do: fully consistent
    assert kendall_consistency([5, 5, 5], [1, 2, 3]) == 1.0
    assert spearman_consistency([5, 5, 5], [1, 2, 3]) == 1.0
    assert toporder_consistency([5, 5, 5], [1, 2, 3]) == 1.0
    # decreasing scores rank [3, 2, 1]: reversed
    assert kendall_consistency([5, 5, 5], [3, 2, 1]) == 0.0
    assert spearman_consistency([5, 5, 5], [3, 2, 1]) == 0.0
    assert toporder_consistency([5, 5, 5], [3, 2, 1]) == 0.0


@pytest.mark.parametrize("fn", list(CONSISTENCY.values()))
def test_fewer_than_two_samples_are_consistent(fn):
    assert fn([], []) == 1.0
    assert fn([0.3], [-7.0]) == 1.0


@pytest.mark.parametrize("fn", list(CONSISTENCY.values()))
def test_lengths_must_match(fn):
    with pytest.raises(ValueError, match="lengths 3 and 2"):
        fn([1, 2, 3], [1, 2])


def test_spearman_and_kendall_on_five_samples():
    a = [0.1, 0.4, 0.3, 0.9, 0.2]  # ranks [1, 4, 3, 5, 2]
    b = [2, 5, 1, 4, 3]  # ranks [2, 5, 1, 4, 3]
    assert ordinal_ranks(a) == [1, 4, 3, 5, 2] and ordinal_ranks(b) == [2, 5, 1, 4, 3]
    # d = [−1, −1, 2, 1, −1], Σd² = 8: ρ = 1 − 6·8/(5·24) = 0.6, c = 0.8
    assert spearman_consistency(a, b) == pytest.approx(0.8)
    # discordant pairs (0,2), (1,3), (2,4); 7 of 10 concordant: τ = (7 − 3)/10 = 0.4, c = 0.7
    assert kendall_consistency(a, b) == pytest.approx(0.7)


@pytest.mark.parametrize(("a", "b", "expected"), [
    ([1, 3, 2], [10, 30, 20], 1.0),
    ([3, 2, 1], [3, 1, 2], 0.0),  # same best, different worst
    ([3, 2, 1], [2, 3, 1], 0.0),  # different best, same worst
    ([1, 5, 2, 4, 3], [0, 9, 4, 3, 1], 1.0),  # middle order differs; best (1) and worst (0) agree
    ([2, 2, 1], [1, 2, 0], 1.0),  # best: latest of a's tied maxima, 1, as b's; worst: 2 under both
    ([2, 2, 1], [2, 1, 1], 0.0),  # best: 1 vs 0 (b's maximum is sample 0 alone)
    ([3, 1, 1], [3, 1, 2], 1.0),  # worst: earliest of a's tied minima, 1, as b's; best: 0 under both
    ([3, 1, 1], [3, 2, 1], 0.0),  # worst: 1 vs 2
    # CREAM's released test compares the ranks of samples 0 and N−1 (ranks [3, 1, 2, 4] and [3, 2, 1, 4]: both
    # agree, so it says 1.0); the argmin differs (sample 1 vs 2), so selfalign says 0.0
    ([5, 1, 2, 9], [5, 2, 1, 9], 0.0),
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


def test_matches_cream_released_code_with_scipy():
    """CREAM's cal_consistency.py: rankdata(method='ordinal') of each score vector, then kendalltau or spearmanr of
    the ranks, scaled to (x + 1)/2. Scores drawn from few values so that most vectors have ties."""
    stats = pytest.importorskip("scipy.stats")
    import random

    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(2, 7)
        a = [rng.choice([0.0, 0.5, 1.0, 2.0]) for _ in range(n)]
        b = [rng.choice([-1, 0, 1]) for _ in range(n)]
        rank1, rank2 = stats.rankdata(a, method="ordinal"), stats.rankdata(b, method="ordinal")
        assert ordinal_ranks(a) == rank1.tolist() and ordinal_ranks(b) == rank2.tolist()
        assert kendall_consistency(a, b) == pytest.approx((stats.kendalltau(rank1, rank2)[0] + 1) / 2)
        assert spearman_consistency(a, b) == pytest.approx((stats.spearmanr(rank1, rank2)[0] + 1) / 2)
        # top-order: the argmax and argmin by these ranks (not the released code's samples 0 and N−1)
        top = int(rank1.argmax()) == int(rank2.argmax()) and int(rank1.argmin()) == int(rank2.argmin())
        assert toporder_consistency(a, b) == float(top)
