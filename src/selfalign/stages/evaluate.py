"""Eval: M_t on the held-out prompts, by every configured evaluator (`eval.evaluators`, `selfalign.evaluators`;
default the verifier), every round including round 0.

First the held-out responses the evaluators read (greedy and sampled, as `eval.greedy` / `eval.sampled` say), in
resumable chunks, and K samples per prompt when an evaluator needs them; then each evaluator, whose result is kept
in `.parts/eval/evaluators/` until the stage ends, so a killed stage resumes at its first unfinished evaluator.
Writes eval.json (the legacy keys `accuracy_greedy`, `accuracy_sampled`, `mean_response_tokens`, `prompts`, and
every evaluator's metrics as `<name>/<metric>`), eval_samples.jsonl (each prompt's responses plus the evaluators'
per-prompt columns, e.g. a judge's verdicts), and under round_t/eval/: `samples.jsonl` (the K samples),
`<name>_samples.jsonl` and each evaluator's own files (an AlpacaEval export, lm-eval's results).

Under `accelerate launch` the chunks are shared between processes; each evaluator then runs on every process (the
same work; the main process writes).
"""

from __future__ import annotations

import re
import shutil
import statistics
import time
from pathlib import Path

from selfalign import distributed
from selfalign.artifacts import read_json, read_jsonl, run_in_chunks, write_json, write_jsonl
from selfalign.config import ConfigError
from selfalign.context import RoundContext, chunk_seed
from selfalign.data.prompts import eval_rows
from selfalign.evaluators import configured, prefixed
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


