"""Ranking consistency between two reward models' scores of the same samples, CREAM's regulariser
(Wang et al. 2025, https://arxiv.org/abs/2410.12735).

Per prompt, the N samples are ranked once by the current reward r_t and once by the previous round's r_{t−1};
c = (τ + 1)/2 ∈ [0, 1] with τ Kendall's tau between the two rankings, and the dataset consistency C is the mean of
c over prompts. Spearman's ρ and "top-order" (do the argmax and the argmin agree) are the paper's alternatives.

Ranks are ordinal, exactly as CREAM's released code ranks (Raibows/CREAM, `cal_consistency.py`, the `__main__`
block, lines 31–32: `rank1 = rankdata(score1, method='ordinal')`, scipy.stats): rank 1 is the LOWEST score, n the
highest, and among equal scores the EARLIER sample gets the lower rank (scipy sorts stably), so a ranking never has
ties. A tie therefore counts as "the later sample is better": [1, 1, 2] ranks [1, 2, 3], the same ranking as
[1, 2, 3], and a constant vector ranks in sample order, the same ranking as an increasing one. (Until issue 12
selfalign broke ties the other way, the earlier sample better.) The released code then takes
`kendalltau(rank1, rank2)` (lines 35–38) or `spearmanr(rank1, rank2)` (lines 40–42) of the ranks and maps each to
(x + 1)/2; on tie-free ranks scipy's tau-b is the tau computed here and Spearman's ρ is 1 − 6Σd²/(n(n² − 1)).

Top-order differs on purpose: the released code (lines 44–48) tests `rank1[0] == rank2[0] and rank1[-1] ==
rank2[-1]`, i.e. whether samples 0 and N−1 get the same ranks under both rewards, which is not the paper's "do the
best and the worst sample agree"; selfalign compares the argmax and the argmin (by the same ordinal ranks).

With fewer than two samples there is nothing to disagree on: every consistency is 1.0 (the released code would get
NaN from scipy; with its N = 5 samples it never has fewer than two).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Scores = Sequence[float]


def ordinal_ranks(scores: Scores) -> list[int]:
    """Rank of each sample, 1 = lowest score, n = highest; equal scores are ranked in sample order (the earlier one
    lower). The same as `scipy.stats.rankdata(scores, method="ordinal")`, which CREAM's released code uses."""
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    ranks = [0] * len(scores)
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank
    return ranks


def _paired_ranks(a: Scores, b: Scores) -> tuple[list[int], list[int]]:
    if len(a) != len(b):
        raise ValueError(f"the two score vectors rank different samples: lengths {len(a)} and {len(b)}")
    return ordinal_ranks(a), ordinal_ranks(b)


def kendall_consistency(a: Scores, b: Scores) -> float:
    """(τ + 1)/2, τ = (concordant − discordant) / (n(n−1)/2) over sample pairs of the two ordinal rankings.

    Ordinal ranks have no ties, so this τ is both tau-a and tau-b. 1.0 for identical rankings, 0.0 for reversed ones.
    """
    ra, rb = _paired_ranks(a, b)
    n = len(ra)
    if n < 2:
        return 1.0
    s = sum(1 if (ra[i] - ra[j]) * (rb[i] - rb[j]) > 0 else -1 for i in range(n) for j in range(i + 1, n))
    tau = s / (n * (n - 1) / 2)
    return (tau + 1) / 2


def spearman_consistency(a: Scores, b: Scores) -> float:
    """(ρ + 1)/2, ρ = 1 − 6 Σ d_i² / (n(n² − 1)) with d_i the difference of sample i's two ordinal ranks."""
    ra, rb = _paired_ranks(a, b)
    n = len(ra)
    if n < 2:
        return 1.0
    rho = 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb, strict=True)) / (n * (n * n - 1))
    return (rho + 1) / 2


def toporder_consistency(a: Scores, b: Scores) -> float:
    """1.0 when both the best (rank n) and the worst (rank 1) sample are the same under a and b, else 0.0.

    By the ordinal tie rule the best of tied maxima is the latest and the worst of tied minima the earliest. (CREAM's
    released code compares the ranks of samples 0 and N−1 instead; see the module docstring.)
    """
    ra, rb = _paired_ranks(a, b)
    n = len(ra)
    if n < 2:
        return 1.0
    agree = ra.index(n) == rb.index(n) and ra.index(1) == rb.index(1)
    return 1.0 if agree else 0.0


CONSISTENCY: dict[str, Callable[[Scores, Scores], float]] = {
    "kendall": kendall_consistency,
    "spearman": spearman_consistency,
    "toporder": toporder_consistency,
}


def dataset_consistency(pairs_of_vectors: Sequence[tuple[Scores, Scores]],
                        method: str = "kendall") -> tuple[list[float], float]:
    """Per-prompt consistencies c_j of (scores by r_t, scores by r_{t−1}) and their mean C (CREAM's "avg").

    The per-prompt list is CREAM's "dyn" label. With no prompts C is 1.0, as for a prompt with one sample.
    """
    if method not in CONSISTENCY:
        raise ValueError(f"unknown consistency method {method!r}; expected one of {sorted(CONSISTENCY)}")
    fn = CONSISTENCY[method]
    per_prompt = [fn(a, b) for a, b in pairs_of_vectors]
    mean = sum(per_prompt) / len(per_prompt) if per_prompt else 1.0
    return per_prompt, mean
