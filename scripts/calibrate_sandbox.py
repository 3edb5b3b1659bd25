"""Build a sandbox model with a given config and measure what the calibration targets.

    python scripts/calibrate_sandbox.py                      # default config
    python scripts/calibrate_sandbox.py --steps 900 --error-rate 0.3
    python scripts/calibrate_sandbox.py --eval-only PATH     # measure an existing model

Prints one JSON object: the config, build seconds, and on held-out eval problems

* ``accuracy_greedy`` (n_eval prompts), ``accuracy_sampled`` (T=1, top_p=1, one sample on each of
  the n_eval prompts) and ``accuracy_sampled_pool`` (all judge_prompts x samples samples);
* judge metrics on the model's own T=1 samples (judge_prompts prompts x samples samples): for every
  (right, wrong) pair of samples of one prompt, pairwise accuracy P(score(right) > score(wrong))
  with ties counted half (``*_pairwise``) and as failures (``*_pairwise_strict``), for
  ``written_greedy`` (JUDGE_TEMPLATE, greedy written judgment, parsed score),
  ``written_t07`` (the same, sampled at T=0.7), ``written_greedy_expected`` (the greedy written
  check followed by ``|Score:`` and the expected score sum_k k p(k)), and ``expected``
  (JUDGE_EXPECTED_TEMPLATE, sum_k k p(k) over tokens "1".."5" at the next position);
  plus how often the judge's verdict (score 5) agrees with the verifier.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from selfalign import sandbox
from selfalign.sandbox.config import SandboxModelConfig
from selfalign.sandbox.model import build_sandbox_model

logger = logging.getLogger("calibrate_sandbox")


@torch.no_grad()
def generate(
    model, tok, prompts: list[str], max_new_tokens: int, temperature: float = 0.0, batch_size: int = 256, seed: int = 0
) -> list[str]:
    """Batched generation with left padding; greedy if temperature == 0; returns the new text."""
    tok.padding_side = "left"
    outs: list[str] = []
    torch.manual_seed(seed)
    for i in range(0, len(prompts), batch_size):
        enc = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True)
        kw = (
            dict(do_sample=False)
            if temperature == 0
            else dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
        )
        gen = model.generate(
            **enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kw
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        outs.extend(tok.batch_decode(new, skip_special_tokens=True))
    return outs


@torch.no_grad()
def expected_scores(model, tok, texts: list[str], batch_size: int = 512) -> list[float]:
    """sum_k k p(k) over the tokens "1".."5" (renormalised) at the position after each text."""
    tok.padding_side = "left"
    digit_ids = [tok.convert_tokens_to_ids(str(k)) for k in range(1, 6)]
    ks = torch.arange(1, 6, dtype=torch.float32)
    res: list[float] = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i : i + batch_size], return_tensors="pt", padding=True)
        logits = model(**enc).logits[:, -1, :]
        p = torch.softmax(logits[:, digit_ids].float(), dim=-1)
        res.extend((p * ks).sum(-1).tolist())
    return res


def pairwise(groups: list[list[tuple[bool, float | None]]]) -> tuple[float, float, int]:
    """(ties-half accuracy, strict accuracy, number of pairs) over all (right, wrong) pairs of each
    group; a missing score (None) counts as lower than any score."""
    won = strict = n = 0.0
    for g in groups:
        right = [s for ok, s in g if ok]
        wrong = [s for ok, s in g if not ok]
        for r in right:
            for w in wrong:
                rv = -1.0 if r is None else r
                wv = -1.0 if w is None else w
                n += 1
                if rv > wv:
                    won += 1
                    strict += 1
                elif rv == wv:
                    won += 0.5
    if n == 0:
        return float("nan"), float("nan"), 0
    return won / n, strict / n, int(n)


def evaluate(
    path: str | Path,
    terms: int,
    digits: int,
    seed: int = 0,
    n_eval: int = 512,
    judge_prompts: int = 256,
    samples: int = 8,
) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(path)
    model.eval()
    tok = AutoTokenizer.from_pretrained(path)
    task = sandbox.ArithTask(terms=terms, digits=digits)
    rows = task.problems(n_eval, "eval")
    prompts = [r["prompt"] for r in rows]
    sol_len = max(len(sandbox.solve(p)) for p in prompts) + 8

    greedy = generate(model, tok, prompts, sol_len)
    acc_greedy = sum(sandbox.verify(p, r) for p, r in zip(prompts, greedy, strict=True)) / len(prompts)
    sampled1 = generate(model, tok, prompts, sol_len, temperature=1.0, seed=seed + 1)
    acc_sampled = sum(sandbox.verify(p, r) for p, r in zip(prompts, sampled1, strict=True)) / len(prompts)

    jp = prompts[:judge_prompts]
    pool_prompts = [p for p in jp for _ in range(samples)]
    pool = generate(model, tok, pool_prompts, sol_len, temperature=1.0, seed=seed + 2)
    ok = [sandbox.verify(p, r) for p, r in zip(pool_prompts, pool, strict=True)]
    exact = [sandbox.first_error_position(p, r) is None for p, r in zip(pool_prompts, pool, strict=True)]
    well_formed = [sandbox.parse_answer(r) is not None for r in pool]

    jtexts = [sandbox.JUDGE_TEMPLATE.format(prompt=p, response=r) for p, r in zip(pool_prompts, pool, strict=True)]
    jlen = max(len(sandbox.judgment(p, r)) for p, r in zip(pool_prompts, pool, strict=True)) + 8
    jg = generate(model, tok, jtexts, jlen)
    jt = generate(model, tok, jtexts, jlen, temperature=0.7, seed=seed + 3)
    s_greedy = [sandbox.score_from_judgment(j) for j in jg]
    s_t07 = [sandbox.score_from_judgment(j) for j in jt]
    # expected score after the greedy written check
    checks = [j.split("|Score")[0] for j in jg]
    s_gexp = expected_scores(model, tok, [t + c + "|Score:" for t, c in zip(jtexts, checks, strict=True)])
    etexts = [
        sandbox.JUDGE_EXPECTED_TEMPLATE.format(prompt=p, response=r) for p, r in zip(pool_prompts, pool, strict=True)
    ]
    s_exp = expected_scores(model, tok, etexts)

    def groups(scores):
        return [
            list(zip(ok[i : i + samples], scores[i : i + samples], strict=True)) for i in range(0, len(ok), samples)
        ]

    out = {
        "accuracy_greedy": acc_greedy,
        "accuracy_sampled": acc_sampled,
        "accuracy_sampled_pool": sum(ok) / len(ok),
        "exact_solution_sampled_pool": sum(exact) / len(exact),
        "well_formed_sampled_pool": sum(well_formed) / len(well_formed),
        "n_eval": n_eval,
        "judge_prompts": judge_prompts,
        "samples": samples,
        "prompts_with_mixed_samples": sum(0 < sum(ok[i : i + samples]) < samples for i in range(0, len(ok), samples)),
    }
    for name, sc in [
        ("written_greedy", s_greedy),
        ("written_t07", s_t07),
        ("written_greedy_expected", s_gexp),
        ("expected", s_exp),
    ]:
        acc, strict, n = pairwise(groups(sc))
        out[f"judge_{name}_pairwise"] = acc
        out[f"judge_{name}_pairwise_strict"] = strict
        out["judge_pairs"] = n
    true_scores = [sandbox.score(p, r) for p, r in zip(pool_prompts, pool, strict=True)]
    out["judge_written_greedy_verdict_accuracy"] = sum((s == 5) == o for s, o in zip(s_greedy, ok, strict=True)) / len(
        ok
    )
    out["judge_written_greedy_score_exact"] = sum(s == t for s, t in zip(s_greedy, true_scores, strict=True)) / len(ok)
    out["judge_written_greedy_parse_rate"] = sum(s is not None for s in s_greedy) / len(ok)
    out["judge_written_greedy_check_exact"] = sum(
        j == sandbox.judgment(p, r) for j, p, r in zip(jg, pool_prompts, pool, strict=True)
    ) / len(ok)
    # the judge on wrong samples only: how often it flags them (score < 5)
    wrong_idx = [i for i, o in enumerate(ok) if not o]
    out["judge_written_greedy_flags_wrong"] = (
        sum((s_greedy[i] or 0) < 5 for i in wrong_idx) / len(wrong_idx) if wrong_idx else float("nan")
    )
    right_idx = [i for i, o in enumerate(ok) if o]
    out["judge_written_greedy_passes_right"] = (
        sum(s_greedy[i] == 5 for i in right_idx) / len(right_idx) if right_idx else float("nan")
    )
    out["eval_seconds"] = round(time.perf_counter() - t0, 1)
    out["examples"] = [
        {"prompt": pool_prompts[i], "response": pool[i], "judgment": jg[i], "correct": ok[i]}
        for i in random.Random(0).sample(range(len(pool)), 6)
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(SandboxModelConfig):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None)
    ap.add_argument("--out", default=None, help="build into this dir (default: a temp dir, deleted)")
    ap.add_argument("--eval-only", default=None, help="measure an existing model dir instead of building")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-eval", type=int, default=512)
    ap.add_argument("--judge-prompts", type=int, default=256)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--no-examples", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(SandboxModelConfig)
        if getattr(args, f.name) is not None
    }
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="sandbox-calib-") as tmp:
        if args.eval_only:
            path = Path(args.eval_only)
            meta = json.loads((path / "sandbox.json").read_text())
            cfg = SandboxModelConfig.from_dict(meta["config"])
            result["build_seconds"] = meta.get("build_seconds")
        else:
            cfg = dataclasses.replace(SandboxModelConfig(), **overrides)
            path = Path(args.out) if args.out else Path(tmp) / "model"
            build_sandbox_model(cfg, path, num_threads=args.threads)
            meta = json.loads((path / "sandbox.json").read_text())
            result["build_seconds"] = meta["build_seconds"]
        result["final_loss"] = meta.get("final_loss")
        result["params"] = meta.get("params")
        result["config"] = cfg.to_dict()
        result.update(
            evaluate(
                path,
                cfg.terms,
                cfg.digits,
                seed=cfg.seed,
                n_eval=args.n_eval,
                judge_prompts=args.judge_prompts,
                samples=args.samples,
            )
        )
    if args.no_examples:
        result.pop("examples", None)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
