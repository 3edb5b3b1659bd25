"""P(y1 ≻ y2) from a judge: from two pointwise score distributions, or from a pairwise prompt's option logits.

Both are differentiable functions of the judge's logits, so SCIR's consistency penalty can train through them, and
both give OSP's preference strength s ∈ [0, 1] of a pair.
"""

from __future__ import annotations

import torch


def preference_strength(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """P(S1 > S2) + ½·P(S1 = S2) for independent scores S1 ~ p1, S2 ~ p2 over the same ordered score values.

    The probability that the judge scores y1 above y2 when it draws one score for each, ties split evenly; it is
    0.5 for equal distributions and 1 − s with the arguments swapped.

    Args:
        p1: distribution over the K scores (ascending) of y1's judgment. Shape: (..., K)
        p2: the same for y2. Shape: (..., K)

    Returns:
        s: P(y1 ≻ y2). Shape: (...)
    """
    cdf2 = torch.cumsum(p2, dim=-1)
    below2 = cdf2 - p2  # P(S2 < k) for each score k
    return (p1 * (below2 + 0.5 * p2)).sum(-1)


def empirical_distribution(scores: list[int], values: tuple[int, ...]) -> torch.Tensor:
    """The share of `scores` equal to each of `values` (all zeros when `scores` is empty). Shape: (K,)"""
    counts = torch.tensor([sum(s == v for s in scores) for v in values], dtype=torch.float64)
    return counts / counts.sum() if scores else counts


def pairwise_judge_probability(logits_12: torch.Tensor, logits_21: torch.Tensor) -> torch.Tensor:
    """P(y1 ≻ y2) from a pairwise judge asked both ways, averaged to cancel position bias (SCIR).

    Args:
        logits_12: next-token logits of the two options (first-shown better, second-shown better) when y1 is shown
            first. Shape: (..., 2)
        logits_21: the same with y2 shown first. Shape: (..., 2)

    Returns:
        P(y1 ≻ y2) = ½·[softmax(logits_12)_0 + softmax(logits_21)_1]. Shape: (...)
    """
    first = torch.softmax(logits_12.float(), dim=-1)[..., 0]
    second = torch.softmax(logits_21.float(), dim=-1)[..., 1]
    return 0.5 * (first + second)


def judge_probability(judge_format: str, logits_1: torch.Tensor, logits_2: torch.Tensor) -> torch.Tensor:
    """P(y1 ≻ y2) from the judge's option logits of its two prompts per pair.

    `pointwise`: prompts 1, 2 judge y1, y2 alone and the logits are over the score tokens (ascending) →
    `preference_strength`. `pairwise`: prompts show (y1, y2) and (y2, y1) and the logits are over the two answer
    tokens → `pairwise_judge_probability`. Shapes: (batch, K), (batch, K) → (batch)
    """
    if judge_format == "pointwise":
        return preference_strength(torch.softmax(logits_1.float(), -1), torch.softmax(logits_2.float(), -1))
    if judge_format == "pairwise":
        return pairwise_judge_probability(logits_1, logits_2)
    raise ValueError(f"unknown judge format {judge_format!r}; expected 'pointwise' or 'pairwise'")
