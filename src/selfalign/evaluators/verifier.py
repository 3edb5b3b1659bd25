"""Verifier accuracy: the share of held-out prompts whose greedy / sampled response is right (`eval.greedy`,
`eval.sampled`), by the ground-truth rule of `rewards/verifier.py` (the sandbox's exact verifier; otherwise the
extracted final answer against the row's `answer`, math-verify equivalence by default)."""

from __future__ import annotations

import statistics

from selfalign.evaluators.base import EvalContext, EvalResult, EvaluatorSpec
from selfalign.rewards.verifier import VerifierConfig, check_config, extract_answer, is_correct, is_sandbox_row


def run(cfg: VerifierConfig, ctx: EvalContext, name: str) -> EvalResult:
    """accuracy_<mode> and answer_rate_<mode> (a final answer could be extracted) per enabled mode; per prompt
    `<mode>_correct`. Nothing when the prompts have no answers."""
    if not ctx.verifiable:
        return EvalResult({})
    metrics: dict = {}
    columns: dict = {}
    for mode in ("greedy", "sampled"):
        if not getattr(ctx.eval_cfg, mode):
            continue
        texts = ctx.outputs(mode).texts
        correct = [is_correct(r, y, cfg) for r, y in zip(ctx.rows, texts, strict=True)]
        metrics[f"accuracy_{mode}"] = sum(correct) / len(correct)
        if not all(is_sandbox_row(r) for r in ctx.rows):
            metrics[f"answer_rate_{mode}"] = statistics.fmean(extract_answer(y, cfg) is not None for y in texts)
        columns[f"{mode}_correct"] = correct
    return EvalResult(metrics, columns)


def headline(cfg: VerifierConfig, metrics: dict, name: str) -> list[tuple[str, str]]:
    prefix = "" if name == "verifier" else f"{name}/"
    return [(label, f"{prefix}{key}") for label, key in (("acc_greedy", "accuracy_greedy"),
                                                          ("acc_sampled", "accuracy_sampled"))]


SPEC = EvaluatorSpec(
    "verifier", VerifierConfig, run, "greedy and sampled accuracy against the ground truth (math-verify for answers)",
    headline, needs=("responses",), check=lambda cfg, eval_cfg, where: check_config(cfg, where), legacy=True)
