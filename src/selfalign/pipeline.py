"""The round loop: seed SFT and the methods' seed stages (optional) → round 0 eval → rounds of generate → reward →
pairs → train → eval.

    selfalign run recipes/quickstart.yaml

Round t (t ≥ 1) starts from M_{t-1}, samples and rewards with it, trains M_t, evaluates M_t; a GRPO round is
train → eval (it samples and rewards online). Every stage (`selfalign.stages`) reads its inputs from and writes its
outputs to the run directory; a finished stage (listed in manifest.json) is never recomputed, and the long stages
write resumable chunks, so the same command after a kill continues where the run stopped. Under `accelerate
launch` every process runs every stage; they meet at the end of each.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from pathlib import Path

import torch
import yaml

from selfalign import distributed, models
from selfalign.artifacts import RunDir, atomic_write_text, read_json
from selfalign.config import ConfigError, to_dict
from selfalign.context import RoundContext
from selfalign.evaluators import configured
from selfalign.methods import resolve
from selfalign.model_store import ModelStore
from selfalign.recipe import dump_recipe, recipe_differences, resumable_changes
from selfalign.stages import STAGES, report
from selfalign.tracking import Tracker

log = logging.getLogger(__name__)


def run(recipe, output_dir: str | Path) -> dict:
    """Run (or resume) `recipe` in `output_dir`; returns summary.json."""
    ctx = open_run(recipe, output_dir)
    ctx.tracker = Tracker(ctx.run, recipe.tracking, to_dict(recipe), is_main=ctx.main)
    try:
        if recipe.seed_sft.enabled:
            stage(ctx, 0, "seed_sft")
        for name in ctx.methods.seed_stages:  # e.g. GenCLS++'s judge training
            stage(ctx, 0, name)
        stage(ctx, 0, "eval")
        report.run(ctx, 0)
        for t in range(1, recipe.rounds + 1):
            for name in ctx.methods.stages:
                stage(ctx, t, name)
            report.run(ctx, t)
    finally:
        ctx.tracker.finish()
    distributed.barrier()  # the main process has written the last round's summary
    return read_json(ctx.run.summary_path)


def stage(ctx: RoundContext, t: int, name: str) -> None:
    """Stage `name` of round t, unless the manifest lists it as finished."""
    if ctx.run.is_done(t, name):
        ctx.run.check_artifact(t, name)
        return
    log.info("round %d: %s", t, name)
    start = time.time()
    artifact, info = (STAGES[name] if name in STAGES else ctx.methods.stage(name))(ctx, t)
    memory = distributed.gather(peak_memory())  # also a barrier: every process is done with the stage ...
    if ctx.main:
        per_process = {k: [m.get(k) for m in memory] for k in memory[0]}
        ctx.run.mark_done(t, name, artifact, time.time() - start, **info, **per_process)
    distributed.barrier()  # ... and the manifest lists it before any process moves on
    if not ctx.main:
        ctx.run.reload()


def open_run(recipe, output_dir: str | Path) -> RoundContext:
    """The run's context, after the checks that need no stage: the methods, the launch, the model and the prompts
    (`check_inputs`), and that a resumed run uses the recipe it started with (`recipe.RESUMABLE` settings may
    change: rounds, tracking, the learning rate and schedule; each change is logged and kept in the manifest)."""
    run_dir = RunDir(output_dir)
    changes = {}
    if run_dir.recipe_path.exists():
        saved = _saved_recipe(run_dir)
        diffs = recipe_differences(recipe, saved, str(run_dir.recipe_path))
        if diffs:
            raise ConfigError(f"{run_dir.root}: this run directory was started with a different recipe "
                              f"(differs in: {', '.join(diffs)}); use another --output-dir")
        changes = resumable_changes(recipe, saved, str(run_dir.recipe_path))
    methods = resolve(recipe)
    check_launch(recipe, methods)
    check_inputs(recipe)
    main = distributed.is_main()
    if main and changes:
        log.warning("resuming with changed settings: %s (finished stages keep theirs)",
                    ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changes.items()))
        run_dir.set("recipe_changes", [*run_dir.get("recipe_changes", []), {
            "time": time.time(), "stages_done": len(run_dir.get("stages", {})),
            "changes": {k: {"from": a, "to": b} for k, (a, b) in changes.items()}}])
    if main:
        atomic_write_text(run_dir.recipe_path, dump_recipe(recipe))
    store = ModelStore(recipe.model, recipe.generation, run_dir, recipe.seed)
    return RoundContext(recipe, run_dir, store, methods, main=main)


def _saved_recipe(run_dir: RunDir) -> dict:
    try:
        saved = yaml.safe_load(run_dir.recipe_path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{run_dir.recipe_path}: the run's saved recipe cannot be read ({type(e).__name__}); "
                          "restore it, or use another --output-dir") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{run_dir.recipe_path}: the run's saved recipe is not a mapping; restore it, or use "
                          "another --output-dir")
    return saved


def check_inputs(recipe) -> None:
    """The model (its config and tokenizer, no weights), the prompt sources and the seed SFT data, read before any
    stage runs: a mistake in them is one line before anything is written (and a resumed run keeps what it has)."""
    from selfalign.data.prompts import check_prompts
    from selfalign.data.seed import load_seed_examples

    tokenizer, context = models.check_model(recipe.model)
    for key, n in (("generation.max_new_tokens", recipe.generation.max_new_tokens),
                   ("eval.max_new_tokens", recipe.eval.max_new_tokens)):
        if context is not None and n is not None and n > context:
            raise ConfigError(f"{key}: {n} is more than the model's context of {context} tokens")
    check_prompts(recipe.prompts, recipe.rounds, tokenizer, context)
    if recipe.seed_sft.enabled:
        for source in (recipe.seed_sft.data, recipe.seed_sft.judge_data):
            if source:
                load_seed_examples(source, recipe.seed_sft.max_examples, recipe.seed)


def check_launch(recipe, methods) -> None:
    """What this launch cannot do, said in one line before any stage runs."""
    from selfalign.generation_vllm import check_available

    check_available(recipe.generation, distributed.world_size())
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not torch.cuda.is_available():
        log.warning("FSDP was asked for, but accelerate enables it on GPUs only: this CPU launch trains with DDP")
    for m in methods:
        m.check_launch(distributed.world_size(), distributed.zero_stage())
    for evaluator in configured(recipe.eval):
        evaluator.check_available()


def peak_memory() -> dict:
    """This process's peak resident memory since it started (MB), and its GPU's peak allocation when it has one;
    recorded per process with every finished stage."""
    info = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        info["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return info
