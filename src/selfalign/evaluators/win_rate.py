"""Pairwise win rate of the evaluated model against a baseline on the held-out prompts, with a length-controlled
form and the mean lengths of both sides.

    eval:
      evaluators:
        win_rate:
          baseline: initial        # initial | previous | a model path | a .json / .jsonl file of reference outputs
          judge: {type: pairwise, model: initial, template: alpaca_eval}

For each held-out prompt the judge compares the model's response y with the baseline's b **in both presentation
orders**: v₁ = 1 if it prefers y shown first, v₂ = 1 if it prefers y shown second (½ for a tie in that order, 0
otherwise), and the prompt's preference is p = ½(v₁ + v₂). `win_rate` = mean p, so ties (and a judge that always
picks one position) count half. Judges (`judge.type`):

- `pairwise`: an LLM asked which response is better (`rewards/pairwise_judge.py`: templates `default`, A/B, and
  `alpaca_eval`, AlpacaEval 2's prompt, m/M, or your text); each order's verdict is the option with the higher
  next-token logit. Also `win_rate_soft`, the mean of ½[P(y first wins) + P(y second wins)] from the softmax of the
  two option logits (AlpacaEval 2's logprob-weighted preference, with both orders instead of one random order), and
  `position_agreement`, the share of prompts where both orders pick the same response.
- `verifier`: ground truth: a right response beats a wrong one, equal correctness is a tie.
- `reward`: any registered pointwise reward (`judge.reward`, e.g. `judge` for SRLM's rubric score) on the judge
  model: the higher score wins, equal (or unscored) is a tie.

The judge model (`judge.model`) is `policy` (the evaluated model judging itself, as self-rewarding does; the
default), `initial` (the round-0 model: a fixed judge across rounds), `base`, `previous`, or a model path (a
stronger judge).

`lc_win_rate` is AlpacaEval 2's length-controlled win rate in the form of its `length_controlled_minimal` GLM:
a logistic regression of the preference p_i on a model term θ and φ·tanh(Δ_i / sd(Δ)), Δ_i = len(y_i) − len(b_i) in
characters, fitted on the soft labels p_i; the LC win rate is the prediction with no length difference, σ(θ). Unlike
AlpacaEval's `length_controlled_v1` it has no instruction-difficulty term (that needs the leaderboard's
per-instruction parameters, fixed for AlpacaEval's 805 instructions), and it is fitted by L2-penalised maximum
likelihood with C = 100 (AlpacaEval: L1 with C chosen by 5-fold cross-validation). `length_coefficient` is φ: > 0
means the judge prefers the longer response.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from selfalign.config import ConfigError, opt
from selfalign.evaluators.base import (
    ROLES,
    RUN_BASELINES,
    EvalContext,
    EvalResult,
    EvaluatorSpec,
    default_mode,
)
from selfalign.rewards.preference import pairwise_judge_probability


@dataclass
class JudgeOptions:
    """Who decides which response is better."""

    type: Literal["pairwise", "verifier", "reward"] = "pairwise"
    model: str = "policy"  # pairwise, reward: policy | initial | base | previous | a model path
    template: str = "default"  # pairwise: default | alpaca_eval | a text with {prompt}, {response_a}, {response_b}
    options: list[str] | None = None  # pairwise: the first- and second-shown answer tokens (default: the template's)
    reward: str | None = None  # type reward: a registered reward (judge, likelihood, ...)
    reward_options: dict[str, Any] = field(default_factory=dict)  # its options (type verifier: the verifier's)
    batch_size: int = opt(32, lo=1)


@dataclass
class WinRateConfig:
    """Pairwise win rate against a baseline, both presentation orders, ties half, with a length-controlled form."""

    baseline: str = "initial"  # initial | previous (a run's models) | a model path | a .json / .jsonl of outputs
    judge: JudgeOptions = field(default_factory=JudgeOptions)
    decoding: Literal["greedy", "sampled"] | None = None  # the responses compared; default greedy if eval.greedy


# ---------------------------------------------------------------------------------------------- pure functions


def order_verdicts(logits_model_first: torch.Tensor, logits_model_second: torch.Tensor
                   ) -> tuple[list[float], list[float]]:
    """Each order's verdict for the model from a pairwise judge's option logits (first-shown better, second-shown
    better): 1 when the model's side has the higher logit, ½ when equal, 0 otherwise. Shapes: (n, 2), (n, 2)."""
    def verdict(winner: torch.Tensor, loser: torch.Tensor) -> list[float]:
        return [1.0 if w > lo else 0.5 if w == lo else 0.0 for w, lo in zip(winner.tolist(), loser.tolist(),
                                                                               strict=True)]

    return (verdict(logits_model_first[:, 0], logits_model_first[:, 1]),
            verdict(logits_model_second[:, 1], logits_model_second[:, 0]))


