"""Meta-Rewarding's length-controlled pairs (Wu et al. 2024, https://arxiv.org/abs/2407.19594), `pairs.length_control`
(ρ): among the samples whose score is near the top, the shortest is chosen; among those near the bottom, the longest
is rejected, so DPO does not learn that longer is better.
"""

from __future__ import annotations

from collections.abc import Sequence

from selfalign.config import ConfigError
from selfalign.methods.base import Method
from selfalign.methods.dpo import build_pairs


def length_controlled(scores: Sequence[float | None], lengths: Sequence[int], rho: float,
                      min_margin: float = 0.0) -> tuple[int, int] | None:
    """chosen = the shortest response with S ≥ (1 − ρ)·S_max + ρ·S_min, rejected = the longest with
    S ≤ (1 − ρ)·S_min + ρ·S_max (equal lengths: the first sample). None when the chosen does not score more than
    min_margin above the rejected (all scores tied, or overlapping bands picked the same sample). ρ = 0 is best vs
    worst.
    """
    scored = [(s, i) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return None
    hi, lo = max(s for s, _ in scored), min(s for s, _ in scored)
    top = [i for s, i in scored if s >= (1 - rho) * hi + rho * lo]
    bottom = [i for s, i in scored if s <= (1 - rho) * lo + rho * hi]
    w = min(top, key=lambda i: (lengths[i], i))
    r = max(bottom, key=lambda i: (lengths[i], -i))
    if scores[w] - scores[r] <= min_margin:
        return None
    return w, r


class MetaRewarding(Method):
    where = "pairs.length_control"  # the recipe key its errors name
    name = "meta_rewarding"
    title = "Meta-Rewarding length control"
    pairs_what = "length-controlled pairs"

    @classmethod
    def active(cls, recipe) -> bool:
        return recipe.pairs.length_control is not None


    def roles(self) -> set[str]:
        return {"pairs"}

    def check(self) -> None:
        if self.recipe.pairs.rule != "best_vs_worst":
            raise ConfigError("pairs.length_control: applies to rule best_vs_worst only")

    def choose(self, scores: list[float | None], samples: list[dict]) -> list[tuple[int, int]]:
        p = self.recipe.pairs
        lengths = [len(s["response"]) for s in samples]
        return [pair for pair in [length_controlled(scores, lengths, p.length_control, p.min_margin)] if pair]

    def build_pairs(self, ctx, t, groups):
        pairs, dropped = build_pairs(list(groups.values()), self.recipe.pairs.reward, self.choose)
        return pairs, {"kept": len(pairs), "dropped_ties": dropped}
