"""How well each internal reward model tells right samples from wrong ones, where the prompts have answers: the
model's K samples per held-out prompt are scored by every configured reward (`rewards:` of the recipe, or the
listed ones) of the evaluated model and graded by the verifier.

    eval:
      evaluators:
        reward_auroc: {samples: 4}          # rewards: default every reward of the recipe but the verifier

Per reward: `<reward>/auroc`, the AUROC of the score for "this sample is right" over all samples (Mann-Whitney:
P(score of a random right sample > score of a random wrong one), ties half), and `<reward>/pairwise_accuracy`, the
same over right and wrong samples of the same prompt only (what ranking samples for pairs needs; the reward stage's
`<reward>_pairwise_accuracy` on the training samples). A reward that only tells easy prompts from hard ones has a
high AUROC and a pairwise accuracy of 0.5. Unscored samples are left out.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from selfalign.config import ConfigError, opt
from selfalign.evaluators.base import EvalContext, EvalResult, EvaluatorSpec


@dataclass
class RewardAurocConfig:
    """AUROC and within-prompt pairwise accuracy of internal rewards for "this sample is right"."""

    rewards: list[str] | None = None  # default: the recipe's `rewards:` (outside a run: likelihood, self_certainty)
    samples: int = opt(4, lo=1)  # K per prompt
    batch_size: int | None = opt(None, lo=1)  # override the rewards' batch sizes


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """P(s(right) > s(wrong)) + ½·P(s(right) = s(wrong)) over all (right, wrong) pairs: the area under the ROC curve
    with ties counted half (the Mann-Whitney U / (n₊·n₋)); None without both classes. O(n log n) by ranks."""
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: p[0])
    n_pos = sum(1 for _, y in pairs if y)
    n_neg = len(pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):  # average ranks (1-based) over each run of equal scores
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mid = (i + 1 + j) / 2
        rank_sum += mid * sum(1 for _, y in pairs[i:j] if y)
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def pairwise_accuracy(groups: Sequence[Sequence[tuple[float, bool]]]) -> float | None:
    """P(s(right) > s(wrong)) + ½·P(=) over (right, wrong) pairs of the same group (prompt); None without pairs."""
    wins, n = 0.0, 0
    for g in groups:
        right = [s for s, ok in g if ok]
        wrong = [s for s, ok in g if not ok]
        for r in right:
            for w in wrong:
                wins += 1.0 if r > w else 0.5 if r == w else 0.0
                n += 1
    return wins / n if n else None


def reward_names(cfg: RewardAurocConfig, ctx: EvalContext) -> list[str]:
    return list(cfg.rewards) if cfg.rewards is not None else [n for n in ctx.reward_names() if n != "verifier"]


def check(cfg: RewardAurocConfig, eval_cfg: Any, where: str) -> None:
    from selfalign.rewards import reward_spec

    for name in cfg.rewards or []:
        reward_spec(name, f"{where}.rewards")
    if cfg.rewards is not None and not cfg.rewards:
        raise ConfigError(f"{where}.rewards: an empty list; list rewards or leave it out (the recipe's rewards)")


def run(cfg: RewardAurocConfig, ctx: EvalContext, name: str) -> EvalResult:
    from selfalign.rewards import RewardContext, build_reward
    from selfalign.rewards.verifier import is_correct

    where = f"eval.evaluators.{name}"
    if not ctx.verifiable:
        raise ConfigError(f"{where}: needs held-out prompts with answers (ground truth)")
    groups = [g[: cfg.samples] for g in ctx.samples(cfg.samples)]
    rows = [r for r, g in zip(ctx.rows, groups, strict=True) for _ in g]
    texts = [y for g in groups for y in g]
    correct = [is_correct(r, y) for r, y in zip(rows, texts, strict=True)]
    model, tokenizer = ctx.model("policy", where)
    rctx = RewardContext(tokenizer, policy=model, models=ctx.roles(), seed=ctx.seed,
                         max_new_tokens=ctx.max_new_tokens, where=where)
    metrics: dict = {"sample_accuracy": statistics.fmean(correct), "samples": len(texts)}
    per_sample: list[dict] = [{"prompt_id": r.get("id"), "response": y, "correct": ok, "scores": {}}
                              for r, y, ok in zip(rows, texts, correct, strict=True)]
    for reward_name in reward_names(cfg, ctx):
        options = copy.copy(ctx.reward_options(reward_name, f"{where}.rewards"))
        if cfg.batch_size is not None and hasattr(options, "batch_size"):
            options.batch_size = cfg.batch_size
        scores = build_reward(reward_name, options, rctx).score(rows, texts).scores
        kept = [(s, ok) for s, ok in zip(scores, correct, strict=True) if s is not None]
        metrics[f"{reward_name}/auroc"] = auroc([s for s, _ in kept], [ok for _, ok in kept])
        by_prompt: dict[str, list] = {}
        for r, s, ok in zip(rows, scores, correct, strict=True):
            if s is not None:
                by_prompt.setdefault(r.get("id"), []).append((s, ok))
        metrics[f"{reward_name}/pairwise_accuracy"] = pairwise_accuracy(list(by_prompt.values()))
        metrics[f"{reward_name}/unscored"] = len(scores) - len(kept)
        for rec, s in zip(per_sample, scores, strict=True):
            rec["scores"][reward_name] = s
    return EvalResult(metrics, samples=per_sample)


def headline(cfg: RewardAurocConfig, metrics: dict, name: str) -> list[tuple[str, str]]:
    return [(f"auc_{key.split('/')[1]}"[:11], key) for key in metrics
            if key.startswith(f"{name}/") and key.endswith("/auroc")]


SPEC = EvaluatorSpec("reward_auroc", RewardAurocConfig, run,
                     "AUROC (and within-prompt pairwise accuracy) of each internal reward for \"this sample is right\"",
                     headline, needs=("samples",), check=check, samples_per_prompt=lambda cfg: cfg.samples)