def score_verdicts(model_scores: Sequence[float | None], baseline_scores: Sequence[float | None]) -> list[float]:
    """1 when the model's score is higher, ½ when equal or either is None, 0 otherwise."""
    return [0.5 if m is None or b is None else 1.0 if m > b else 0.5 if m == b else 0.0
            for m, b in zip(model_scores, baseline_scores, strict=True)]


def preferences(first: Sequence[float], second: Sequence[float]) -> list[float]:
    """p_i = ½(v₁ + v₂): the prompt's preference for the model over both presentation orders."""
    return [0.5 * (a + b) for a, b in zip(first, second, strict=True)]


def mean_and_se(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and its standard error (sample standard deviation / √n; None for one value)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None)


def length_controlled_win_rate(prefs: Sequence[float], model_lengths: Sequence[float],
                               baseline_lengths: Sequence[float], c: float = 100.0) -> tuple[float, float]:
    """(σ(θ), φ) of the GLM p_i ~ σ(θ + φ·tanh(Δ_i / sd(Δ))), Δ = model length − baseline length, fitted to the soft
    labels p_i ∈ [0, 1] by Newton's method on Σ_i CE(p_i, σ(z_i)) + (θ² + φ²) / (2c) (sklearn's L2-penalised
    logistic regression with C = c on rows duplicated with labels 1 and 0 weighted p_i and 1 − p_i, which is how
    AlpacaEval fits soft labels). sd is the sample standard deviation; a constant Δ gives the feature 0."""
    p = torch.tensor(list(prefs), dtype=torch.float64)
    delta = torch.tensor(list(model_lengths), dtype=torch.float64) - torch.tensor(list(baseline_lengths),
                                                                                  dtype=torch.float64)
    sd = delta.std() if len(delta) > 1 else torch.tensor(0.0, dtype=torch.float64)
    x = torch.tanh(delta / sd) if sd > 0 else torch.zeros_like(delta)
    design = torch.stack([torch.ones_like(x), x], dim=1)
    w = torch.zeros(2, dtype=torch.float64)
    for _ in range(100):
        s = torch.sigmoid(design @ w)
        grad = design.T @ (s - p) + w / c
        hess = design.T @ (design * (s * (1 - s))[:, None]) + torch.eye(2, dtype=torch.float64) / c
        step = torch.linalg.solve(hess, grad)
        w = w - step
        if step.abs().max() < 1e-12:
            break
    return float(torch.sigmoid(w[0])), float(w[1])


# ---------------------------------------------------------------------------------------------- the evaluator


def check(cfg: WinRateConfig, eval_cfg: Any, where: str) -> None:
    default_mode(cfg.decoding, eval_cfg, where)
    j = cfg.judge
    if j.type == "reward" and not j.reward:
        raise ConfigError(f"{where}.judge.reward: judge type reward needs a registered reward name")
    if j.type != "reward" and j.reward is not None:
        raise ConfigError(f"{where}.judge.reward: applies to judge type reward only")
    if j.type == "reward":
        from selfalign.rewards import reward_config, reward_spec

        spec = reward_spec(j.reward, f"{where}.judge.reward")
        if spec.is_grouped(reward_config(j.reward, j.reward_options, f"{where}.judge.reward_options")):
            raise ConfigError(f"{where}.judge.reward: {j.reward} scores a sample against the other samples of its "
                              "prompt; a win rate needs a pointwise reward")
    if j.type == "verifier":
        from selfalign.rewards import reward_config

        reward_config("verifier", j.reward_options, f"{where}.judge.reward_options")
    if j.type == "pairwise":
        from selfalign.rewards.pairwise_judge import TEMPLATES

        if j.template not in TEMPLATES and not all(k in j.template for k in ("{prompt}", "{response_a}",
                                                                               "{response_b}")):
            raise ConfigError(f"{where}.judge.template: {j.template[:40]!r} is neither a named template "
                              f"({', '.join(TEMPLATES)}) nor a text with {{prompt}}, {{response_a}} and {{response_b}}")
        if j.options is not None and len(j.options) != 2:
            raise ConfigError(f"{where}.judge.options: expected two answer tokens (first-, second-shown better)")


