"""Reward: every configured internal reward model (`rewards:`) scores every sample with M_{t-1}, in resumable chunks,
plus the score columns methods add (CREAM's `previous`) (rewards.jsonl). Ground truth, where the prompts have it,
only measures how well each reward separates right from wrong samples of the same prompt. Every round also logs
the distribution of the samples' Lastde (`sampled_lastde_*`, from the log-probs generation stored, no forward pass)
and its drift from the previous round's samples, a diagnostic of degenerate or over-confident text."""

from __future__ import annotations

import logging
import statistics

import torch

from selfalign.artifacts import read_jsonl, run_in_chunks, write_jsonl
from selfalign.context import RoundContext, chunk_seed
from selfalign.rewards import RewardContext, build_reward
from selfalign.rewards.lastde import generations_lastde, lastde_summary
from selfalign.rewards.verifier import is_correct
from selfalign.rows import row_of

log = logging.getLogger(__name__)


def run(ctx: RoundContext, t: int):
    recipe, store = ctx.recipe, ctx.store
    gens = read_jsonl(ctx.run.round_dir(t) / "generations.jsonl")
    reward_ctx = RewardContext(store.tokenizer, policy=store.model(t - 1), models=store.roles(t), seed=recipe.seed,
                               max_new_tokens=recipe.generation.max_new_tokens,
                               inputs=ctx.methods.reward_inputs(ctx, t))  # e.g. a reference set to calibrate against
    rewards = {name: build_reward(name, getattr(recipe.rewards, name), reward_ctx)
               for name in recipe.rewards.enabled()}

    def compute(ci: int, chunk: list[dict]) -> list[dict]:
        torch.manual_seed(chunk_seed(recipe.seed, t, "reward", ci))
        rows = [row_of(g) for g in chunk]
        responses = [g["response"] for g in chunk]
        out = [{"prompt_id": g["prompt_id"], "sample": g["sample"], "scores": {}, "details": {}} for g in chunk]
        for name, rm in rewards.items():
            result = rm.score(rows, responses)
            for o, s, d in zip(out, result.scores, result.details or [{}] * len(out), strict=True):
                o["scores"][name] = s
                if d:
                    o["details"][name] = d
        for method in ctx.methods:
            for name, scores in method.extra_scores(ctx, t, rows, responses).items():
                for o, s in zip(out, scores, strict=True):
                    o["scores"][name] = s
        return out

    chunk = recipe.generation.chunk_prompts * recipe.generation.samples_per_prompt
    out_rows = run_in_chunks(gens, chunk, ctx.run.parts_dir(t, "reward"), compute)
    path = ctx.run.round_dir(t) / "rewards.jsonl"
    if ctx.main:
        write_jsonl(path, out_rows)
    stats = reward_stats(gens, out_rows, recipe.rewards.enabled(), recipe.pairs.reward)
    previous = ctx.run.round_dir(t - 1) / "generations.jsonl"
    stats.update(lastde_summary(generations_lastde(gens), generations_lastde(read_jsonl(previous))
                                if previous.exists() else None, prefix="sampled_lastde"))
    return path, stats


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def pairwise_accuracy(groups: list[list[tuple[float | None, bool]]]) -> tuple[float | None, int]:
    """P(score(right) > score(wrong)) over (right, wrong) sample pairs of the same prompt; ties count half."""
    wins, n = 0.0, 0
    for samples in groups:
        right = [s for s, ok in samples if ok and s is not None]
        wrong = [s for s, ok in samples if not ok and s is not None]
        for r in right:
            for w in wrong:
                wins += 1.0 if r > w else 0.5 if r == w else 0.0
                n += 1
    return (wins / n if n else None), n


def reward_stats(gens: list[dict], rewards: list[dict], names: list[str], ranking: str) -> dict:
    """Per reward: mean, std, unscored samples, parse failures (a judge's unparseable judgments) and, with ground
    truth, its pairwise accuracy (right vs wrong samples of one prompt); `mean` / `std` of the ranking reward."""
    stats: dict = {}
    for name in names:
        values = [r["scores"][name] for r in rewards if r["scores"].get(name) is not None]
        stats[f"{name}_mean"], stats[f"{name}_std"] = _mean_std(values)
        stats[f"{name}_unscored"] = len(rewards) - len(values)
        failures = [r["details"][name]["parse_failures"] for r in rewards
                    if "parse_failures" in r["details"].get(name, {})]
        if failures:
            judged = sum(len(r["details"][name].get("parsed", ())) for r in rewards if name in r["details"])
            stats[f"{name}_parse_failures"] = sum(failures)
            stats[f"{name}_parse_failure_rate"] = sum(failures) / judged if judged else None
            if judged and sum(failures) / judged > 0.5:
                log.warning("%s: %d of %d judgments (%.0f%%) did not parse; their samples are unscored", name,
                            sum(failures), judged, 100 * sum(failures) / judged)
    stats["mean"], stats["std"] = stats.get(f"{ranking}_mean"), stats.get(f"{ranking}_std")
    if gens and all(g.get("answer") is not None for g in gens):
        correct = [is_correct({"prompt": g["prompt"], "answer": g["answer"]}, g["response"]) for g in gens]
        for name in names:
            by_prompt: dict = {}
            for g, r, ok in zip(gens, rewards, correct, strict=True):
                by_prompt.setdefault(g["prompt_id"], []).append((r["scores"].get(name), ok))
            stats[f"{name}_pairwise_accuracy"], stats[f"{name}_pairs"] = pairwise_accuracy(list(by_prompt.values()))
        stats["sample_accuracy"] = sum(correct) / len(correct)
    return stats
