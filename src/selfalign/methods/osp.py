"""OSP, soft preference strength (Zhai et al. 2024), `pairs.label: judge_strength`: each pair's DPO label is the
judge's P(chosen ≻ rejected) ∈ [0, 1] instead of 1, and the loss −[s·log σ(βh) + (1−s)·log σ(−βh)]
(`SoftLabelDPOTrainer`). With `pairs.rule: all_pairs` a prompt gives several pairs from one ranking.
"""

from __future__ import annotations

import statistics

from selfalign.config import ConfigError
from selfalign.methods.base import Method
from selfalign.rewards.judge import score_distribution, score_range
from selfalign.rewards.preference import preference_strength


class OSP(Method):
    where = "pairs.label"  # the recipe key its errors name
    name = "osp"
    title = "OSP"
    label_what = "judge_strength"

    @classmethod
    def active(cls, recipe) -> bool:
        return recipe.pairs.label == "judge_strength"


    def roles(self) -> set[str]:
        return {"label"}

    def trainer(self) -> str:
        return "selfalign.trainers.soft_dpo:SoftLabelDPOTrainer"

    def check(self) -> None:
        if self.recipe.rewards.judge is None:
            raise ConfigError("pairs.label: judge_strength needs rewards.judge")

    def label_pairs(self, ctx, t, groups, pairs):
        """label = the judge's P(chosen ≻ rejected): the pair's `p_judge` when its builder computed one (SCIR),
        else from the two samples' score distributions (`preference_strength`); a pair whose samples have no parsed
        judgment keeps the hard label."""
        missing, scores = 0, score_range(self.recipe.rewards.judge)
        for q in pairs:
            if "p_judge" in q:
                q["label"] = q["p_judge"]
                continue
            samples = groups[q["prompt_id"]]["samples"]
            pc, pr = (score_distribution(samples[q[k]]["details"].get("judge", {}), scores)
                      for k in ("chosen_sample", "rejected_sample"))
            if pc is None or pr is None:
                missing += 1
                continue
            q["label"] = float(preference_strength(pc, pr))
        labels = [q["label"] for q in pairs if "label" in q]
        return {"label_mean": statistics.fmean(labels) if labels else None, "label_missing": missing}
