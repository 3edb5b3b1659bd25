"""Compare self-rewarding methods on the sandbox: same base model, same seed SFT, same prompts; R rounds × seeds.

    python scripts/compare_methods.py                                  # SRLM, CREAM, SCIR, oracle × seeds 0,1,2
    python scripts/compare_methods.py --methods srlm,cream --seeds 0 --output runs/compare_small
    python scripts/compare_methods.py --methods srlm,cream,scir --judge-train --output runs/compare_judge

Each method is its shipped recipe `recipes/sandbox/<method>.yaml`, run with `selfalign run`, plus the overrides
that make the runs comparable and measurable:
- every method starts from the same M_1 = seed SFT of the sandbox model on solutions and judgments (SRLM's IFT +
  EFT seed, CREAM's set-up), so the pre-SFT weights M_0 exist as CREAM's and SCIR's fixed anchor;
- `consistency: {label: false}` where the method has no consistency of its own: the Kendall consistency between
  the round's ranking and the previous model's ranking of the same samples, measured, never trained on (not for
  the oracle, whose verifier ranking does not depend on the model);
- the expected-score judge is added as a logged reward where the method has no judge, to measure judge pairwise
  accuracy (P(score(right) > score(wrong)) over a prompt's right/wrong samples).
Runs are resumable: the same command continues where it stopped and reuses finished runs. Writes
<output>/results.json, results.md and results.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED_SFT = ("{enabled: true, data: 'sandbox://arith', judge_data: 'sandbox://arith-judge', max_examples: 1024, "
            "learning_rate: 1.0e-4, batch_size: 32}")
MEASURE_JUDGE = "{mode: expected, template: sandbox, batch_size: 512}"
OVERRIDES = {  # per method, on top of the shared ones
    "srlm": ["consistency={method: kendall, label: false}"],
    "cream": [f"rewards.judge={MEASURE_JUDGE}"],
    "scir": ["consistency={method: kendall, label: false}"],
    "oracle": [f"rewards.judge={MEASURE_JUDGE}"],
}
LABELS = {"srlm": "SRLM", "cream": "CREAM", "scir": "SCIR", "oracle": "oracle (verifier)",
          "self_consistency": "DPO (self-consistency)", "treg": "T-REG", "cdpo": "cDPO"}


def judge_train_sets(method: str) -> list[str]:
    """`--judge-train`: GenCLS++'s judge-training stage after seed SFT (recipes/sandbox/gencls_judge.yaml's
    `gencls` and `rewards.gencls`), and SRLM's judge read as the label it was trained to write (expected mode)."""
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes" / "sandbox" / "gencls_judge.yaml").read_text())
    flow = lambda v: yaml.safe_dump(v, default_flow_style=True, width=10_000).strip()  # noqa: E731
    sets = [f"gencls={flow(recipe['gencls'])}", f"rewards.gencls={flow(recipe['rewards']['gencls'])}"]
    return sets + ([f"rewards.judge={MEASURE_JUDGE}"] if method == "srlm" else [])


def share_start(source: Path, run_dir: Path) -> None:
    """Copy a finished run's round-0 start (seed SFT and judge training: their weights and manifest entries) into a
    new run directory, so that every method of a seed starts from the same trained judge without training it again."""
    import shutil

    manifest = json.loads((source / "manifest.json").read_text())
    stages = {k: v for k, v in manifest["stages"].items() if k in ("round_0/seed_sft", "round_0/judge_train")}
    if run_dir.exists() or len(stages) != 2:
        return
    (run_dir / "round_0").mkdir(parents=True)
    for name in ("model", "judge_model"):
        shutil.copytree(source / "round_0" / name, run_dir / "round_0" / name)
    (run_dir / "manifest.json").write_text(json.dumps({"stages": stages}, indent=1))


def run_one(method: str, seed: int, rounds: int, out: Path, extra: list[str], seed_sft: bool = True,
            judge_train: bool = False) -> dict:
    run_dir = out / method / f"seed{seed}"
    if judge_train and method != "srlm":
        share_start(out / "srlm" / f"seed{seed}", run_dir)
    sets = [f"seed={seed}", f"rounds={rounds}", f"seed_sft={SEED_SFT if seed_sft else '{enabled: false}'}",
            "tracking.wandb.enabled=false", "tracking.console=false", *OVERRIDES.get(method, []),
            *(judge_train_sets(method) if judge_train else []), *extra]
    cmd = [sys.executable, "-m", "selfalign", "run", str(ROOT / "recipes" / "sandbox" / f"{method}.yaml"),
           "--output-dir", str(run_dir)] + [a for s in sets for a in ("--set", s)]
    start = time.time()
    log = run_dir.parent / f"seed{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        sys.exit(f"{method} seed {seed} failed (exit {code}); see {log}")
    print(f"{method:>7} seed {seed}: {time.time() - start:6.1f} s", flush=True)
    return json.loads((run_dir / "summary.json").read_text())