def judge_verdicts(j: JudgeOptions, ctx: EvalContext, rows: list[dict], ours: list[str], theirs: list[str],
                   where: str) -> dict[str, list[float]]:
    """Per prompt: `first` / `second` (the model's verdict with its response shown first / second) and, for a
    pairwise judge, `p_first` / `p_second` (the softmax probabilities of the model's side) and `soft`."""
    if j.type == "verifier":
        from selfalign.rewards import reward_config
        from selfalign.rewards.verifier import is_correct

        if not ctx.verifiable:
            raise ConfigError(f"{where}.judge.type: verifier needs held-out prompts with answers")
        vcfg = reward_config("verifier", j.reward_options, f"{where}.judge.reward_options")
        v = score_verdicts([float(is_correct(r, y, vcfg)) for r, y in zip(rows, ours, strict=True)],
                           [float(is_correct(r, y, vcfg)) for r, y in zip(rows, theirs, strict=True)])
        return {"first": v, "second": v}
    model, tokenizer = ctx.model(j.model, f"{where}.judge.model")
    if j.type == "reward":
        from selfalign.rewards import RewardContext, build_reward, reward_config

        reward = build_reward(j.reward, reward_config(j.reward, j.reward_options, f"{where}.judge.reward_options"),
                              RewardContext(tokenizer, policy=model, models=ctx.roles(), seed=ctx.seed,
                                            max_new_tokens=ctx.max_new_tokens, where=f"{where}.judge"))
        scores = reward.score(rows + rows, ours + theirs).scores
        v = score_verdicts(scores[: len(rows)], scores[len(rows):])
        return {"first": v, "second": v}
    from selfalign.rewards.pairwise_judge import TEMPLATES, PairwiseJudge

    template, options = TEMPLATES.get(j.template, (j.template, ("A", "B")))
    judge = PairwiseJudge(tokenizer, template, list(j.options or options), where=f"{where}.judge.options")
    try:
        model_first, model_second = judge.option_logits(model, rows, ours, theirs, j.batch_size)
    except ValueError as e:  # an answer option that is not one token after the judge prompt
        raise ConfigError(str(e)) from None
    first, second = order_verdicts(model_first, model_second)
    p_first = torch.softmax(model_first.float(), -1)[:, 0].tolist()
    p_second = torch.softmax(model_second.float(), -1)[:, 1].tolist()
    soft = pairwise_judge_probability(model_first, model_second).tolist()
    return {"first": first, "second": second, "p_first": p_first, "p_second": p_second, "soft": soft}


def run(cfg: WinRateConfig, ctx: EvalContext, name: str) -> EvalResult:
    where = f"eval.evaluators.{name}"
    mode = default_mode(cfg.decoding, ctx.eval_cfg, where)
    ours = ctx.outputs(mode)
    theirs = ctx.baseline_outputs(cfg.baseline, mode, f"{where}.baseline")
    verdicts = judge_verdicts(cfg.judge, ctx, ctx.rows, ours.texts, theirs, where)
    prefs = preferences(verdicts["first"], verdicts["second"])
    win, se = mean_and_se(prefs)
    lc, coef = length_controlled_win_rate(prefs, [len(y) for y in ours.texts], [len(b) for b in theirs])
    def tokens(texts: list[str]) -> list[int]:  # both sides counted alike: the text re-tokenized
        return [len(ctx.tokenizer(y, add_special_tokens=False)["input_ids"]) for y in texts]

    metrics: dict = {"win_rate": win, "win_rate_se": se, "lc_win_rate": lc, "length_coefficient": coef,
                     "ties": statistics.fmean(p == 0.5 for p in prefs), "prompts": len(prefs),
                     "mean_chars": statistics.fmean(len(y) for y in ours.texts),
                     "baseline_mean_chars": statistics.fmean(len(b) for b in theirs),
                     "mean_tokens": statistics.fmean(tokens(ours.texts)),
                     "baseline_mean_tokens": statistics.fmean(tokens(theirs))}
    if "soft" in verdicts:
        metrics["win_rate_soft"] = statistics.fmean(verdicts["soft"])
        metrics["position_agreement"] = statistics.fmean(a == b for a, b in zip(verdicts["first"],
                                                                                 verdicts["second"], strict=True))
    columns = {"baseline_response": theirs, "verdict_model_first": verdicts["first"],
               "verdict_model_second": verdicts["second"], "preference": prefs}
    if "soft" in verdicts:
        columns.update(p_model_first=verdicts["p_first"], p_model_second=verdicts["p_second"])
    return EvalResult(metrics, columns)


def headline(cfg: WinRateConfig, metrics: dict, name: str) -> list[tuple[str, str]]:
    if name == "win_rate":
        return [("win_rate", f"{name}/win_rate"), ("lc_win", f"{name}/lc_win_rate")]
    return [(name[:11], f"{name}/win_rate"), (f"lc_{name}"[:11], f"{name}/lc_win_rate")]


def check_baseline(baseline: str, where: str) -> None:
    """A baseline is `initial`, `previous`, an outputs file or a model path (checked when it is loaded)."""
    if baseline in ROLES and baseline not in RUN_BASELINES:
        raise ConfigError(f"{where}: {baseline!r} is not a baseline; use initial, previous, a model path or a file "
                          "of reference outputs")


SPEC = EvaluatorSpec("win_rate", WinRateConfig, run,
                     "pairwise win rate vs a baseline (both orders, ties half) with a length-controlled form",
                     headline, needs=("responses",),
                     check=lambda cfg, eval_cfg, where: (check_baseline(cfg.baseline, f"{where}.baseline"),
                                                         check(cfg, eval_cfg, where)))
