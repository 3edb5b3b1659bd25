"""The P(IK) probe (issue 14 §3): logistic regression of p̂ on the reference model's last prompt-token hidden state,
fitted on prompts already sampled (as a round would fit it on earlier rounds' p̂), then used on new prompts before
any sample of them is drawn. Reports, on the new prompts: the AUROC of the probe's P(IK) for each sample being right
(Kadavath et al.'s evaluation), its AUROC for "the group is mixed, 0 < p̂ < 1" (what the GRPO filter keeps) and for
"p̂ > 0", the Brier score against p̂ and the same for the constant mean-p̂ predictor.

    OMP_NUM_THREADS=1 python scripts/pik_probe.py --model sandbox --train-prompts 512 --test-prompts 256 \
        --samples 4 --output docs/results/pik_probe_sandbox.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from selfalign import models
from selfalign.data.prompts import load_prompts, render_prompt
from selfalign.evaluators.reward_auroc import auroc
from selfalign.generation import generate
from selfalign.methods.pik import fit_probe, last_prompt_hidden, probe_predict
from selfalign.rewards.verifier import is_correct


def p_hats(model, tokenizer, rows, args, seed) -> tuple[list[float], list[list[bool]]]:
    torch.manual_seed(seed)
    groups = generate(model, tokenizer, [r["prompt_text"] for r in rows], num_samples=args.samples,
                      temperature=args.temperature, top_p=1.0, max_new_tokens=args.max_new_tokens,
                      batch_size=args.batch_size, with_logprobs=False)
    correct = [[is_correct(r, s.text) for s in g] for r, g in zip(rows, groups, strict=True)]
    return [sum(c) / len(c) for c in correct], correct


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="sandbox")
    ap.add_argument("--prompts", default="sandbox://arith?terms=3&digits=2&seed=0")
    ap.add_argument("--train-prompts", type=int, default=512)
    ap.add_argument("--test-prompts", type=int, default=256)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--l2", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)

    model, tokenizer = models.load_for_eval(args.model)
    sandbox = args.prompts.startswith("sandbox://")
    rows = load_prompts(args.prompts, split="train", sandbox_split="train",
                        limit=args.train_prompts + (0 if sandbox else args.test_prompts)).rows
    if sandbox:
        train = rows
        test = load_prompts(args.prompts, split="eval", sandbox_split="eval", limit=args.test_prompts).rows
    else:
        train, test = rows[: args.train_prompts], rows[args.train_prompts :]
    for r in (*train, *test):
        r["prompt_text"] = render_prompt(tokenizer, r)
    y_train, _ = p_hats(model, tokenizer, train, args, args.seed)
    y_test, correct = p_hats(model, tokenizer, test, args, args.seed + 1)
    x_train = last_prompt_hidden(model, tokenizer, [r["prompt_text"] for r in train], args.batch_size)
    x_test = last_prompt_hidden(model, tokenizer, [r["prompt_text"] for r in test], args.batch_size)
    w, b, mean, std = fit_probe(x_train, torch.tensor(y_train), l2=args.l2)
    pred = probe_predict(x_test, w, b, mean, std).tolist()
    fit = probe_predict(x_train, w, b, mean, std).tolist()
    base = statistics.fmean(y_train)
    report = {
        "settings": vars(args), "features": x_train.shape[1],
        "p_hat_mean": {"train": base, "test": statistics.fmean(y_test)},
        "auroc_sample_right": auroc([p for p, c in zip(pred, correct, strict=True) for _ in c],
                                    [ok for c in correct for ok in c]),
        "auroc_mixed": auroc(pred, [0 < y < 1 for y in y_test]),
        "auroc_any_right": auroc(pred, [y > 0 for y in y_test]),
        "auroc_sample_right_train": auroc(fit, [y >= 0.5 for y in y_train]),
        "brier": statistics.fmean((p - y) ** 2 for p, y in zip(pred, y_test, strict=True)),
        "brier_constant": statistics.fmean((base - y) ** 2 for y in y_test),
        "pearson": float(torch.corrcoef(torch.tensor([pred, y_test]))[0, 1]),
    }
    print(json.dumps(report, indent=1))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
