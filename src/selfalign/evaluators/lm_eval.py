"""lm-evaluation-harness tasks on the round's model, in process: `lm_eval.simple_evaluate` with an `HFLM` built
from the loaded model and tokenizer (lm-eval's HFLM takes a `PreTrainedModel` as `pretrained`; it then uses the
model's device and ignores its own device, dtype and parallelism options).

    eval:
      evaluators:
        lm_eval:
          tasks: [arc_easy, arc_challenge, {task: gsm8k, num_fewshot: 5}]
          limit: 200            # examples per task (lm-eval's --limit; a fraction < 1 is a share)
          batch_size: 16

A task is a registered lm-eval task, group or tag name, or the path of a task YAML (e.g. one over a local JSONL
file: `dataset_path: json`, `dataset_kwargs: {data_files: {test: rows.jsonl}}`); `include_path` adds a directory of
task YAMLs (when every task is a YAML path and there is no `include_path`, lm-eval's own task index is not built,
so such a YAML cannot `include` a registered task by name). Tasks with their own `num_fewshot` / `limit` run in
their own `simple_evaluate` call. Every metric of every task lands in eval.json as `<name>/<task>/<metric>`
(lm-eval's "acc,none" → `acc`, "exact_match,strict-match" → `exact_match/strict-match`, stderrs as
`<metric>_stderr`); lm-eval's results (without the samples) go to `eval/<name>_results.json` and its per-sample
records to `eval/<name>_samples.jsonl`.

lm-eval is the `eval` extra (`pip install "selfalign[eval]"`). Its tasks download their datasets from the Hugging
Face Hub on first use, so a run needs the network or a filled HF cache, except for local task YAMLs.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfalign.config import ConfigError, opt
from selfalign.evaluators.base import EvalContext, EvalResult, EvaluatorSpec

log = logging.getLogger(__name__)

MISSING = "lm-evaluation-harness is not installed; install the eval extra: pip install \"selfalign[eval]\""


@dataclass
class LmEvalTask:
    """One task with its own settings (otherwise the evaluator's)."""

    task: str
    num_fewshot: int | None = opt(None, lo=0)
    limit: float | None = opt(None, lo=0.0, lo_open=True)


@dataclass
class LmEvalConfig:
    """lm-evaluation-harness tasks run in process on the evaluated model."""

    tasks: list[str | LmEvalTask] = field(default_factory=list)
    num_fewshot: int | None = opt(None, lo=0)  # None: each task's own default
    limit: float | None = opt(None, lo=0.0, lo_open=True)  # examples per task (< 1: a share); None: all
    batch_size: int = opt(8, lo=1)
    max_length: int | None = opt(None, lo=1)  # context length lm-eval assumes; None: from the model config
    include_path: str | None = None  # a directory of task YAMLs
    apply_chat_template: bool = False  # render prompts with the model's chat template (instruct models)
    fewshot_as_multiturn: bool = False  # with the chat template: few-shot examples as turns
    system_instruction: str | None = None
    gen_kwargs: dict[str, Any] = field(default_factory=dict)  # override the tasks' generation_kwargs
    bootstrap_iters: int = opt(100000, lo=0)  # lm-eval's stderr bootstrap (mean metrics use the closed form)
    log_samples: bool = True  # keep lm-eval's per-sample records (eval/<name>_samples.jsonl)
    headline: list[str] = field(default_factory=list)  # eval.json keys for the console; default: each task's first


def task_entries(cfg: LmEvalConfig) -> list[LmEvalTask]:
    return [t if isinstance(t, LmEvalTask) else LmEvalTask(t) for t in cfg.tasks]


def check(cfg: LmEvalConfig, eval_cfg: Any, where: str) -> None:
    if not cfg.tasks:
        raise ConfigError(f"{where}.tasks: give at least one lm-eval task (a registered name or a task YAML path)")
    names = [t.task for t in task_entries(cfg)]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ConfigError(f"{where}.tasks: {duplicate!r} is listed twice")
    if cfg.fewshot_as_multiturn and not cfg.apply_chat_template:
        raise ConfigError(f"{where}.fewshot_as_multiturn: needs apply_chat_template: true")


def require_lm_eval(where: str) -> None:
    """A one-line ConfigError naming the extra when lm-eval cannot be imported."""
    try:
        import lm_eval  # noqa: F401
        import lm_eval.models.huggingface  # noqa: F401
    except ImportError:
        raise ConfigError(f"{where}: {MISSING}") from None


def quiet_lm_eval() -> None:
    """lm-eval's INFO lines only with `selfalign -v`, and not its warning that a model object (not a name) was given:
    passing the loaded model is the point (HFLM then runs in this process only, on the model's device)."""
    logger = logging.getLogger("lm_eval")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _ModelObjectWarning) for f in logger.filters):
        for name in ("lm_eval", "lm_eval.models.huggingface"):
            logging.getLogger(name).addFilter(_ModelObjectWarning())


class _ModelObjectWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "`pretrained` model kwarg is not of type `str`" not in message and \
            "Passed an already-initialized model" not in message


