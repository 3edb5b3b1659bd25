"""SCIR, self-consistent internal rewards (Zhou et al. 2025, https://arxiv.org/abs/2502.08922), section `scir`.

Two internal reward models of the same policy, the judge and the implicit DPO reward (`rewards.implicit`, whose
reference is the fixed anchor), each predict P(y1 ≻ y2) for every candidate pair of a prompt's samples: the judge
from its option logits (both presentation orders averaged, `pairwise`) or from the two samples' score
distributions (`pointwise`), the implicit reward as σ(r(y1) − r(y2)). DPO trains on the pairs where the two agree
(weight 1, the others 0), and the loss adds λ_cons · symmetric KL between the two predictions plus λ_conf · the
entropy of their mean (`trainers/scir.py`). The paper gives no formulas or code: the forms and defaults of the
added terms and of the agreement rule are ours (README, METHODS.md).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from selfalign.config import ConfigError, opt
from selfalign.methods.base import Method
from selfalign.rewards.judge import JudgeReward, score_distribution, score_range
from selfalign.rewards.pairwise_judge import DEFAULT_PAIRWISE_TEMPLATE, PairwiseJudge
from selfalign.rewards.preference import preference_strength


@dataclass
class SCIRConfig:
    """SCIR: the judge and the implicit reward each predict P(y1 ≻ y2) for every candidate pair of a prompt's
    samples; DPO trains on the pairs where they agree, and the loss adds λ_cons · symmetric KL between the two
    predictions plus λ_conf · the entropy of their mean. Forms and defaults not in the paper are ours (README)."""

    judge_format: Literal["pointwise", "pairwise"] = "pointwise"  # pointwise: from two score distributions
    pairwise_template: str = DEFAULT_PAIRWISE_TEMPLATE  # {prompt}, {response_a}, {response_b}
    options: list[str] = field(default_factory=lambda: ["A", "B"])  # pairwise answer tokens: first-, second-shown
    margin: float = opt(0.0, lo=0.0, hi=0.5)  # agree: both predictions on the same side of 0.5 by > margin
    lambda_cons: float = opt(1.0, lo=0.0)
    lambda_conf: float = opt(0.1, lo=0.0)
    regularize: Literal["all", "agreed"] = "all"  # which candidate pairs carry the two added terms
    batch_size: int = opt(32, lo=1)  # pairwise judge forward passes in the pairs stage


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


class SCIR(Method):
    name = "scir"
    title = "SCIR"
    section = "scir"
    config = SCIRConfig
    pairs_what = "candidate pairs"

    def roles(self) -> set[str]:
        return {"pairs"}

    def trainer(self) -> str:
        return "selfalign.trainers.scir:SCIRTrainer"

    def check(self) -> None:
        judge, cfg = self.recipe.rewards.judge, self.cfg
        if judge is None or self.recipe.rewards.implicit is None:
            raise ConfigError("scir: needs rewards.judge and rewards.implicit (the two internal reward models)")
        if cfg.judge_format == "pointwise" and judge.mode != "expected":
            raise ConfigError("scir.judge_format: pointwise reads score-token logits; set rewards.judge.mode: expected")
        if cfg.judge_format == "pairwise":
            if len(cfg.options) != 2 or len(set(cfg.options)) != 2:
                raise ConfigError("scir.options: give two different answer strings (first-shown, second-shown)")
            missing = [k for k in ("{prompt}", "{response_a}", "{response_b}") if k not in cfg.pairwise_template]
            if missing:
                raise ConfigError(f"scir.pairwise_template: missing {', '.join(missing)}")

    def build_pairs(self, ctx, t, groups):
        """Every candidate pair, P_J and P_I from the round-start model, DPO weight 1 where they agree."""
        cfg, judge_cfg, p = self.cfg, self.recipe.rewards.judge, self.recipe.pairs
        cands = []
        for pid, grp in groups.items():  # candidates by pairs.reward: largest gaps first, unscored samples left out
            ranked = [None if s["scores"].get("implicit") is None else s["scores"].get(p.reward)
                      for s in grp["samples"]]
            cands += [(pid, i, j) for i, j in candidate_pairs(ranked, p.max_pairs_per_prompt)]
        if not cands:
            return [], {"candidates": 0, "kept": 0}
        tokenizer = ctx.store.tokenizer
        rows = [groups[pid]["row"] for pid, _, _ in cands]
        sample = [(groups[pid]["samples"][i], groups[pid]["samples"][j]) for pid, i, j in cands]
        y1, y2 = [a["response"] for a, _ in sample], [b["response"] for _, b in sample]
        r1, r2 = [a["scores"]["implicit"] for a, _ in sample], [b["scores"]["implicit"] for _, b in sample]
        if cfg.judge_format == "pointwise":
            judge = JudgeReward(None, tokenizer, judge_cfg)
            j1, j2 = judge.judge_prompts(rows, y1, expected=True), judge.judge_prompts(rows, y2, expected=True)
            scores = score_range(judge_cfg)
            p_judge = [float(preference_strength(*(score_distribution(s["details"].get("judge", {}), scores)
                                                   for s in ab)))
                       for ab in sample]
        else:
            judge = PairwiseJudge(tokenizer, cfg.pairwise_template, cfg.options)
            j1, j2 = judge.prompts(rows, y1, y2), judge.prompts(rows, y2, y1)
            p_judge = judge.probability(ctx.store.model(t - 1), rows, y1, y2, cfg.batch_size).tolist()
        p_implicit = [implicit_preference(a, b) for a, b in zip(r1, r2, strict=True)]
        pairs, agreed = [], 0
        for k, (pid, i, j) in enumerate(cands):
            side = agreement(p_judge[k], p_implicit[k], cfg.margin)
            agreed += side != 0
            if side == 0 and cfg.regularize == "agreed":
                continue
            swap = side == -1  # both prefer y2: it becomes the chosen response
            a, b = (j, i) if swap else (i, j)
            pj = 1 - p_judge[k] if swap else p_judge[k]
            pairs.append({
                "prompt_id": pid, "prompt": rows[k]["prompt_text"],
                "chosen": groups[pid]["samples"][a]["response"], "rejected": groups[pid]["samples"][b]["response"],
                "chosen_sample": a, "rejected_sample": b, "label": 1.0, "weight": float(side != 0),
                "judge_1": j2[k] if swap else j1[k], "judge_2": j1[k] if swap else j2[k],
                "reward0_chosen": r2[k] if swap else r1[k], "reward0_rejected": r1[k] if swap else r2[k],
                "p_judge": pj, "p_implicit": 1 - p_implicit[k] if swap else p_implicit[k],
            })
        gap = statistics.fmean(abs(a - b) for a, b in zip(p_judge, p_implicit, strict=True))
        return pairs, {"candidates": len(cands), "kept": len(pairs), "agreed": agreed,
                       "agreement_rate": agreed / len(cands), "mean_abs_disagreement": gap}

    def trainer_kwargs(self, ctx, pairs):
        tokenizer, cfg = ctx.store.tokenizer, self.cfg
        if cfg.judge_format == "pointwise":
            option_ids = JudgeReward(None, tokenizer, self.recipe.rewards.judge).score_token_ids(pairs[0]["judge_1"])
        else:
            option_ids = PairwiseJudge(tokenizer, cfg.pairwise_template, cfg.options).option_ids(pairs[0]["judge_1"])
        return {"judge_format": cfg.judge_format, "option_ids": option_ids,
                "implicit_beta": self.recipe.rewards.implicit.beta, "lambda_cons": cfg.lambda_cons,
                "lambda_conf": cfg.lambda_conf}

