"""How well P(True), P(True) with brainstorming and Lastde tell right samples from wrong ones (issue 14 §3, §4).

K samples per prompt from the model (temperature 1 by default), graded by the verifier; each sample scored by
plain P(True), by P(True) with the prompt's other K − 1 samples shown as brainstormed ideas, by Lastde of its
sampled log-probs (the ones generation stores, no extra pass), and, as references, by the length-normalised
likelihood and self-certainty. Per score: the AUROC for "this sample is right" over all samples and the
within-prompt pairwise accuracy, as the `reward_auroc` evaluator defines them (ties half; unscored samples left
out), plus the per-prompt p̂ statistics.

    OMP_NUM_THREADS=1 python scripts/measure_ptrue_lastde.py --model sandbox \
        --prompts "sandbox://arith?terms=3&digits=2&seed=0" --num-prompts 128 --samples 4 --max-new-tokens 40 \
        --output docs/results/ptrue_lastde_sandbox.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from selfalign import models
from selfalign.data.prompts import load_prompts, render_prompt
from selfalign.evaluators.reward_auroc import auroc, pairwise_accuracy
from selfalign.generation import generate
from selfalign.rewards import RewardContext, build_reward
from selfalign.rewards.lastde import lastde_score
from selfalign.rewards.ptrue import PTrueConfig
from selfalign.rewards.verifier import is_correct


def separation(scores: list[float | None], correct: list[bool], prompt_ids: list[str]) -> dict:
    kept = [(s, ok, p) for s, ok, p in zip(scores, correct, prompt_ids, strict=True) if s is not None]
    by_prompt: dict = {}
    for s, ok, p in kept:
        by_prompt.setdefault(p, []).append((s, ok))
    return {"auroc": auroc([s for s, _, _ in kept], [ok for _, ok, _ in kept]),
            "pairwise_accuracy": pairwise_accuracy(list(by_prompt.values())), "unscored": len(scores) - len(kept),
            "mean_right": statistics.fmean([s for s, ok, _ in kept if ok] or [float("nan")]),
            "mean_wrong": statistics.fmean([s for s, ok, _ in kept if not ok] or [float("nan")])}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sandbox")
    ap.add_argument("--prompts", default="sandbox://arith?terms=3&digits=2&seed=0")
    ap.add_argument("--split", default=None, help="default: eval for a sandbox source, else train")
    ap.add_argument("--num-prompts", type=int, default=128)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)

    model, tokenizer = models.load_for_eval(args.model)
    sandbox = args.prompts.startswith("sandbox://")
    split = args.split or ("eval" if sandbox else "train")
    rows = load_prompts(args.prompts, split=split, sandbox_split=split, limit=args.num_prompts).rows
    for r in rows:
        r["prompt_text"] = render_prompt(tokenizer, r)
    times: dict = {}
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    groups = generate(model, tokenizer, [r["prompt_text"] for r in rows], num_samples=args.samples,
                      temperature=args.temperature, top_p=1.0, max_new_tokens=args.max_new_tokens,
                      batch_size=args.batch_size)
    times["generate"] = time.perf_counter() - t0
    flat_rows = [r for r, g in zip(rows, groups, strict=True) for _ in g]
    samples = [s for g in groups for s in g]
    texts = [s.text for s in samples]
    correct = [is_correct(r, y) for r, y in zip(flat_rows, texts, strict=True)]
    ids = [str(r["id"]) for r in flat_rows]

    ctx = RewardContext(tokenizer, policy=model, max_new_tokens=args.max_new_tokens, where="measure")
    scores: dict[str, list] = {}
    t0 = time.perf_counter()
    scores["lastde"] = [lastde_score(s.logprobs) for s in samples]
    times["lastde"] = time.perf_counter() - t0
    for name, reward, options in (
            ("ptrue", "ptrue", PTrueConfig(batch_size=args.batch_size)),
            ("ptrue_brainstorm", "ptrue", PTrueConfig(brainstorm=True, batch_size=args.batch_size)),
            ("likelihood", "likelihood", None), ("self_certainty", "self_certainty", None)):
        t0 = time.perf_counter()
        scores[name] = build_reward(reward, options, ctx).score(flat_rows, texts).scores
        times[name] = time.perf_counter() - t0

    per_prompt = [sum(correct[i * args.samples : (i + 1) * args.samples]) / args.samples for i in range(len(rows))]
    report = {
        "settings": vars(args), "samples": len(texts), "sample_accuracy": statistics.fmean(correct),
        "p_hat": {"mean": statistics.fmean(per_prompt), "all_right": sum(p == 1 for p in per_prompt),
                  "all_wrong": sum(p == 0 for p in per_prompt), "mixed": sum(0 < p < 1 for p in per_prompt)},
        "mean_response_tokens": statistics.fmean(len(s.token_ids) for s in samples),
        "scores": {name: separation(v, correct, ids) for name, v in scores.items()},
        "seconds": {k: round(v, 1) for k, v in times.items()},
    }
    print(json.dumps(report, indent=1))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
        with open(Path(args.output).with_suffix(".samples.jsonl"), "w") as f:
            for r, y, ok, k in zip(flat_rows, texts, correct, range(len(texts)), strict=True):
                f.write(json.dumps({"prompt_id": r["id"], "response": y, "correct": ok,
                                    "scores": {n: v[k] for n, v in scores.items()}}) + "\n")
    return report


if __name__ == "__main__":
    main()
