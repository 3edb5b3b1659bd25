"""AlpacaEval export: the held-out prompts and the model's responses in AlpacaEval's model-outputs format, so
`alpaca_eval` runs on them directly:

    alpaca_eval --model_outputs RUN/round_2/eval/alpaca_eval/model_outputs.json \\
                --reference_outputs RUN/round_0/eval/alpaca_eval/model_outputs.json

The file is a JSON list of {"instruction", "output", "generator", "dataset"} records, one per held-out prompt
(AlpacaEval reads it with `pandas.read_json`, merges it with the reference outputs on `instruction`, and names the
model by its single `generator` value). With AlpacaEval's own 805 instructions as `prompts.eval_source` (rows with
the instruction as `prompt`), `alpaca_eval --model_outputs FILE` compares with its default reference. Multi-turn
prompts export their last user turn as the instruction.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from selfalign.artifacts import write_json
from selfalign.config import ConfigError
from selfalign.evaluators.base import EvalContext, EvalResult, EvaluatorSpec, default_mode

REQUIRED = ("instruction", "output", "generator")


@dataclass
class AlpacaEvalConfig:
    """The held-out responses as AlpacaEval model outputs (eval/<name>/model_outputs.json)."""

    decoding: Literal["greedy", "sampled"] | None = None  # default greedy if eval.greedy
    generator: str | None = None  # the model's name in the file; default: <run name>/round_<t> (or the model path)
    dataset: str = "selfalign"  # the `dataset` field of every record


def model_outputs(rows: list[dict], outputs: list[str], generator: str, dataset: str) -> list[dict]:
    return [{"dataset": dataset, "instruction": r["prompt"], "output": y, "generator": generator}
            for r, y in zip(rows, outputs, strict=True)]


def validate_model_outputs(path: str | Path) -> list[dict]:
    """The records of a model-outputs file, checked as AlpacaEval reads them: a JSON list (`.json`) of objects with
    string `instruction`, `output` and `generator`, one generator, no instruction twice (AlpacaEval merges on it).
    A ValueError naming the file and the first bad record otherwise."""
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"{path}: AlpacaEval reads model outputs from .json (or .csv / .tsv) files")
    records = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path}: expected a non-empty JSON list of records")
    seen: set[str] = set()
    for i, r in enumerate(records):
        missing = [k for k in REQUIRED if not isinstance(r, dict) or not isinstance(r.get(k), str)]
        if missing:
            raise ValueError(f"{path}: record {i}: missing string field(s) {', '.join(missing)}")
        if r["instruction"] in seen:
            raise ValueError(f"{path}: record {i}: instruction repeated (AlpacaEval merges outputs on it)")
        seen.add(r["instruction"])
    generators = {r["generator"] for r in records}
    if len(generators) != 1:
        raise ValueError(f"{path}: {len(generators)} generators; AlpacaEval names the model by a single one")
    return records


def run(cfg: AlpacaEvalConfig, ctx: EvalContext, name: str) -> EvalResult:
    where = f"eval.evaluators.{name}"
    mode = default_mode(cfg.decoding, ctx.eval_cfg, where)
    instructions = [r["prompt"] for r in ctx.rows]
    if len(set(instructions)) != len(instructions):
        raise ConfigError(f"{where}: the held-out prompts repeat an instruction; AlpacaEval merges outputs on it")
    texts = ctx.outputs(mode).texts
    records = model_outputs(ctx.rows, texts, cfg.generator or ctx.generator, cfg.dataset)
    if ctx.main:
        write_json(ctx.out_dir / name / "model_outputs.json", records)
    return EvalResult({"avg_length": statistics.fmean(len(y) for y in texts), "records": len(records)})


def headline(cfg: AlpacaEvalConfig, metrics: dict, name: str) -> list[tuple[str, str]]:
    return [("ae_len", f"{name}/avg_length")]


def check(cfg: AlpacaEvalConfig, eval_cfg: Any, where: str) -> None:
    default_mode(cfg.decoding, eval_cfg, where)


SPEC = EvaluatorSpec("alpaca_eval", AlpacaEvalConfig, run,
                     "the held-out responses in AlpacaEval's model-outputs format (eval/<name>/model_outputs.json)",
                     headline, needs=("responses",), check=check)
