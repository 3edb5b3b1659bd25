"""Inference-time win rate (InfAlign, Balashankar et al., ICML 2025): for each N, the probability that the best of
N samples of the evaluated model beats the best of N samples of the baseline under a reward r, ties half.

    eval:
      evaluators:
        bon_win_rate: {best_of: [1, 2, 4, 8], samples: 16, reward: verifier, baseline: initial}

"the win rate of the aligned policy against the base policy when both are decoded with best-of-N". Each side draws
K = `samples` responses per prompt once (eval.temperature / top_p; the same K samples for every evaluator that
needs them, and for a run's `initial` / `previous` baseline its own round's samples); the reward scores all of
them, and the estimate for each N ≤ K is the exact average over all C(K, N)² pairs of N-subsets of the two sides
(`bon_win_probability`): a U-statistic, unbiased for i.i.d. samples and of least variance among unbiased
estimators, where disjoint blocks of N samples would use each sample once. METHODS.md (InfAlign) defines the
metric; this estimator is ours. N = 1 is the plain win rate under r. `procedure: worst_of_n` takes each side's
lowest-reward sample (InfAlign's worst-of-N).

The reward is any registered reward that scores a sample alone (`likelihood`, `judge`, `self_certainty`, ...) or
`verifier` (ground truth: best-of-N then compares pass@N-style correctness), computed by the `scorer` model
(`policy`, `initial` for a fixed reward model across rounds, `base`, `previous`, or a model path).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from selfalign.config import ConfigError, opt
from selfalign.evaluators.base import RUN_BASELINES, EvalContext, EvalResult, EvaluatorSpec, is_output_file


@dataclass
class BonWinRateConfig:
    """P(best of N of the model beats best of N of the baseline) under a reward, for each N in `best_of`."""

    best_of: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    samples: int = opt(16, lo=1)  # K per prompt and side (each N ≤ K)
    reward: str = "verifier"  # a registered reward, scored alone per sample
    reward_options: dict[str, Any] = field(default_factory=dict)
    scorer: str = "policy"  # the reward's model: policy | initial | base | previous | a model path
    baseline: str = "initial"  # initial | previous | a model path
    procedure: Literal["best_of_n", "worst_of_n"] = "best_of_n"


def order_weights(k: int, n: int, procedure: str = "best_of_n") -> list[float]:
    """w_i = P(the selected sample of a uniformly random N-subset of K is the i-th smallest), i = 1..K:
    C(i−1, N−1) / C(K, N) for the maximum (best of N), C(K−i, N−1) / C(K, N) for the minimum (worst of N)."""
    if not 1 <= n <= k:
        raise ValueError(f"need 1 <= N <= K, got N={n}, K={k}")
    total = math.comb(k, n)
    if procedure == "best_of_n":
        return [math.comb(i - 1, n - 1) / total for i in range(1, k + 1)]
    return [math.comb(k - i, n - 1) / total for i in range(1, k + 1)]


def bon_win_probability(ours: Sequence[float], theirs: Sequence[float], n: int,
                        procedure: str = "best_of_n") -> float:
    """P(sel(N of ours) > sel(N of theirs)) + ½·P(=), averaged over all N-subsets of each side (drawn without
    replacement from the K given samples), sel = max (best of N) or min (worst of N) of the rewards.

    = Σ_i Σ_j w_i w_j [1(a_(i) > b_(j)) + ½·1(a_(i) = b_(j))] with a, b sorted ascending and w = `order_weights`
    (a tied reward value gets the same comparison wherever it sorts, so ties within a side need no care).
    Shapes: (K_a,), (K_b,): the two sides may have different K."""
    a, b = sorted(ours), sorted(theirs)
    wa, wb = order_weights(len(a), n, procedure), order_weights(len(b), n, procedure)
    return sum(x * y * (1.0 if ai > bj else 0.5 if ai == bj else 0.0)
               for ai, x in zip(a, wa, strict=True) if x for bj, y in zip(b, wb, strict=True) if y)


def bon_win_probability_bruteforce(ours: Sequence[float], theirs: Sequence[float], n: int,
                                   procedure: str = "best_of_n") -> float:
    """The same by enumerating every pair of N-subsets (for tests: C(K, N)² terms)."""
    pick = max if procedure == "best_of_n" else min
    subsets_a = [pick(c) for c in itertools.combinations(ours, n)]
    subsets_b = [pick(c) for c in itertools.combinations(theirs, n)]
    return statistics.fmean(1.0 if x > y else 0.5 if x == y else 0.0 for x in subsets_a for y in subsets_b)


def check(cfg: BonWinRateConfig, eval_cfg: Any, where: str) -> None:
    from selfalign.rewards import reward_config, reward_spec

    if not cfg.best_of or min(cfg.best_of) < 1:
        raise ConfigError(f"{where}.best_of: a list of N >= 1")
    if max(cfg.best_of) > cfg.samples:
        raise ConfigError(f"{where}.best_of: N={max(cfg.best_of)} > samples ({cfg.samples}); each N must be <= K")
    spec = reward_spec(cfg.reward, f"{where}.reward")
    if "inputs" in spec.needs:
        raise ConfigError(f"{where}.reward: {cfg.reward} needs its round's inputs (the reference set), which an "
                          "evaluator does not have; name its base reward")
    if spec.is_grouped(reward_config(cfg.reward, cfg.reward_options, f"{where}.reward_options")):
        raise ConfigError(f"{where}.reward: {cfg.reward} scores a sample against the other samples of its prompt; "
                          "best-of-N needs a reward that scores a sample alone")
    if is_output_file(cfg.baseline):
        raise ConfigError(f"{where}.baseline: needs samples of a model ({', '.join(RUN_BASELINES)} or a model path), "
                          "not a file of outputs")


def score_samples(cfg: BonWinRateConfig, ctx: EvalContext, groups: list[list[str]], where: str) -> list[list[float]]:
    """The reward of every sample, per prompt (None counts as −inf: an unscored sample is never selected first)."""
    from selfalign.rewards import RewardContext, build_reward, reward_config

    options = reward_config(cfg.reward, cfg.reward_options, f"{where}.reward_options")
    if cfg.reward == "verifier":
        if not ctx.verifiable:
            raise ConfigError(f"{where}.reward: verifier needs held-out prompts with answers")
        model, tokenizer = None, ctx.tokenizer
    else:
        model, tokenizer = ctx.model(cfg.scorer, f"{where}.scorer")
    reward = build_reward(cfg.reward, options, RewardContext(tokenizer, policy=model, models=ctx.roles(),
                                                             seed=ctx.seed, max_new_tokens=ctx.max_new_tokens,
                                                             where=where))
    flat_rows = [r for r, g in zip(ctx.rows, groups, strict=True) for _ in g]
    flat = reward.score(flat_rows, [y for g in groups for y in g]).scores
    out, i = [], 0
    for g in groups:
        out.append([-math.inf if s is None else s for s in flat[i: i + len(g)]])
        i += len(g)
    return out


def run(cfg: BonWinRateConfig, ctx: EvalContext, name: str) -> EvalResult:
    where = f"eval.evaluators.{name}"
    ours = [g[: cfg.samples] for g in ctx.samples(cfg.samples)]
    theirs = [g[: cfg.samples] for g in ctx.baseline_samples(cfg.baseline, cfg.samples, f"{where}.baseline")]
    a = score_samples(cfg, ctx, ours, where)
    b = score_samples(cfg, ctx, theirs, where)
    metrics: dict = {"samples": cfg.samples, "prompts": len(a)}
    for n in sorted(set(cfg.best_of)):
        per_prompt = [bon_win_probability(x, y, n, cfg.procedure) for x, y in zip(a, b, strict=True)]
        metrics[f"win_rate@{n}"] = statistics.fmean(per_prompt)
        metrics[f"win_rate@{n}_se"] = (statistics.stdev(per_prompt) / math.sqrt(len(per_prompt))
                                       if len(per_prompt) > 1 else None)
    finite = [s for g in a for s in g if s != -math.inf]
    base_finite = [s for g in b for s in g if s != -math.inf]
    metrics["mean_reward"] = statistics.fmean(finite) if finite else None
    metrics["baseline_mean_reward"] = statistics.fmean(base_finite) if base_finite else None
    samples = [{"prompt_id": r.get("id"), "responses": x, "rewards": sa, "baseline_responses": y,
                "baseline_rewards": sb} for r, x, y, sa, sb in zip(ctx.rows, ours, theirs, a, b, strict=True)]
    for s in samples:
        s["rewards"] = [None if v == -math.inf else v for v in s["rewards"]]
        s["baseline_rewards"] = [None if v == -math.inf else v for v in s["baseline_rewards"]]
    return EvalResult(metrics, samples=samples)


def headline(cfg: BonWinRateConfig, metrics: dict, name: str) -> list[tuple[str, str]]:
    n = max(cfg.best_of)
    return [(f"bon@{n}" if name == "bon_win_rate" else f"{name}@{n}", f"{name}/win_rate@{n}")]


SPEC = EvaluatorSpec("bon_win_rate", BonWinRateConfig, run,
                     "InfAlign's inference-time win rate: best of N of the model vs best of N of the baseline",
                     headline, needs=("samples",), check=check, samples_per_prompt=lambda cfg: cfg.samples)
