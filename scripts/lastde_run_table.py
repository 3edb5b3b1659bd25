"""Per round of a GRPO run that logged Lastde (a `{source: lastde, weight: 0}` reward term): held-out accuracy, the
rollouts' Lastde distribution and its drift from the previous round, the rollouts' length and repetition, and how
well Lastde tells right rollouts from wrong ones (its mean over each, the AUROC over all rollouts, the pairwise
accuracy within a group).

    python scripts/lastde_run_table.py RUN_DIR [--output docs/results/x.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfalign.artifacts import read_json, read_jsonl
from selfalign.evaluators.reward_auroc import auroc, pairwise_accuracy


def round_row(run: Path, entry: dict) -> dict:
    t = entry["round"]
    row = {"round": t, "accuracy_sampled": entry["eval"].get("accuracy_sampled"),
           "accuracy_greedy": entry["eval"].get("accuracy_greedy")}
    path = run / f"round_{t}" / "rollouts.jsonl"
    if t == 0 or not path.exists():
        return row
    train = entry.get("train", {})
    for key in ("rollout_lastde_mean", "rollout_lastde_median", "rollout_lastde_p10", "rollout_lastde_p90",
                "rollout_lastde_unscored", "rollout_lastde_drift_mean", "rollout_lastde_drift_ks",
                "rollout_lastde_last_drift_mean", "rollout_accuracy", "rollout_tokens_mean", "rollout_seq_rep_4",
                "rollout_distinct_4", "reward_self_certainty"):
        row[key] = train.get(key)
    rollouts = [r for r in read_jsonl(path) if r["scores"].get("lastde") is not None and "correct" in r]
    for name, ok in (("right", True), ("wrong", False)):
        values = [r["scores"]["lastde"] for r in rollouts if r["correct"] == ok]
        row[f"lastde_mean_{name}"] = sum(values) / len(values) if values else None
    row["lastde_auroc"] = auroc([r["scores"]["lastde"] for r in rollouts], [r["correct"] for r in rollouts])
    groups: dict = {}
    for r in rollouts:
        groups.setdefault((r["step"], r["prompt_id"]), []).append((r["scores"]["lastde"], r["correct"]))
    row["lastde_pairwise_accuracy"] = pairwise_accuracy(list(groups.values()))
    return row


def markdown(rows: list[dict]) -> str:
    keys = [k for k in rows[-1] if k != "round"]
    lines = ["| round | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for r in rows:
        cells = [f"{r.get(k):.3f}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
        lines.append(f"| {r['round']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run")
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)
    run = Path(args.run)
    rows = [round_row(run, e) for e in read_json(run / "summary.json")["rounds"]]
    text = markdown(rows)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
        Path(args.output).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
