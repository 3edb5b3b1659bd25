"""SCIR's candidate pairs and the agreement filter between two internal reward models (Zhou et al. 2025)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def candidate_pairs(scores: Sequence[float | None], max_pairs: int | None = None) -> list[tuple[int, int]]:
    """Every unordered pair of scored samples as (i, j) with scores[i] ≥ scores[j] (equal: lower index first),
    largest gaps first, at most max_pairs of them. The orientation is only a convention: SCIR's filter decides
    which side is chosen."""
    scored = [i for i, s in enumerate(scores) if s is not None]
    pairs = []
    for a, i in enumerate(scored):
        for j in scored[a + 1:]:
            pairs.append((i, j) if scores[i] >= scores[j] else (j, i))
    pairs.sort(key=lambda ij: (-(scores[ij[0]] - scores[ij[1]]), ij))
    return pairs[:max_pairs] if max_pairs is not None else pairs


def implicit_preference(r1: float, r2: float) -> float:
    """σ(r1 − r2): the implicit reward's P(y1 ≻ y2) (Bradley–Terry on the implicit rewards)."""
    d = r1 - r2
    return 1 / (1 + math.exp(-d)) if d >= 0 else math.exp(d) / (1 + math.exp(d))


def agreement(p_judge: float, p_implicit: float, margin: float = 0.0) -> int:
    """+1 when both predictions prefer y1 by more than `margin` (p > 0.5 + margin), −1 when both prefer y2
    (p < 0.5 − margin), 0 otherwise (they disagree, or one is within the margin of 0.5)."""
    if p_judge > 0.5 + margin and p_implicit > 0.5 + margin:
        return 1
    if p_judge < 0.5 - margin and p_implicit < 0.5 - margin:
        return -1
    return 0
