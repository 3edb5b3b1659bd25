"""Eval: M_t on the held-out prompts, greedy and sampled, in resumable chunks: accuracy against the verifier where
the prompts have answers, and the mean response length (eval.json, eval_samples.jsonl)."""

from __future__ import annotations

import statistics

from selfalign.artifacts import run_in_chunks, write_json, write_jsonl
from selfalign.context import RoundContext, chunk_seed
from selfalign.data.prompts import eval_rows
from selfalign.rewards.verifier import is_correct


def run(ctx: RoundContext, t: int):
    e, g = ctx.recipe.eval, ctx.recipe.generation
    rows = eval_rows(ctx.recipe.prompts, ctx.recipe.rounds, ctx.store.tokenizer)
    verifiable = all(r.get("answer") is not None for r in rows)
    modes = [m for m, on in (("greedy", e.greedy), ("sampled", e.sampled)) if on]

    def compute(ci: int, chunk: list[dict]) -> list[dict]:
        out = [{"prompt_id": r["id"]} for r in chunk]
        for mode in modes:  # greedy draws no random numbers: the sampled mode sees the chunk's seed either way
            samples = ctx.store.sample(t, [r["prompt_text"] for r in chunk], chunk_seed(ctx.recipe.seed, t, "eval", ci),
                                       num_samples=1, temperature=0.0 if mode == "greedy" else e.temperature,
                                       top_p=e.top_p, max_new_tokens=e.max_new_tokens or g.max_new_tokens,
                                       batch_size=e.batch_size, stop=g.stop, with_logprobs=False)
            for o, r, (s,) in zip(out, chunk, samples, strict=True):
                o[f"{mode}_response"] = s.text
                o[f"{mode}_tokens"] = len(s.token_ids)
                if verifiable:
                    o[f"{mode}_correct"] = is_correct(r, s.text)
        return out

    results = run_in_chunks(rows, e.batch_size, ctx.run.parts_dir(t, "eval"), compute)
    metrics: dict = {"prompts": len(rows)}
    for mode in modes:
        if verifiable:
            metrics[f"accuracy_{mode}"] = sum(r[f"{mode}_correct"] for r in results) / max(len(results), 1)
    length_mode = "sampled" if e.sampled else "greedy"
    if modes:
        metrics["mean_response_tokens"] = statistics.fmean(r[f"{length_mode}_tokens"] for r in results)
    path = ctx.run.round_dir(t) / "eval.json"
    if ctx.main:
        write_json(path, metrics)
        write_jsonl(ctx.run.round_dir(t) / "eval_samples.jsonl", results)
    return path, {}
