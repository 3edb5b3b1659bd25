"""Choosing one final answer from N samples: Borda voting weighted by a score, and majority voting.

Borda voting (Kang et al. 2025, https://arxiv.org/abs/2502.18581): rank the N samples by score
(r = 1 best); sample r casts v(r) = (N − r + 1)^p votes for its final answer; the answer with most
votes wins. p = 0 is plain majority voting; as p grows the top-ranked samples dominate.

Against the released code (backprop07/Self-Certainty, `src/voting_from_list.py`, `confidence_with_file`):
- Ranks: the same. It sorts the samples by confidence with `sorted(..., reverse=True)` (line 38), which is stable,
  so equal scores keep sample order (the earlier sample ranks better), as `rank_order` does; a sample without an
  extractable answer keeps its rank and its votes are lost (lines 48–50), as in `borda_votes`.
- Vote ties: different on purpose. It adds each sample's votes to the first earlier sample with the same answer
  (lines 51–66) and takes `max` and `.index` of those totals (lines 70–71), so equal totals (compared exactly) go to
  the answer that appears first in sample order. selfalign gives them to the answer holding the best-ranked sample
  (the highest single score, then the earliest), so that the score, the point of the method, still decides when the
  sums do not, and not the order the samples were drawn in; and it counts totals within 1e-9 (relative) as equal,
  so float rounding of the sums of (N − r + 1)^p decides nothing. Without ties both pick the same answer; for
  `majority_vote` (all scores equal, so the best-ranked sample is the earliest) both rules are "the answer seen
  first".
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def rank_order(scores: Sequence[float | None]) -> list[int]:
    """Sample indices best first: by score descending, ties by sample order; None and NaN rank last."""
    def key(i: int) -> tuple[bool, float, int]:
        s = scores[i]
        missing = s is None or math.isnan(s)
        return missing, 0.0 if missing else -s, i

    return sorted(range(len(scores)), key=key)


def borda_votes(answers: Sequence[str | None], scores: Sequence[float | None],
                power: float = 0.5) -> dict[str, float]:
    """Σ over the samples of each answer of (N − r + 1)^power, r = rank by `scores` (None answers get none)."""
    if len(answers) != len(scores):
        raise ValueError(f"borda_votes: {len(answers)} answers but {len(scores)} scores")
    n = len(answers)
    votes: dict[str, float] = {}
    for r, i in enumerate(rank_order(scores), start=1):
        if answers[i] is not None:
            votes[answers[i]] = votes.get(answers[i], 0.0) + (n - r + 1) ** power
    return votes


def borda_vote(answers: Sequence[str | None], scores: Sequence[float | None], power: float = 0.5) -> str | None:
    """The answer with the most Borda votes; None only when no sample has an answer.

    Ties in votes go to the answer holding the best-ranked sample (highest single score, then
    earliest sample). Votes within 1e-9 (relative) count as tied, so float rounding in the sums of
    (N − r + 1)^p decides nothing.
    """
    votes = borda_votes(answers, scores, power)
    if not votes:
        return None
    most = max(votes.values())
    tied = {a for a, v in votes.items() if math.isclose(v, most, rel_tol=1e-9)}
    return next(answers[i] for i in rank_order(scores) if answers[i] in tied)


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent answer (ties: the one seen first); None only when no sample has an answer."""
    return borda_vote(answers, [0.0] * len(answers), power=0.0)