class RoundEvalContext(EvalContext):
    """The evaluators' view of round t: M_t, the run's other models, and the other rounds' eval outputs."""

    def __init__(self, ctx: RoundContext, t: int, rows: list[dict], k_samples: int):
        self.rc, self.t = ctx, t
        self.rows, self.tokenizer, self.eval_cfg = rows, ctx.store.tokenizer, ctx.recipe.eval
        self.seed, self.round, self.main = ctx.recipe.seed, t, ctx.main
        self.out_dir = ctx.run.round_dir(t) / "eval"
        self.generator = f"{ctx.run.root.name}/round_{t}"
        self.stop = tuple(ctx.recipe.generation.stop)
        self.k_samples = k_samples
        self._outputs: dict[str, Outputs] = {}
        self._samples: list[list[str]] | None = None
        self._paths = ModelsByPath(ctx.store.device)

    @property
    def max_new_tokens(self) -> int:
        return self.eval_cfg.max_new_tokens or self.rc.recipe.generation.max_new_tokens

    # ------------------------------------------------------------------------------------------- M_t's outputs

    def generate_outputs(self) -> list[dict]:
        """The greedy / sampled responses of M_t (eval_samples.jsonl rows), chunked and resumable."""
        e, store, t = self.eval_cfg, self.rc.store, self.t
        modes = [m for m in MODES if getattr(e, m)]

        def compute(ci: int, chunk: list[dict]) -> list[dict]:
            out = [{"prompt_id": r["id"]} for r in chunk]
            for mode in modes:  # greedy draws no random numbers: the sampled mode sees the chunk's seed either way
                samples = store.sample(t, [r["prompt_text"] for r in chunk], chunk_seed(self.seed, t, "eval", ci),
                                       num_samples=1, temperature=0.0 if mode == "greedy" else e.temperature,
                                       top_p=e.top_p, max_new_tokens=self.max_new_tokens, batch_size=e.batch_size,
                                       stop=list(self.stop), with_logprobs=False)
                for o, (s,) in zip(out, samples, strict=True):
                    o[f"{mode}_response"] = s.text
                    o[f"{mode}_tokens"] = len(s.token_ids)
            return out

        results = run_in_chunks(self.rows, e.batch_size, self.rc.run.parts_dir(t, "eval"), compute)
        for mode in modes:
            self._outputs[mode] = Outputs([r[f"{mode}_response"] for r in results],
                                          [r[f"{mode}_tokens"] for r in results])
        return results

    def outputs(self, mode: str) -> Outputs:
        if mode not in self._outputs:
            raise ConfigError(f"eval.{mode}: the evaluators need {mode} responses, which are off")
        return self._outputs[mode]

    def samples(self, k: int) -> list[list[str]]:
        if self._samples is None:
            e, store, t = self.eval_cfg, self.rc.store, self.t

            def compute(ci: int, chunk: list[dict]) -> list[dict]:
                groups = store.sample(t, [r["prompt_text"] for r in chunk],
                                      chunk_seed(self.seed, t, "eval_samples", ci), num_samples=self.k_samples,
                                      temperature=e.temperature, top_p=e.top_p, max_new_tokens=self.max_new_tokens,
                                      batch_size=e.batch_size, stop=list(self.stop), with_logprobs=False)
                return [{"prompt_id": r["id"], "responses": [s.text for s in g],
                         "responses_tokens": sum(len(s.token_ids) for s in g)} for r, g in zip(chunk, groups,
                                                                                               strict=True)]

            per_chunk = max(1, e.batch_size // self.k_samples)
            rows = run_in_chunks(self.rows, per_chunk, self.rc.run.parts_dir(t, "eval_samples"), compute)
            if self.main:
                write_jsonl(self.out_dir / "samples.jsonl", rows)
            self._samples = [r["responses"] for r in rows]
        if k > self.k_samples:
            raise ValueError(f"{k} samples asked for, {self.k_samples} drawn")
        return [g[:k] for g in self._samples]

    # ------------------------------------------------------------------------------------------- baselines

    def _baseline_round(self, baseline: str) -> int:
        return 0 if baseline == "initial" else max(self.t - 1, 0)

    def _check_ids(self, ids: list, source: Path, where: str) -> None:
        if ids != [r["id"] for r in self.rows]:
            raise ConfigError(f"{where}: {source} holds other held-out prompts than this round's")

    def baseline_outputs(self, baseline: str, mode: str, where: str) -> list[str]:
        if baseline in RUN_BASELINES:
            b = self._baseline_round(baseline)
            if b == self.t:
                return self.outputs(mode).texts
            path = self.rc.run.round_dir(b) / "eval_samples.jsonl"
            rows = read_jsonl(path) if path.exists() else []
            if not rows or f"{mode}_response" not in rows[0]:
                raise ConfigError(f"{where}: round {b} has no {mode} eval responses ({path})")
            self._check_ids([r["prompt_id"] for r in rows], path, where)
            return [r[f"{mode}_response"] for r in rows]
        if is_output_file(baseline):
            return read_reference_outputs(baseline, self.rows, where)
        cache = self._baseline_cache(baseline, mode)
        if cache.exists():
            return read_jsonl(cache)[0]["outputs"]
        model, tokenizer = self._paths.load(baseline, where)
        outputs = [g[0].text for g in generate_outputs(model, tokenizer, self.rows, mode, self.eval_cfg,
                                                       self.max_new_tokens, self.seed + 1, self.stop)]
        if self.main:
            write_jsonl(cache, [{"baseline": baseline, "mode": mode, "outputs": outputs}])
        return outputs

    def baseline_samples(self, baseline: str, k: int, where: str) -> list[list[str]]:
        if baseline in RUN_BASELINES:
            b = self._baseline_round(baseline)
            if b == self.t:
                return self.samples(k)
            path = self.rc.run.round_dir(b) / "eval" / "samples.jsonl"
            if not path.exists():
                raise ConfigError(f"{where}: round {b} drew no eval samples ({path})")
            rows = read_jsonl(path)
            self._check_ids([r["prompt_id"] for r in rows], path, where)
            if min(len(r["responses"]) for r in rows) < k:
                raise ConfigError(f"{where}: round {b} drew fewer than {k} samples per prompt ({path})")
            return [r["responses"][:k] for r in rows]
        cache = self._baseline_cache(baseline, f"samples{self.k_samples}")
        if cache.exists():
            return read_jsonl(cache)[0]["samples"][:k]
        model, tokenizer = self._paths.load(baseline, where)
        groups = generate_outputs(model, tokenizer, self.rows, "sampled", self.eval_cfg, self.max_new_tokens,
                                  self.seed + 2, self.stop, num_samples=self.k_samples)
        samples = [[s.text for s in g] for g in groups]
        if self.main:
            write_jsonl(cache, [{"baseline": baseline, "samples": samples}])
        return [g[:k] for g in samples]

    def _baseline_cache(self, baseline: str, what: str) -> Path:
        """A model baseline's outputs are the same every round: drawn once, kept in OUTPUT_DIR/eval_baselines/."""
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", baseline).strip("_")[-80:]
        return self.rc.run.root / "eval_baselines" / f"{safe}-{what}.jsonl"

    # ------------------------------------------------------------------------------------------- models

    def model(self, spec: str, where: str):
        store, t = self.rc.store, self.t
        if spec == "policy":
            return store.model(t), store.tokenizer
        if spec == "initial":
            return store.model(0), store.tokenizer
        if spec == "base":
            return store.base(), store.tokenizer
        if spec == "previous":
            return store.model(max(t - 1, 0)), store.tokenizer
        return self._paths.load(spec, where)

    def roles(self):
        return self.rc.store.roles(self.t + 1)  # relative to M_t: `previous` is M_{t-1}

    def reward_names(self) -> list[str]:
        return self.rc.recipe.rewards.enabled()

    def reward_options(self, name: str, where: str):
        from selfalign.rewards import reward_config

        configured_options = getattr(self.rc.recipe.rewards, name, None)
        return configured_options if configured_options is not None else reward_config(name, None, where)


def run(ctx: RoundContext, t: int):
    e = ctx.recipe.eval
    instances = configured(e)
    rows = eval_rows(ctx.recipe.prompts, ctx.recipe.rounds, ctx.store.tokenizer)
    k = max((i.spec.samples_per_prompt(i.cfg) for i in instances if i.spec.samples_per_prompt), default=0)
    ectx = RoundEvalContext(ctx, t, rows, k)
    info: dict = {}
    metrics: dict = {"prompts": len(rows)}
    results: list[dict] = []
    instances.sort(key=lambda i: not i.legacy)  # eval.json: the legacy keys first, as before
    if any("responses" in i.spec.needs for i in instances) and (e.greedy or e.sampled):
        start = time.perf_counter()
        results = ectx.generate_outputs()
        info["seconds_responses"] = round(time.perf_counter() - start, 3)
    if k:
        start = time.perf_counter()
        ectx.samples(k)
        info["seconds_samples"] = round(time.perf_counter() - start, 3)
    cache_dir = ctx.run.parts_dir(t, "eval") / "evaluators"
    for inst in instances:
        cached = cache_dir / f"{inst.name}.json"
        if cached.exists():
            done = read_json(cached)
        else:
            start = time.perf_counter()
            result = inst.run(ectx)
            done = {"metrics": prefixed(inst, result.metrics), "columns": prefixed(inst, result.columns),
                    "seconds": round(time.perf_counter() - start, 3)}
            if ctx.main:
                if result.samples:
                    write_jsonl(ectx.out_dir / f"{inst.name}_samples.jsonl", result.samples)
                write_json(cached, done)
        metrics.update(done["metrics"])
        for column, values in done["columns"].items():
            for r, v in zip(results, values, strict=True):
                r[column] = v
        info[f"seconds_{inst.name}"] = done["seconds"]
    if results:
        length_mode = "sampled" if e.sampled else "greedy"
        metrics["mean_response_tokens"] = statistics.fmean(r[f"{length_mode}_tokens"] for r in results)
    path = ctx.run.round_dir(t) / "eval.json"
    if ctx.main:
        write_json(path, metrics)
        if results:
            write_jsonl(ctx.run.round_dir(t) / "eval_samples.jsonl", results)
    distributed.barrier()  # every process has read the K samples' chunks
    if ctx.main:
        shutil.rmtree(ctx.run.parts_dir(t, "eval_samples"), ignore_errors=True)  # eval/samples.jsonl holds them
    return path, info
