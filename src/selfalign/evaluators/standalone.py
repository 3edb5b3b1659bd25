"""The evaluators outside a run: `selfalign eval MODEL --evaluators verifier,win_rate,... --prompts SOURCE`.

The model's held-out responses and K samples are drawn once (seeded: greedy and sampled with `seed`, the K samples
with `seed + 3`); a model baseline's with `seed + 1` (responses) and `seed + 2` (samples), so a model compared with
itself gets independent samples. There is no run, so the `initial` / `previous` baselines and judges do not exist:
give a model path or a file of outputs (`--baseline`). Writes OUTPUT/eval.json, eval_samples.jsonl and each
evaluator's files, as a round does under round_t/.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from selfalign.artifacts import write_json, write_jsonl
from selfalign.config import ConfigError
from selfalign.data.prompts import render_prompt
from selfalign.evaluators import Configured, headline_columns, prefixed
from selfalign.evaluators.base import (
    RUN_BASELINES,
    EvalContext,
    ModelsByPath,
    Outputs,
    generate_outputs,
    is_output_file,
    read_reference_outputs,
)

MODES = ("greedy", "sampled")


class StandaloneEvalContext(EvalContext):
    def __init__(self, model, tokenizer, model_path: str, rows: list[dict], eval_cfg: Any, out_dir: str | Path,
                 seed: int = 0, max_new_tokens: int = 256, k_samples: int = 0, stop: tuple[str, ...] = ()):
        self._model, self.tokenizer, self.model_path = model, tokenizer, model_path
        self.rows = rows
        for r in rows:
            r.setdefault("prompt_text", render_prompt(tokenizer, r))
        self.eval_cfg, self.seed, self.out_dir = eval_cfg, seed, Path(out_dir)
        self.generator, self.stop, self.k_samples = model_path, tuple(stop), k_samples
        self._max_new_tokens = max_new_tokens
        self._outputs: dict[str, Outputs] = {}
        self._samples: list[list[str]] | None = None
        self._baselines: dict[tuple, Any] = {}
        self._paths = ModelsByPath(next(model.parameters()).device)

    @property
    def max_new_tokens(self) -> int:
        return self._max_new_tokens

    def outputs(self, mode: str) -> Outputs:
        if not getattr(self.eval_cfg, mode):
            raise ConfigError(f"eval.{mode}: the evaluators need {mode} responses, which are off")
        if mode not in self._outputs:
            groups = generate_outputs(self._model, self.tokenizer, self.rows, mode, self.eval_cfg,
                                      self.max_new_tokens, self.seed, self.stop)
            self._outputs[mode] = Outputs([g[0].text for g in groups], [len(g[0].token_ids) for g in groups])
        return self._outputs[mode]

    def samples(self, k: int) -> list[list[str]]:
        if self._samples is None:
            groups = generate_outputs(self._model, self.tokenizer, self.rows, "sampled", self.eval_cfg,
                                      self.max_new_tokens, self.seed + 3, self.stop, num_samples=self.k_samples)
            self._samples = [[s.text for s in g] for g in groups]
            write_jsonl(self.out_dir / "samples.jsonl",
                        [{"prompt_id": r["id"], "responses": g} for r, g in zip(self.rows, self._samples,
                                                                                 strict=True)])
        return [g[:k] for g in self._samples]

    def _no_run(self, what: str, where: str) -> ConfigError:
        return ConfigError(f"{where}: {what!r} names a model of a run; outside a run give a model path or a file of "
                           "outputs (selfalign eval --baseline)")

    def baseline_outputs(self, baseline: str, mode: str, where: str) -> list[str]:
        if baseline in RUN_BASELINES:
            raise self._no_run(baseline, where)
        if is_output_file(baseline):
            return read_reference_outputs(baseline, self.rows, where)
        key = (baseline, mode)
        if key not in self._baselines:
            model, tokenizer = self.model(baseline, where)
            self._baselines[key] = [g[0].text for g in generate_outputs(
                model, tokenizer, self.rows, mode, self.eval_cfg, self.max_new_tokens, self.seed + 1, self.stop)]
        return self._baselines[key]

    def baseline_samples(self, baseline: str, k: int, where: str) -> list[list[str]]:
        if baseline in RUN_BASELINES:
            raise self._no_run(baseline, where)
        key = (baseline, "samples")
        if key not in self._baselines:
            model, tokenizer = self.model(baseline, where)
            groups = generate_outputs(model, tokenizer, self.rows, "sampled", self.eval_cfg, self.max_new_tokens,
                                      self.seed + 2, self.stop, num_samples=self.k_samples)
            self._baselines[key] = [[s.text for s in g] for g in groups]
        return [g[:k] for g in self._baselines[key]]

    def model(self, spec: str, where: str):
        if spec == "policy" or spec == self.model_path:
            return self._model, self.tokenizer
        if spec in ("initial", "base", "previous"):
            raise ConfigError(f"{where}: {spec!r} names a model of a run; outside a run use policy or a model path")
        return self._paths.load(spec, where)


def run_evaluators(instances: list[Configured], ctx: StandaloneEvalContext) -> tuple[dict, dict]:
    """Run every instance; returns (eval.json metrics, seconds per evaluator) and writes OUTPUT/eval.json,
    eval_samples.jsonl and the evaluators' sample files."""
    metrics: dict = {"prompts": len(ctx.rows)}
    seconds: dict = {}
    columns: dict = {}
    start = time.perf_counter()  # what the evaluators share, timed apart
    if any("responses" in i.spec.needs for i in instances):
        for mode in MODES:
            if getattr(ctx.eval_cfg, mode):
                ctx.outputs(mode)
        seconds["responses"] = round(time.perf_counter() - start, 3)
    if ctx.k_samples:
        start = time.perf_counter()
        ctx.samples(ctx.k_samples)
        seconds["samples"] = round(time.perf_counter() - start, 3)
    for inst in instances:
        start = time.perf_counter()
        result = inst.run(ctx)
        seconds[inst.name] = round(time.perf_counter() - start, 3)
        metrics.update(prefixed(inst, result.metrics))
        columns.update(prefixed(inst, result.columns))
        if result.samples:
            write_jsonl(ctx.out_dir / f"{inst.name}_samples.jsonl", result.samples)
    records = []
    if ctx._outputs:
        for i, r in enumerate(ctx.rows):
            rec: dict = {"prompt_id": r["id"], "prompt": r["prompt"]}
            for mode, out in ctx._outputs.items():
                rec[f"{mode}_response"], rec[f"{mode}_tokens"] = out.texts[i], out.tokens[i]
            rec.update({c: v[i] for c, v in columns.items()})
            records.append(rec)
        length_mode = "sampled" if "sampled" in ctx._outputs else "greedy"
        metrics["mean_response_tokens"] = statistics.fmean(ctx._outputs[length_mode].tokens)
        write_jsonl(ctx.out_dir / "eval_samples.jsonl", records)
    write_json(ctx.out_dir / "eval.json", {**metrics, "seconds": seconds})
    return metrics, seconds


def headline_text(instances: list[Configured], metrics: dict) -> str:
    """One line per evaluator: its headline numbers."""
    lines = []
    for inst in instances:
        cells = [f"{label}={metrics[key]:.3f}" for label, key in headline_columns([inst], metrics)
                 if isinstance(metrics.get(key), int | float)]
        lines.append(f"{inst.name}: " + (", ".join(cells) if cells else "(no headline number)"))
    return "\n".join(lines)
