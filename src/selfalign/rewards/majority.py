"""Self-consistency as a reward: the share of a prompt's samples that reach the same final answer.

Wang et al. 2023 (https://arxiv.org/abs/2203.11171): "a complex reasoning problem typically admits
multiple different ways of thinking leading to its unique correct answer". A sample whose answer
agrees with many of its siblings is more likely right; no ground truth is used.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from selfalign.rewards.base import RewardOutput, RewardSpec, TokenIds
from selfalign.rewards.verifier import extract_answer
from selfalign.rewards.voting import majority_vote


def agreement_scores(answers: list[str | None]) -> list[float]:
    """For each sample, the fraction of the group (itself included) with its answer; no answer → 0."""
    counts = Counter(a for a in answers if a is not None)
    return [counts[a] / len(answers) if a is not None else 0.0 for a in answers]


def majority_match(answers: list[str | None]) -> list[float]:
    """For each sample, 1.0 if its answer is the group's majority answer, else 0.0 (no answer → 0).

    The label TTRL (Zuo et al. 2025, https://arxiv.org/abs/2504.16084) rewards GRPO with: "majority voting
    ... as the estimated label". Ties go to the answer seen first (`voting.majority_vote`).
    """
    winner = majority_vote(answers)
    return [1.0 if a is not None and a == winner else 0.0 for a in answers]


@dataclass
class MajorityConfig:
    """Self-consistency (no ground truth). score `share`: the share of the prompt's samples with the sample's final
    answer (Wang et al.); `match`: 1 if its answer is the prompt's majority answer, else 0 (TTRL's label)."""

    score: Literal["share", "match"] = "share"


class MajorityReward:
    name = "majority"

    def __init__(self, cfg: MajorityConfig | None = None):
        self.cfg = cfg or MajorityConfig()

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        """Samples are grouped by their prompt row's `id`; all samples of a prompt must be in one call."""
        rule = agreement_scores if self.cfg.score == "share" else majority_match
        answers = [extract_answer(y) for y in responses]
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault(str(r["id"]), []).append(i)
        scores: list[float | None] = [None] * len(responses)
        for idx in groups.values():
            for i, s in zip(idx, rule([answers[i] for i in idx]), strict=True):
                scores[i] = s
        return RewardOutput(scores, [{"answer": a} for a in answers])


SPEC = RewardSpec(
    "majority", MajorityConfig, lambda cfg, ctx: MajorityReward(cfg),
    "self-consistency: the share of its prompt's samples with its final answer (score: match, TTRL: 1 if it is the "
    "majority answer)", needs=(), grouped=True)
