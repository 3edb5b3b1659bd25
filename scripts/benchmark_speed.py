"""Speed of selfalign's sampling and scoring against the libraries', on the same model, prompts and settings.

    .venv/bin/python scripts/benchmark_speed.py --model sandbox
    .venv/bin/python scripts/benchmark_speed.py --model smollm2-135m-instruct --num-prompts 32 --samples 4 \\
        --max-new-tokens 64 --batch-size 64

Measures, in one run:
- generation: selfalign's `generation.generate` (left padding, length-sorted batches, EOS / stop handling and the
  per-token log-probs it keeps) against plain `model.generate` on the same batches and settings, in generated tokens
  per second, and their time ratio (target: selfalign within 1.1× of plain generate);
- scoring: the peak memory one teacher-forced scoring batch adds (`scoring.token_logprobs`), against the
  B·T·V float32 bound a full (batch, length, vocab) log-softmax would take, each measured in a fresh process
  (the process's resident memory sampled every millisecond while the batch runs, peak minus the resident memory
  before it: the high-water mark `ru_maxrss` would hide a batch that stays below the model load's own peak);
- judging: responses per second of the judge in `expected` mode (one forward pass) and in `generate` mode (one
  written judgment each) (target: expected ≥ 20× generate);
- with `--run-dir RUN_DIR` (a finished run of the same model, e.g. the quickstart's), each stage's share of a
  round's time, read from its manifest.json.
The generation timings alternate the two sides over `--repeats` runs and report the median, so a busy machine
slows both alike. Writes OUTPUT.json and OUTPUT.md (default docs/results/speed_<model>).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

# selfalign's modules are imported where they are used: scripts/benchmark_generation_gpu.py imports
# plain_generate from here on a machine with only torch and transformers.


def plain_generate(model, tok, prompts, samples, temperature, max_new_tokens, batch_size) -> int:
    """model.generate on the same length-sorted, left-padded batches as selfalign's; returns the tokens generated
    (up to each sequence's EOS)."""
    from selfalign.scoring import left_pad

    encoded = [tok(p)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    per_call, n = max(1, batch_size // samples), 0
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    device = next(model.parameters()).device
    for start in range(0, len(order), per_call):
        ids, mask = (x.to(device) for x in left_pad([encoded[i] for i in order[start : start + per_call]], pad))
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=True,
                                 temperature=temperature, top_p=1.0, top_k=0, num_return_sequences=samples,
                                 pad_token_id=pad, eos_token_id=tok.eos_token_id)
        for row in out[:, ids.shape[1]:].tolist():
            n += row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
    return n


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def scoring_peak(args, full: bool) -> dict:
    """Peak RSS added by one scoring batch, measured in a fresh process (`--child`)."""
    cmd = [sys.executable, __file__, "--child", "full" if full else "chunked", "--model", args.model,
           "--prompts", args.prompts, "--num-prompts", str(args.score_batch), "--max-new-tokens",
           str(args.max_new_tokens)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child(args) -> None:
    """One scoring batch of `--num-prompts` responses of `--max-new-tokens` tokens (random token ids) after a prompt."""
    import gc

    import psutil

    from selfalign import models
    from selfalign.config import ModelConfig
    from selfalign.data.prompts import load_prompts, render_prompt

    cfg = ModelConfig(path=args.model)
    path = models.base_model_path(cfg)
    model, tok = models.load_model(path, cfg).eval(), models.load_tokenizer(path, cfg)
    rows = load_prompts(args.prompts, limit=args.num_prompts, sandbox_split="eval").rows
    g = torch.Generator().manual_seed(0)
    pairs = [(tok(render_prompt(tok, r))["input_ids"],
              torch.randint(5, len(tok) - 1, (args.max_new_tokens,), generator=g).tolist()) for r in rows]
    gc.collect()
    proc, peak, done = psutil.Process(), [0], threading.Event()
    before = proc.memory_info().rss

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with torch.no_grad():
        if args.child == "full":  # what selfalign did before: the whole (batch, length, vocab) log-softmax
            from selfalign.scoring import right_pad

            ids, mask = right_pad([x + y for x, y in pairs], tok.pad_token_id or 0)
            logps = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1], -1)
            logps.gather(-1, ids[:, 1:, None])
        else:
            from selfalign.scoring import token_logprobs

            token_logprobs(model, pairs, batch_size=len(pairs), pad_token_id=tok.pad_token_id or 0)
    done.set()
    sampler.join()
    width = max(len(x) + len(y) for x, y in pairs)
    print(json.dumps({"added_mb": round(max(0, peak[0] - before) / 2**20, 1), "batch": len(pairs), "length": width,
                      "vocab": len(tok), "btv_float32_mb": round(len(pairs) * width * len(tok) * 4 / 2**20, 1)}))


def stage_shares(run_dir: Path) -> dict:
    """Each stage's seconds and share of the round's total, per round t >= 1 of a finished run (manifest.json)."""
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    rounds: dict[str, dict[str, float]] = {}
    for key, info in stages.items():
        round_name, stage = key.split("/", 1)
        if round_name != "round_0":
            rounds.setdefault(round_name, {})[stage] = info["seconds"]
    return {r: {"seconds": {k: round(v, 1) for k, v in by.items()},
                "share": {k: round(v / sum(by.values()), 3) for k, v in by.items()}}
            for r, by in sorted(rounds.items())}


def main() -> None:
    from selfalign import models
    from selfalign.config import ModelConfig
    from selfalign.data.prompts import load_prompts, render_prompt
    from selfalign.generation import generate
    from selfalign.rewards.judge import JudgeConfig, JudgeReward

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sandbox")
    p.add_argument("--prompts", default=None, help="default: the sandbox eval split, or the shipped GSM8K slice")
    p.add_argument("--num-prompts", type=int, default=256)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--score-batch", type=int, default=16, help="responses in the scoring batch")
    p.add_argument("--judge-responses", type=int, default=32)
    p.add_argument("--run-dir", type=Path, default=None, help="a finished run: report each stage's share of a round")
    p.add_argument("--output", default=None)
    p.add_argument("--child", choices=["full", "chunked"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.prompts is None:
        args.prompts = ("sandbox://arith?terms=3&digits=2&seed=0" if args.model == "sandbox"
                        else "recipes/data/gsm8k/train_512.jsonl")
    if args.child:
        child(args)
        return
    cfg = ModelConfig(path=args.model)
    path = models.base_model_path(cfg)
    model, tok = models.load_model(path, cfg).eval(), models.load_tokenizer(path, cfg)
    rows = load_prompts(args.prompts, limit=args.num_prompts, sandbox_split="eval").rows
    prompts = [render_prompt(tok, r) for r in rows]
    kw = dict(num_samples=args.samples, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
              batch_size=args.batch_size)
    generate(model, tok, prompts[:4], **kw)  # warm-up
    ours, plain = [], []
    for _ in range(args.repeats):
        out, s = timed(lambda: generate(model, tok, prompts, **kw))
        ours.append((sum(len(x.token_ids) for g in out for x in g), s))
        n, s = timed(lambda: plain_generate(model, tok, prompts, args.samples, args.temperature, args.max_new_tokens,
                                            args.batch_size))
        plain.append((n, s))
    med = {name: statistics.median(t for _, t in runs) for name, runs in (("ours", ours), ("plain", plain))}
    report = {"model": args.model, "prompts": len(prompts), "samples": args.samples,
              "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
              "generation": {"selfalign_seconds": round(med["ours"], 2), "plain_seconds": round(med["plain"], 2),
                             "selfalign_tokens_per_s": round(statistics.median(n / t for n, t in ours), 1),
                             "plain_tokens_per_s": round(statistics.median(n / t for n, t in plain), 1),
                             "ratio": round(med["ours"] / med["plain"], 3)}}
    report["scoring"] = {"full_log_softmax": scoring_peak(args, True), "selfalign": scoring_peak(args, False)}
    template = "sandbox" if args.model == "sandbox" else "srlm"
    jrows = [{**r, "prompt_text": q} for r, q in zip(rows, prompts, strict=True)][: args.judge_responses]
    responses = [x.text for g in generate(model, tok, [r["prompt_text"] for r in jrows], num_samples=1,
                                          temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                          batch_size=args.batch_size) for x in g]
    judge = {}
    for mode in ("expected", "generate"):
        rm = JudgeReward(model, tok, JudgeConfig(mode=mode, template=template, num_judgments=1, temperature=0.0,
                                                 max_new_tokens=128 if template == "srlm" else 64,
                                                 batch_size=args.batch_size))
        _, s = timed(lambda rm=rm: rm.score(jrows, responses))
        judge[f"{mode}_responses_per_s"] = round(len(jrows) / s, 2)
    judge["ratio"] = round(judge["expected_responses_per_s"] / judge["generate_responses_per_s"], 1)
    report["judge"] = judge
    if args.run_dir is not None:
        report["stage_shares"] = {"run_dir": str(args.run_dir), "rounds": stage_shares(args.run_dir)}
    out = Path(args.output or f"docs/results/speed_{args.model}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    g, sc = report["generation"], report["scoring"]
    out.with_suffix(".md").write_text("\n".join([
        f"# Speed: {args.model}", "", f"`{' '.join(sys.argv)}`", "",
        "| measure | selfalign | library / bound | ratio |", "|---|---|---|---|",
        f"| generation, tokens/s ({len(prompts)} prompts × {args.samples}, ≤ {args.max_new_tokens} tokens) | "
        f"{g['selfalign_tokens_per_s']} | {g['plain_tokens_per_s']} (plain `generate`) | {g['ratio']}× the time |",
        f"| scoring batch, peak memory added (MB; {sc['selfalign']['batch']} × {sc['selfalign']['length']} tokens, "
        f"vocab {sc['selfalign']['vocab']}) | {sc['selfalign']['added_mb']} | {sc['full_log_softmax']['added_mb']} "
        f"(full log-softmax; B·T·V float32 = {sc['selfalign']['btv_float32_mb']}) | |",
        f"| judge, responses/s | expected {judge['expected_responses_per_s']} | written "
        f"{judge['generate_responses_per_s']} | {judge['ratio']}× |", "", *shares_table(report)]))
    print(json.dumps(report, indent=2))


def shares_table(report: dict) -> list[str]:
    if "stage_shares" not in report:
        return []
    rounds = report["stage_shares"]["rounds"]
    stages = list(dict.fromkeys(k for r in rounds.values() for k in r["seconds"]))
    lines = [f"Stage times of `{report['stage_shares']['run_dir']}` (seconds, share of the round):", "",
             "| round | " + " | ".join(stages) + " |", "|---|" + "---:|" * len(stages)]
    for name, r in rounds.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['seconds'].get(k, 0)} ({100 * r['share'].get(k, 0):.0f}%)"
                                               for k in stages) + " |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