def per_round(summary: dict) -> list[dict]:
    rows = []
    for r in summary["rounds"]:
        rows.append({
            "round": r["round"],
            "accuracy_sampled": r["eval"].get("accuracy_sampled"),
            "accuracy_greedy": r["eval"].get("accuracy_greedy"),
            "response_tokens": r["eval"].get("mean_response_tokens"),
            "consistency": r.get("pairs", {}).get("consistency"),
            "judge_pairwise_accuracy": r.get("rewards", {}).get("judge_pairwise_accuracy"),
            "pairs": r.get("pairs", {}).get("kept"),
            "chosen_correct": r.get("pairs", {}).get("chosen_correct"),
            "rejected_correct": r.get("pairs", {}).get("rejected_correct"),
        })
    return rows


def mean_std(values: list[float | None]) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return statistics.fmean(vals), statistics.pstdev(vals) if len(vals) > 1 else 0.0


def fmt(ms: tuple[float, float] | None, digits: int = 3) -> str:
    return "–" if ms is None else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def aggregate(results: dict[str, list[list[dict]]], rounds: int) -> dict:
    agg: dict = {}
    for method, runs in results.items():
        agg[method] = {}
        for t in range(rounds + 1):
            at_t = [next((r for r in run if r["round"] == t), {}) for run in runs]
            agg[method][t] = {k: mean_std([r.get(k) for r in at_t])
                              for k in ("accuracy_sampled", "accuracy_greedy", "response_tokens", "consistency",
                                        "judge_pairwise_accuracy", "chosen_correct", "rejected_correct")}
    return agg


def markdown(agg: dict, rounds: int, seeds: list[int], command: str) -> str:
    head = "| method | " + " | ".join(f"round {t}" for t in range(rounds + 1)) + " |"
    sep = "|---|" + "---:|" * (rounds + 1)
    out = [f"Sandbox, seeds {', '.join(map(str, seeds))} (mean ± std across seeds). Command: `{command}`", ""]
    tables = (("Held-out accuracy, sampled (T=1)", "accuracy_sampled", 3),
              ("Held-out accuracy, greedy", "accuracy_greedy", 3),
              ("Kendall consistency of the round's ranking with the previous model's (same samples)", "consistency", 3),
              ("Judge pairwise accuracy on the round's samples", "judge_pairwise_accuracy", 3),
              ("Share of DPO pairs whose chosen response is right", "chosen_correct", 3),
              ("Share of DPO pairs whose rejected response is right", "rejected_correct", 3),
              ("Mean response length (tokens, sampled eval)", "response_tokens", 1))
    for title, key, digits in tables:
        out += [f"**{title}**", "", head, sep]
        for method, by_t in agg.items():
            out.append(f"| {LABELS.get(method, method)} | "
                       + " | ".join(fmt(by_t[t][key], digits) for t in range(rounds + 1)) + " |")
        out.append("")
    return "\n".join(out)


def plot(agg: dict, rounds: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (("accuracy_sampled", "held-out accuracy (sampled, T=1)"),
              ("consistency", "Kendall consistency with previous model"),
              ("judge_pairwise_accuracy", "judge pairwise accuracy"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for method, by_t in agg.items():
            ts = [t for t in range(rounds + 1) if by_t[t][key] is not None]
            if not ts:
                continue
            ax.errorbar(ts, [by_t[t][key][0] for t in ts], yerr=[by_t[t][key][1] for t in ts], marker="o",
                        capsize=3, label=LABELS.get(method, method))
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.set_xticks(range(rounds + 1))
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="srlm,cream,scir,oracle")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="runs/compare")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for all")
    parser.add_argument("--no-seed-sft", dest="seed_sft", action="store_false",
                        help="start every method from the sandbox model itself (methods that need M_0 ≠ M_1 fail)")
    parser.add_argument("--judge-train", action="store_true",
                        help="after seed SFT, train the judge (GenCLS++, recipes/sandbox/gencls_judge.yaml) once per "
                             "seed in the SRLM run, and start every method from it")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if args.judge_train and methods[0] != "srlm":
        sys.exit("--judge-train: srlm must be the first method (its run trains the shared start)")
    unknown = [m for m in methods if not (ROOT / "recipes" / "sandbox" / f"{m}.yaml").exists()]
    if unknown:
        sys.exit(f"--methods: no recipe recipes/sandbox/<name>.yaml for {', '.join(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.output)
    results = {m: [per_round(run_one(m, s, args.rounds, out, args.set, args.seed_sft, args.judge_train))
                   for s in seeds] for m in methods}
    agg = aggregate(results, args.rounds)
    command = "python scripts/compare_methods.py " + " ".join(sys.argv[1:])
    (out / "results.json").write_text(json.dumps({"seeds": seeds, "rounds": args.rounds, "runs": results,
                                                  "aggregate": agg}, indent=1))
    (out / "results.md").write_text(markdown(agg, args.rounds, seeds, command.strip()))
    plot(agg, args.rounds, out / "results.png")
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
