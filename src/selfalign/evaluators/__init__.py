"""Evaluators: one file per evaluator, one registry (`EVALUATORS`), configured per recipe under `eval.evaluators`.

    eval:
      greedy: true                 # the held-out responses every evaluator reads (as before)
      sampled: true
      evaluators:                  # instance name → options (null: off); default {verifier: {}}
        verifier: {}
        win_rate: {baseline: initial, judge: {type: pairwise, model: initial}}
        win_rate_prev: {type: win_rate, baseline: previous}   # a second instance of a type
        lm_eval: {tasks: [gsm8k], limit: 100}
        alpaca_eval: {}
        bon_win_rate: {best_of: [1, 4], samples: 8}
        reward_auroc: {}

An instance's type is its name unless it says `type:`. A list of names (`evaluators: [verifier, alpaca_eval]`) is
the same with default options. A round's eval stage (`stages/evaluate.py`) and `selfalign eval MODEL --evaluators
...` (`evaluators/standalone.py`) run them the same way. Adding an evaluator: a module with its config dataclass,
`run` and `headline`, an `EvaluatorSpec`, and one line below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfalign.config import ConfigError, build, did_you_mean
from selfalign.evaluators import alpaca_eval, bon_win_rate, lm_eval, reward_auroc, verifier, win_rate
from selfalign.evaluators.base import EvalContext, EvalResult, EvaluatorSpec, Outputs

__all__ = ["EVALUATORS", "Configured", "EvalContext", "EvalResult", "EvaluatorSpec", "Outputs", "configured",
           "headline_columns", "prefixed"]

EVALUATORS: dict[str, EvaluatorSpec] = {spec.name: spec for spec in (
    verifier.SPEC,
    lm_eval.SPEC,
    win_rate.SPEC,
    alpaca_eval.SPEC,
    bon_win_rate.SPEC,
    reward_auroc.SPEC,
)}

DEFAULT = {"verifier": {}}


@dataclass(frozen=True)
class Configured:
    """One evaluator instance of a recipe: its name (the eval.json prefix), its type and its options."""

    name: str
    spec: EvaluatorSpec
    cfg: Any

    @property
    def legacy(self) -> bool:
        """Its metrics keep the top-level keys of before the registry (the `verifier` instance)."""
        return self.spec.legacy and self.name == self.spec.name

    def run(self, ctx: EvalContext) -> EvalResult:
        return self.spec.run(self.cfg, ctx, self.name)

    def check_available(self) -> None:
        if self.spec.available is not None:
            self.spec.available(f"eval.evaluators.{self.name}")


def _mapping(raw: Any, where: str) -> dict:
    if raw is None:
        return dict(DEFAULT)
    if isinstance(raw, list):
        if not all(isinstance(n, str) for n in raw):
            raise ConfigError(f"{where}: a list of evaluator names, or a mapping of name → options")
        return {n: {} for n in raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of evaluator name → options, got {raw!r}")
    return raw


def configured(eval_cfg: Any, where: str = "eval.evaluators") -> list[Configured]:
    """The evaluator instances of the `eval` section, in the order written, each checked (one-line ConfigError)."""
    out = []
    for name, options in _mapping(eval_cfg.evaluators, where).items():
        key = f"{where}.{name}"
        if options is None:
            continue
        if not isinstance(options, dict):
            raise ConfigError(f"{key}: expected a mapping of options (or {{}} for the defaults), got {options!r}")
        if "/" in str(name) or not str(name).strip():
            raise ConfigError(f"{key}: an evaluator name may not be empty or contain '/'")
        options = dict(options)
        kind = options.pop("type", name)
        if kind not in EVALUATORS:
            hint = did_you_mean(kind, EVALUATORS) or f"; available: {', '.join(EVALUATORS)}"
            what = f"type {kind!r}" if kind != name else f"{name!r}"
            raise ConfigError(f"{key}: {what} is not a registered evaluator{hint} (a second instance of a type "
                              "names it with `type:`)")
        spec = EVALUATORS[kind]
        cfg = build(spec.config, options, key)
        if spec.check is not None:
            spec.check(cfg, eval_cfg, key)
        out.append(Configured(str(name), spec, cfg))
    return out


def prefixed(instance: Configured, values: dict) -> dict:
    """An evaluator's metrics (or columns) as eval.json (eval_samples.jsonl) keys: `<name>/<key>`, or the key
    itself for the legacy verifier instance."""
    return dict(values) if instance.legacy else {f"{instance.name}/{k}": v for k, v in values.items()}


def headline_columns(instances: list[Configured], metrics: dict) -> list[tuple[str, str]]:
    """(console label, eval.json key) of each instance's headline numbers that `metrics` holds, in order."""
    out: list[tuple[str, str]] = []
    for inst in instances:
        out.extend((label, key) for label, key in inst.spec.headline(inst.cfg, metrics, inst.name) if key in metrics)
    return out
