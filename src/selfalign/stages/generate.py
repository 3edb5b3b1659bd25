"""Generate: K samples of each of round t's prompts from M_{t-1}, in resumable chunks, with the per-token
log-prob of every sampled token (generations.jsonl)."""

from __future__ import annotations

from selfalign.artifacts import run_in_chunks, write_jsonl
from selfalign.context import RoundContext, chunk_seed
from selfalign.rows import generation


def run(ctx: RoundContext, t: int):
    g = ctx.recipe.generation
    rows = ctx.methods.train_prompts(ctx, t)

    def compute(ci: int, chunk: list[dict]) -> list[dict]:
        samples = ctx.store.sample(t - 1, [r["prompt_text"] for r in chunk], chunk_seed(ctx.recipe.seed, t, "generate",
                                   ci), num_samples=g.samples_per_prompt, temperature=g.temperature, top_p=g.top_p,
                                   max_new_tokens=g.max_new_tokens, batch_size=g.batch_size, stop=g.stop)
        return [generation(r, k, s) for r, ss in zip(chunk, samples, strict=True) for k, s in enumerate(ss)]

    out_rows = run_in_chunks(rows, g.chunk_prompts, ctx.run.parts_dir(t, "generate"), compute)
    path = ctx.run.round_dir(t) / "generations.jsonl"
    if ctx.main:
        write_jsonl(path, out_rows)
    return path, {"prompts": len(rows), "samples": len(out_rows)}
