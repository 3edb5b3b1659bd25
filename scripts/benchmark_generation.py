"""Sampling throughput of the two generation backends on the same model and prompts: transformers `generate`
(generation.py) against vLLM (generation_vllm.py), in generated tokens per second.

Both sample `--samples` responses per prompt at T=1 with up to `--max-new-tokens` tokens, with the per-token
log-probs selfalign keeps (transformers: one extra teacher-forced pass; vLLM: returned by the engine). Each
backend runs once to warm up on a few prompts, then is timed on all of them; vLLM's engine start-up is timed
separately. Without vLLM or a GPU only the transformers side runs, and the report says why.

    .venv/bin/python scripts/benchmark_generation.py --model sandbox
    python scripts/benchmark_generation.py --model meta-llama/Meta-Llama-3-8B-Instruct --dtype bfloat16 \\
        --prompts data/gsm8k_test.jsonl --num-prompts 256 --samples 4 --max-new-tokens 512 --batch-size 256

Writes OUTPUT.json and OUTPUT.md (default docs/results/generation_backends).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from selfalign import models
from selfalign.config import ConfigError
from selfalign.data.prompts import load_prompts, render_prompt
from selfalign.generation import generate
from selfalign.recipe import recipe_from_dict


def timed(fn) -> tuple[list, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def tokens(samples: list[list]) -> int:
    return sum(len(s.token_ids) for per_prompt in samples for s in per_prompt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sandbox", help="'sandbox', a model directory or a hub id")
    parser.add_argument("--dtype", default="auto", choices=["float32", "bfloat16", "float16", "auto"])
    parser.add_argument("--prompts", default="sandbox://arith?terms=3&digits=2&seed=0")
    parser.add_argument("--num-prompts", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256, help="transformers: sequences per generate call")
    parser.add_argument("--output", default="docs/results/generation_backends")
    args = parser.parse_args()

    recipe = recipe_from_dict({"model": {"path": args.model, "dtype": args.dtype},
                               "generation": {"backend": "vllm"}})
    path = models.base_model_path(recipe.model)
    tok = models.load_tokenizer(path, recipe.model)
    rows = load_prompts(args.prompts, limit=args.num_prompts).rows
    prompts = [render_prompt(tok, r, "auto") for r in rows]
    kwargs = dict(num_samples=args.samples, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report: dict = {"model": args.model, "dtype": args.dtype, "device": torch.cuda.get_device_name()
                    if device == "cuda" else "cpu", "prompts": len(prompts), **kwargs}

    model = models.load_model(path, recipe.model, device).eval()
    torch.manual_seed(0)
    generate(model, tok, prompts[:8], batch_size=args.batch_size, **kwargs)  # warm-up
    out, seconds = timed(lambda: generate(model, tok, prompts, batch_size=args.batch_size, **kwargs))
    report["transformers"] = {"seconds": round(seconds, 2), "tokens": tokens(out),
                              "tokens_per_s": round(tokens(out) / seconds, 1)}
    model = None  # free its memory before vLLM starts
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    from selfalign.generation_vllm import check_available, generate_vllm, load_engine

    try:
        check_available(recipe.generation, 1)
    except ConfigError as e:
        report["vllm"] = {"skipped": str(e)}
    else:
        llm, start_s = timed(lambda: load_engine(path, recipe.model, recipe.generation, recipe.seed, 1))
        generate_vllm(llm, tok, prompts[:8], seed=0, **kwargs)  # warm-up
        out, seconds = timed(lambda: generate_vllm(llm, tok, prompts, seed=0, **kwargs))
        report["vllm"] = {"engine_start_s": round(start_s, 1), "seconds": round(seconds, 2), "tokens": tokens(out),
                          "tokens_per_s": round(tokens(out) / seconds, 1)}

    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| backend | generated tokens | seconds | tokens/s |", "|---|---|---|---|"]
    for name in ("transformers", "vllm"):
        r = report[name]
        lines.append(f"| {name} | skipped: {r['skipped']} | | |" if "skipped" in r
                     else f"| {name} | {r['tokens']} | {r['seconds']} | {r['tokens_per_s']} |")
    text = (f"{report['model']} ({report['dtype']}) on {report['device']}: {len(prompts)} prompts × "
            f"{args.samples} samples, T=1, up to {args.max_new_tokens} new tokens\n\n" + "\n".join(lines) + "\n")
    out_path.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