def metric_key(task: str, metric: str) -> str | None:
    """lm-eval's result key ("acc,none", "acc_stderr,none", "exact_match,strict-match") → `<task>/<metric>`
    (`<task>/<metric>/<filter>` for a filter other than `none`); None for keys that are not metrics (alias)."""
    if "," not in metric:
        return None
    name, filt = metric.split(",", 1)
    return f"{task}/{name}" + ("" if filt == "none" else f"/{filt}")


def flatten_results(results: dict) -> dict[str, float]:
    """Every numeric metric of lm-eval's `results` (and `groups`) section, keyed by `metric_key`."""
    out: dict[str, float] = {}
    for section in ("results", "groups"):
        for task, metrics in (results.get(section) or {}).items():
            for metric, value in metrics.items():
                key = metric_key(task, metric)
                if key is None or isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                if isinstance(value, float) and not math.isfinite(value):
                    continue
                out[key] = float(value) if isinstance(value, float) else value
    return out


def _json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def run(cfg: LmEvalConfig, ctx: EvalContext, name: str) -> EvalResult:
    where = f"eval.evaluators.{name}"
    require_lm_eval(where)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    quiet_lm_eval()
    model, tokenizer = ctx.model("policy", where)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size, max_length=cfg.max_length)
    include = cfg.include_path
    if include is not None and not Path(include).is_dir():
        raise ConfigError(f"{where}.include_path: {include}: no such directory")
    # lm-eval indexes its ~15k task YAMLs (seconds) unless every task is a YAML file of its own
    paths_only = include is None and all(t.task.endswith((".yaml", ".yml")) for t in task_entries(cfg))
    manager = TaskManager(include_path=include, include_defaults=not paths_only)
    groups: dict[tuple, list[str]] = {}
    for t in task_entries(cfg):
        shots = t.num_fewshot if t.num_fewshot is not None else cfg.num_fewshot
        limit = t.limit if t.limit is not None else cfg.limit
        groups.setdefault((shots, limit), []).append(t.task)
    metrics: dict[str, float] = {}
    merged: dict = {"results": {}, "groups": {}, "configs": {}, "versions": {}, "n-shot": {}, "n-samples": {}}
    samples: list[dict] = []
    for (shots, limit), tasks in groups.items():
        try:
            results = lm_eval.simple_evaluate(
                model=lm, tasks=tasks, num_fewshot=shots, limit=int(limit) if limit and limit >= 1 else limit,
                batch_size=cfg.batch_size, bootstrap_iters=cfg.bootstrap_iters, log_samples=cfg.log_samples,
                apply_chat_template=cfg.apply_chat_template, fewshot_as_multiturn=cfg.fewshot_as_multiturn,
                system_instruction=cfg.system_instruction, gen_kwargs=cfg.gen_kwargs or None, task_manager=manager,
                random_seed=ctx.seed, numpy_random_seed=ctx.seed, torch_random_seed=ctx.seed,
                fewshot_random_seed=ctx.seed)
        except KeyError as e:  # an unknown task name
            raise ConfigError(f"{where}.tasks: {e.args[0] if e.args else e}") from None
        if results is None:  # lm-eval returns None off rank 0
            continue
        metrics.update(flatten_results(results))
        for section in merged:
            merged[section].update(results.get(section) or {})
        for task, records in (results.get("samples") or {}).items():
            samples.extend({"task": task, **r} for r in records)
    if ctx.main:
        from selfalign.artifacts import write_json

        write_json(ctx.out_dir / f"{name}_results.json", _json_safe(merged))
    return EvalResult(metrics, samples=[_sample_record(s) for s in samples])


def _sample_record(s: dict) -> dict:
    """lm-eval's per-sample record, reduced to what a table shows: task, doc id, target, the first response (or the
    log-likelihoods of a multiple-choice task), its filtered form, and each metric."""
    out = {"task": s.get("task"), "doc_id": s.get("doc_id"), "target": str(s.get("target"))}
    resps, filtered = s.get("resps") or [], s.get("filtered_resps") or []
    out["response"] = str(resps[0][0] if resps and isinstance(resps[0], list) and resps[0] else resps)[:4000]
    out["filtered"] = str(filtered[0] if len(filtered) == 1 else filtered)[:4000]
    for metric in s.get("metrics") or []:
        if metric in s:
            out[metric] = s[metric]
    return _json_safe(out)


def headline(cfg: LmEvalConfig, metrics: dict, name: str) -> list[tuple[str, str]]:
    """`headline` keys when given, else each task's first metric (not a stderr), labelled by the task."""
    if cfg.headline:
        return [(key.split("/")[0], f"{name}/{key}") for key in cfg.headline]
    first: dict[str, str] = {}
    for key in metrics:
        if key.startswith(f"{name}/") and "_stderr" not in key:
            first.setdefault(key.split("/")[1], key)
    return list(first.items())


SPEC = EvaluatorSpec("lm_eval", LmEvalConfig, run, "lm-evaluation-harness tasks (in process, HFLM on the model)",
                     headline, check=check, available=require_lm_eval)
