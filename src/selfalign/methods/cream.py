"""CREAM, consistency-regularised self-rewarding (Wang et al., ICLR 2025, https://arxiv.org/abs/2410.12735; code
Raibows/CREAM), section `consistency`.

The round's samples are ranked twice: by the current model's reward (`pairs.reward`, in CREAM the implicit reward
against M_0) and by the previous model's reward of the same samples (the `previous` score column). Per prompt, the
consistency c_j of the two rankings (`rewards.consistency`: Kendall by default) and its mean C over the round become
the soft label of DPO: C for every pair (`variant: avg`, the paper's main one) or c_j (`dyn`). With `label: false`
the consistency is only measured and logged.

Ranks and ties follow CREAM's released code (scipy ordinal ranks; see `selfalign.rewards.consistency`). Where
selfalign differs from it on purpose: `method: toporder` in the released code (`cal_consistency.py`, `__main__`,
lines 44–48: `rank1[0] == rank2[0] and rank1[-1] == rank2[-1]`) compares the ranks of samples 0 and N−1, whichever
they are, not whether the best and the worst sample agree as the paper describes; we take this for a bug, and
selfalign compares the argmax and the argmin of the two rankings.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from typing import Literal

from selfalign.methods.base import Method
from selfalign.rewards import RewardContext, build_reward
from selfalign.rewards.consistency import CONSISTENCY
from selfalign.rewards.likelihood import LikelihoodReward

log = logging.getLogger(__name__)


@dataclass
class ConsistencyConfig:
    """CREAM: agreement between this round's ranking of the samples (by pairs.reward) and the previous model's
    ranking of the same samples, used as the soft label of DPO."""

    method: Literal["kendall", "spearman", "toporder"] = "kendall"
    variant: Literal["avg", "dyn"] = "avg"  # avg: dataset mean C for every pair; dyn: per-prompt c_j
    label: bool = True  # false: only measure and log the consistency (any method), DPO labels unchanged


class CREAM(Method):
    name = "cream"
    title = "CREAM"
    section = "consistency"
    config = ConsistencyConfig
    label_what = "consistency"
    label_hint = " (consistency.label: false only measures it)"

    def roles(self) -> set[str]:
        return {"label"} if self.cfg.label else set()

    def trainer(self) -> str | None:
        return "selfalign.trainers.soft_dpo:SoftLabelDPOTrainer" if self.cfg.label else None

    def extra_scores(self, ctx, t, rows, responses):
        """`previous`: the previous model's scores of the same samples by the reward of `pairs.reward`.

        When the previous model is the implicit reward's own reference (r ≡ 0), it ranks by its length-normalised
        likelihood instead, as CREAM's code does at the first iteration. Round 1 without seed SFT has no previous
        model: the column is None.
        """
        prev = ctx.store.previous(t)
        if prev is None:
            return {"previous": [None] * len(rows)}
        name, rewards = self.recipe.pairs.reward, self.recipe.rewards
        roles = ctx.store.roles(t)
        if name == "implicit" and prev is roles(rewards.implicit.reference):
            scorer = LikelihoodReward(prev, ctx.store.tokenizer, True, rewards.implicit.batch_size)
        else:
            scorer = build_reward(name, getattr(rewards, name), RewardContext(
                ctx.store.tokenizer, policy=prev, models=roles, seed=self.recipe.seed,
                max_new_tokens=self.recipe.generation.max_new_tokens))
        return {"previous": scorer.score(rows, responses).scores}

    def label_pairs(self, ctx, t, groups, pairs):
        """The ranking consistency per prompt and on average; unless `label` is false, each pair's soft label:
        dataset C (avg) or c_j (dyn)."""
        name = self.recipe.pairs.reward
        per_prompt = {}
        for pid, grp in groups.items():
            both = [(s["scores"][name], s["scores"].get("previous")) for s in grp["samples"]]
            both = [(a, b) for a, b in both if a is not None and b is not None]
            if len(both) >= 2:
                per_prompt[pid] = CONSISTENCY[self.cfg.method]([a for a, _ in both], [b for _, b in both])
        if not per_prompt:
            log.warning("no previous ranking to compare with (round 1 without seed SFT): labels stay 1.0")
            return {"consistency": None}
        dataset_c = statistics.fmean(per_prompt.values())
        for p in pairs:
            p["consistency"] = per_prompt.get(p["prompt_id"])
            if self.cfg.label:
                p["label"] = dataset_c if self.cfg.variant == "avg" or p["consistency"] is None else p["consistency"]
        return {"consistency": dataset_c, "consistency_std": statistics.pstdev(per_prompt.values())}
