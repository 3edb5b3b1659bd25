"""Report: round t's summary.json entry, its metrics.jsonl line / W&B point, its console row, W&B tables of sampled
and of eval responses, and the round's pairs / eval samples / rollouts as W&B artifacts (main process; idempotent on
resume, so a resumed run logs each round once). The HTML report of a whole run is `selfalign.report`."""

from __future__ import annotations

from selfalign.artifacts import read_json, read_jsonl, write_json
from selfalign.context import RoundContext
from selfalign.evaluators import configured, headline_columns

_SECTIONS = {"generate": "generation", "reward": "rewards", "pairs": "pairs", "train": "train", "seed_sft": "seed_sft"}


def run(ctx: RoundContext, t: int) -> None:
    if not ctx.main:
        return
    run_dir = ctx.run
    summary = read_json(run_dir.summary_path) if run_dir.summary_path.exists() else {"rounds": []}
    entry: dict = {"round": t, "eval": read_json(run_dir.round_dir(t) / "eval.json")}
    stages = ("seed_sft", *ctx.methods.seed_stages, "eval") if t == 0 else ctx.methods.stages
    seconds = {s: run_dir.stage_info(t, s)["seconds"] for s in stages if run_dir.is_done(t, s)}
    own = {s: s for s in stages if s not in _SECTIONS and s != "eval"}  # methods' stages, under their own names
    for s, section in {**_SECTIONS, **own}.items():
        if run_dir.is_done(t, s):
            info = run_dir.stage_info(t, s)
            entry[section] = {k: v for k, v in info.items() if not k.startswith("peak_")
                              and k not in ("finished_at", "seconds", "artifact", "sha256")}
    entry["seconds"] = seconds
    entry["peak_rss_mb"] = {s: run_dir.stage_info(t, s).get("peak_rss_mb") for s in seconds}  # per process
    summary["rounds"] = [r for r in summary["rounds"] if r["round"] != t] + [entry]
    summary["rounds"].sort(key=lambda r: r["round"])
    write_json(run_dir.summary_path, summary)

    flat: dict = {f"eval/{k}": v for k, v in entry["eval"].items()}
    instances = configured(ctx.recipe.eval)
    ctx.tracker.add_console_columns([(label[:11], f"eval/{key}", ".3f")
                                     for label, key in headline_columns(instances, entry["eval"])
                                     if f"eval/{key}" not in ("eval/accuracy_greedy", "eval/accuracy_sampled")])
    for section, prefix in (("rewards", "reward"), ("pairs", "pairs"), ("train", "train")):
        flat.update({f"{prefix}/{k}": v for k, v in entry.get(section, {}).items()
                     if isinstance(v, int | float) and not isinstance(v, bool)})
    flat.update({f"time/{k}": v for k, v in seconds.items()})
    flat["time/round"] = sum(seconds.values())
    if run_dir.is_done(t, "eval"):  # the time each evaluator (and the held-out responses) took
        flat.update({f"time/eval_{k[len('seconds_'):]}": v for k, v in run_dir.stage_info(t, "eval").items()
                     if k.startswith("seconds_")})
    flat.update({f"memory/{s}_peak_rss_mb": max(v) for s, v in entry["peak_rss_mb"].items() if v})
    if run_dir.get("reported_round", -1) < t:
        ctx.tracker.log(t, flat)
        ctx.tracker.log_samples(t, sample_table(ctx, t))
        if ctx.tracker.wandb is not None:
            ctx.tracker.log_samples(t, eval_sample_table(ctx, t), key="eval_samples")
            round_dir = run_dir.round_dir(t)
            for inst in instances:  # each evaluator's own records (lm-eval's samples, best-of-N rewards, ...)
                path = round_dir / "eval" / f"{inst.name}_samples.jsonl"
                if path.exists():
                    ctx.tracker.log_samples(t, read_jsonl(path)[: ctx.recipe.tracking.log_samples],
                                            key=f"eval_{inst.name}")
            ctx.tracker.log_files(t, "pairs", "preference-pairs",
                                  [round_dir / "pairs.jsonl", round_dir / "pairs_conversational.jsonl"])
            eval_files = sorted(p for p in (round_dir / "eval").rglob("*") if p.is_file()) \
                if (round_dir / "eval").is_dir() else []
            ctx.tracker.log_files(t, "eval_samples", "eval-samples", [round_dir / "eval_samples.jsonl", *eval_files],
                                  root=round_dir)
            ctx.tracker.log_files(t, "rollouts", "grpo-rollouts", [round_dir / "rollouts.jsonl"])
        run_dir.set("reported_round", t)
    ctx.tracker.console_row({"round": t, **flat})


def sample_table(ctx: RoundContext, t: int) -> list[dict]:
    """Responses of round t with their scores: its last rollouts when it sampled online (GRPO, what the policy
    writes at its end), else its first generations."""
    n, round_dir = ctx.recipe.tracking.log_samples, ctx.run.round_dir(t)
    if t == 0 or n == 0:
        return []
    if (round_dir / "rollouts.jsonl").exists():
        return [{"prompt": r["prompt"], "response": r["response"],
                 **{f"score/{k}": v for k, v in r["scores"].items()}}
                for r in read_jsonl(round_dir / "rollouts.jsonl")[-n:]]
    if not (round_dir / "generations.jsonl").exists():  # a GRPO round that did not train (every prompt screened)
        return []
    gens = read_jsonl(round_dir / "generations.jsonl")[:n]
    rewards = read_jsonl(round_dir / "rewards.jsonl")[:n]
    return [{"prompt": g["prompt"], "response": g["response"],
             **{f"score/{k}": v for k, v in r["scores"].items()}} for g, r in zip(gens, rewards, strict=True)]


def eval_sample_table(ctx: RoundContext, t: int) -> list[dict]:
    """Round t's first eval responses (greedy and sampled, right or wrong where measured) with their prompts."""
    from selfalign.data.prompts import eval_rows

    n, path = ctx.recipe.tracking.log_samples, ctx.run.round_dir(t) / "eval_samples.jsonl"
    if n == 0 or not path.exists():
        return []
    samples = read_jsonl(path)[:n]
    prompts = {r["id"]: r["prompt"] for r in eval_rows(ctx.recipe.prompts, ctx.recipe.rounds, ctx.store.tokenizer)}
    return [{"prompt": prompts.get(s["prompt_id"]), **s} for s in samples]
