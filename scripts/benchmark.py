"""Benchmark: time per stage of one quickstart round, generation tokens/s, judge responses/s in each
judge mode, and the sandbox model's accuracies and judge pairwise accuracy.

    .venv/bin/python scripts/benchmark.py [--recipe recipes/quickstart.yaml] [--json bench.json]

Numbers are for the machine it runs on; the README's table came from this script.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import replace

import torch

from selfalign import models, pipeline
from selfalign.data.prompts import load_prompts
from selfalign.generation import generate
from selfalign.recipe import load_recipe
from selfalign.rewards.judge import JudgeConfig, JudgeReward
from selfalign.rewards.verifier import is_correct
from selfalign.stages.reward import pairwise_accuracy as judge_pairwise_accuracy


def accuracy(model, tok, rows, temperature: float, max_new_tokens: int) -> float:
    out = generate(model, tok, [r["prompt"] for r in rows], num_samples=1, temperature=temperature,
                   max_new_tokens=max_new_tokens, batch_size=256, with_logprobs=False)
    return sum(is_correct(r, s[0].text) for r, s in zip(rows, out, strict=True)) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--eval-prompts", type=int, default=512)
    parser.add_argument("--judge-prompts", type=int, default=256)
    parser.add_argument("--judge-samples", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(torch.get_num_threads())
    recipe = load_recipe(args.recipe)
    results: dict = {"recipe": args.recipe, "threads": torch.get_num_threads()}

    start = time.time()
    path = models.base_model_path(recipe.model)
    results["model_ready_s"] = round(time.time() - start, 1)
    tok = models.load_tokenizer(path, recipe.model)
    model = models.load_model(path, recipe.model).eval()
    g = recipe.generation

    # 1. One round of the recipe, stage by stage.
    with tempfile.TemporaryDirectory() as tmp:
        one = replace(recipe, rounds=1, tracking=replace(recipe.tracking, console=False,
                                                         wandb=replace(recipe.tracking.wandb, enabled=False)))
        summary = pipeline.run(one, tmp)
        results["round_1_stage_seconds"] = summary["rounds"][1]["seconds"]
        results["round_0_eval_seconds"] = summary["rounds"][0]["seconds"]["eval"]

    # 2. Generation throughput.
    train_rows = load_prompts(recipe.prompts.source, limit=recipe.prompts.train_per_round).rows
    torch.manual_seed(0)
    start = time.time()
    samples = generate(model, tok, [r["prompt"] for r in train_rows], num_samples=g.samples_per_prompt,
                       temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens,
                       batch_size=g.batch_size)
    secs = time.time() - start
    tokens = sum(len(s.token_ids) + (s.finish_reason == "eos") for ss in samples for s in ss)
    results["generation"] = {"sequences": len(train_rows) * g.samples_per_prompt, "tokens": tokens,
                             "seconds": round(secs, 2), "tokens_per_s": round(tokens / secs, 1)}

    # 3. The sandbox model: accuracies on held-out prompts.
    eval_rows = load_prompts(recipe.prompts.source, sandbox_split="eval", limit=args.eval_prompts).rows
    torch.manual_seed(0)
    results["accuracy_greedy"] = accuracy(model, tok, eval_rows, 0.0, g.max_new_tokens)
    results["accuracy_sampled"] = accuracy(model, tok, eval_rows, 1.0, g.max_new_tokens)

    # 4. The judge: responses/s and pairwise accuracy on the model's own T=1 samples, each mode.
    judge_rows = eval_rows[: args.judge_prompts]
    torch.manual_seed(1)
    own = generate(model, tok, [r["prompt"] for r in judge_rows], num_samples=args.judge_samples,
                   temperature=1.0, max_new_tokens=g.max_new_tokens, batch_size=256, with_logprobs=False)
    flat_rows = [dict(r, prompt_text=r["prompt"]) for r, ss in zip(judge_rows, own, strict=True) for _ in ss]
    flat_resp = [s.text for ss in own for s in ss]
    correct = [is_correct(r, y) for r, y in zip(flat_rows, flat_resp, strict=True)]
    results["judge"] = {}
    modes = {"generate_greedy_x1": JudgeConfig(mode="generate", template="sandbox", num_judgments=1,
                                               temperature=0.0, max_new_tokens=64, batch_size=256),
             "generate_T0.7_x3": JudgeConfig(mode="generate", template="sandbox", num_judgments=3,
                                             temperature=0.7, max_new_tokens=64, batch_size=256),
             "expected": JudgeConfig(mode="expected", template="sandbox", batch_size=256)}
    for name, cfg in modes.items():
        torch.manual_seed(2)
        start = time.time()
        out = JudgeReward(model, tok, cfg).score(flat_rows, flat_resp)
        secs = time.time() - start
        groups = [list(zip(out.scores[i : i + args.judge_samples], correct[i : i + args.judge_samples],
                           strict=True)) for i in range(0, len(flat_resp), args.judge_samples)]
        acc, pairs = judge_pairwise_accuracy(groups)
        strict_wins = sum(1 for grp in groups for s, ok in grp if ok for s2, ok2 in grp
                          if not ok2 and s is not None and s2 is not None and s > s2)
        results["judge"][name] = {"responses_per_s": round(len(flat_resp) / secs, 1), "seconds": round(secs, 2),
                                  "pairwise_accuracy": round(acc, 4) if acc is not None else None,
                                  "pairwise_accuracy_strict": round(strict_wins / pairs, 4) if pairs else None,
                                  "pairs": pairs,
                                  "unscored": sum(s is None for s in out.scores)}

    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
