"""InfAlign on the sandbox: one GRPO round from the same start on the same prompts, three rewards × seeds, and the
best-of-N win rate of each trained model against the start (N = 1, 2, 4, 8) under the verifier and under the
internal reward (the length-normalised likelihood, scored by the start model).

    OMP_NUM_THREADS=1 python scripts/infalign_compare.py                     # 3 rewards × seeds 0, 1, 2
    python scripts/infalign_compare.py --seeds 0 --variants plain,bon --output runs/infalign_small

Variants, each `recipes/sandbox/infalign_bon.yaml` with:
- `plain`: GRPO on the likelihood itself (`train.grpo_rewards=[{source: likelihood}]`, the live policy's, as any
  GRPO reward term of selfalign);
- `identity`: calibration alone, C(likelihood) against the round's 16 reference samples per prompt;
- `bon`: calibrate-and-transform, exp(t·C), t = 10 (`--t`; scripts/infalign_sweep.py: the best t for N = 4 at KL 0.5
  is 10–15).
Runs are resumable (the same command reuses finished runs). Writes <output>/results.json and, with --docs,
docs/results/infalign.md, docs/results/infalign.json and docs/figures/infalign.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "sandbox" / "infalign_bon.yaml"
NS = (1, 2, 4, 8)
SCORERS = {"bon_verifier": "verifier", "bon_likelihood": "likelihood (start model)"}


def overrides(variant: str, seed: int, t: float) -> list[str]:
    common = [f"seed={seed}", "tracking.wandb.enabled=false"]
    if variant == "plain":
        return [*common, "train.grpo_rewards=[{source: likelihood}]", "rewards.infalign=null"]
    if variant == "identity":
        return [*common, "rewards.infalign.kind=identity"]
    return [*common, "rewards.infalign.kind=bon", f"rewards.infalign.t={t}"]


def run_one(variant: str, seed: int, t: float, out: Path) -> dict:
    run_dir = out / f"{variant}_s{seed}"
    summary = run_dir / "summary.json"
    if not (summary.exists() and len(json.loads(summary.read_text())["rounds"]) == 2):
        args = [sys.executable, "-m", "selfalign", "run", str(RECIPE), "--output-dir", str(run_dir), "--no-report"]
        for o in overrides(variant, seed, t):
            args += ["--set", o]
        start = time.time()
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        (out / f"{variant}_s{seed}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise SystemExit(f"{variant} seed {seed} failed: {proc.stderr[-2000:]}")
        print(f"{variant} seed {seed}: {time.time() - start:.0f} s", flush=True)
    rounds = json.loads(summary.read_text())["rounds"]
    ev = rounds[1]["eval"]
    row = {"variant": variant, "seed": seed, "seconds": sum(rounds[1]["seconds"].values()),
           # the verifier's mean over the evaluator's 8 samples per prompt: sampled accuracy at eval.temperature
           "accuracy_sampled": ev["bon_verifier/mean_reward"],
           "accuracy_sampled_start": ev["bon_verifier/baseline_mean_reward"],
           "likelihood_mean": ev["bon_likelihood/mean_reward"],
           "likelihood_mean_start": ev["bon_likelihood/baseline_mean_reward"]}
    for name in SCORERS:
        row[name] = {n: ev[f"{name}/win_rate@{n}"] for n in NS}
    return row


def aggregate(rows: list[dict], variants: list[str]) -> dict:
    """variant → scorer → N → (mean, std over seeds); and the sampled accuracy."""
    agg: dict = {}
    for v in variants:
        mine = [r for r in rows if r["variant"] == v]
        agg[v] = {name: {n: (statistics.fmean(r[name][n] for r in mine),
                             statistics.stdev(r[name][n] for r in mine) if len(mine) > 1 else 0.0) for n in NS}
                  for name in SCORERS}
        acc = [r["accuracy_sampled"] for r in mine]
        agg[v]["accuracy_sampled"] = (statistics.fmean(acc), statistics.stdev(acc) if len(acc) > 1 else 0.0)
        agg[v]["seconds"] = statistics.fmean(r["seconds"] for r in mine)
    return agg


def markdown(agg: dict, rows: list[dict], seeds: list[int], command: str, t: float) -> str:
    lines = ["# InfAlign on the sandbox: best-of-N win rate against the start model", "",
             f"`{command}` — one GRPO round of `recipes/sandbox/infalign_bon.yaml` (256 prompts, G = 8, 16 reference "
             f"samples per prompt, t = {t:g}), seeds {', '.join(map(str, seeds))}; win rate of best-of-N of the "
             "trained model against best-of-N of the start, 8 samples per prompt and side on 256 held-out prompts "
             "(ties ½; mean ± std over seeds).", ""]
    for name, label in SCORERS.items():
        lines += [f"## under the {label}", "", "| reward | " + " | ".join(f"N={n}" for n in NS) + " |",
                  "|---|" + "---:|" * len(NS)]
        for v, a in agg.items():
            lines.append(f"| {v} | " + " | ".join(f"{a[name][n][0]:.3f} ± {a[name][n][1]:.3f}" for n in NS) + " |")
        lines.append("")
    lines += ["## sampled accuracy (held-out, T = 1, the verifier's mean over the 8 samples)", "",
              "| reward | start | after the round |", "|---|---:|---:|"]
    start = statistics.fmean(r["accuracy_sampled_start"] for r in rows)
    for v, a in agg.items():
        lines.append(f"| {v} | {start:.3f} | {a['accuracy_sampled'][0]:.3f} ± {a['accuracy_sampled'][1]:.3f} |")
    lines += ["", "Per run:", "", "| reward | seed | " + " | ".join(f"verifier@{n}" for n in NS) + " | "
              + " | ".join(f"likelihood@{n}" for n in NS) + " | seconds |", "|---|---:|" + "---:|" * (2 * len(NS) + 1)]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seed']} | " + " | ".join(f"{r['bon_verifier'][n]:.3f}" for n in NS)
                     + " | " + " | ".join(f"{r['bon_likelihood'][n]:.3f}" for n in NS) + f" | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(agg: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, (name, label) in zip(axes, SCORERS.items(), strict=True):
        for v, a in agg.items():
            means = [a[name][n][0] for n in NS]
            stds = [a[name][n][1] for n in NS]
            ax.errorbar(NS, means, yerr=stds, marker="o", capsize=3, label=v)
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xticks(NS, [str(n) for n in NS])
        ax.set_xlabel("N (best of N, both sides)")
        ax.set_ylabel("win rate against the start")
        ax.set_title(f"under the {label}")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="plain,identity,bon")
    ap.add_argument("--t", type=float, default=10.0)
    ap.add_argument("--output", default="runs/infalign_compare")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once")
    ap.add_argument("--docs", action="store_true", help="write docs/results/infalign.* and docs/figures/infalign.png")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(v, s) for s in seeds for v in variants]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda vs: run_one(vs[0], vs[1], args.t, out), jobs))
    agg = aggregate(rows, variants)
    command = "OMP_NUM_THREADS=1 python scripts/infalign_compare.py " + " ".join(sys.argv[1:])
    result = {"command": command, "seeds": seeds, "t": args.t, "runs": rows,
              "mean_std": {v: {k: ({str(n): x for n, x in val.items()} if isinstance(val, dict) else val)
                               for k, val in a.items()} for v, a in agg.items()}}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    md = markdown(agg, rows, seeds, command.strip(), args.t)
    (out / "results.md").write_text(md)
    print(md)
    if args.docs:
        (ROOT / "docs/results").mkdir(parents=True, exist_ok=True)
        (ROOT / "docs/results/infalign.json").write_text(json.dumps(result, indent=1))
        (ROOT / "docs/results/infalign.md").write_text(md)
        plot(agg, ROOT / "docs/figures/infalign.png")


if __name__ == "__main__":
    main()
