"""`selfalign compare RUN_DIR RUN_DIR ...`: the report's per-round metrics across runs, in one table per metric and
one set of plots. Runs given the same `--label` (seeds of one method) are one line: mean ± std across them, as
scripts/compare_methods.py reports its own runs."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from selfalign.artifacts import atomic_write_text
from selfalign.config import ConfigError
from selfalign.report.data import RunData
from selfalign.report.plots import Figure, axes_row, to_png
from selfalign.report.render import figures_html, page, table_html, table_md, write_figures

# (metric key, title, digits); eval metrics other than these are added after the first two
METRICS = [
    ("eval/accuracy_sampled", "held-out accuracy, sampled", 3),
    ("eval/accuracy_greedy", "held-out accuracy, greedy", 3),
    ("eval/mean_response_tokens", "mean eval response length (tokens)", 1),
    ("reward/ranking_pairwise_accuracy", "pairwise accuracy of the ranking reward (pairs.reward)", 3),
    ("reward/judge_pairwise_accuracy", "judge pairwise accuracy", 3),
    ("pairs/consistency", "ranking consistency with the previous model", 3),
    ("pairs/kept", "pairs kept", 0),
    ("pairs/chosen_correct", "share of pairs whose chosen response is right", 3),
    ("pairs/rejected_correct", "share of pairs whose rejected response is right", 3),
    ("train/loss", "mean training loss", 4),
    ("train/rollout_accuracy", "GRPO rollouts right", 3),
    ("time/round", "round time (s)", 0),
    ("memory/peak_rss_mb", "peak RSS (MB, largest process)", 0),
]


def labels_for(runs: list[RunData], labels: list[str] | None) -> list[str]:
    """The given labels, or each run's directory name (with its parent's when two runs share a name)."""
    if labels:
        if len(labels) != len(runs):
            raise ConfigError(f"--label: {len(labels)} labels for {len(runs)} runs; give one per run, in order")
        return labels
    names = [r.root.resolve().name for r in runs]
    return [f"{r.root.resolve().parent.name}/{n}" if names.count(n) > 1 else n for r, n in zip(runs, names,
                                                                                              strict=True)]


def _with_ranking_accuracy(run: RunData) -> None:
    ranking = (run.recipe.get("pairs") or {}).get("reward")
    for m in run.metrics.values():
        if ranking and f"reward/{ranking}_pairwise_accuracy" in m:
            m["reward/ranking_pairwise_accuracy"] = m[f"reward/{ranking}_pairwise_accuracy"]


def aggregate(runs: list[RunData], labels: list[str]) -> dict:
    """label → {"runs": [...], "method": str, "metrics": {key: {round: (mean, std, n)}}}."""
    for run in runs:
        _with_ranking_accuracy(run)
    groups: dict[str, list[RunData]] = {}
    for run, label in zip(runs, labels, strict=True):
        groups.setdefault(label, []).append(run)
    out: dict = {}
    for label, members in groups.items():
        keys = {k for r in members for m in r.metrics.values() for k in m}
        rounds = sorted({t for r in members for t in r.round_numbers})
        metrics: dict = {}
        for key in keys:
            by_t = {}
            for t in rounds:
                values = [r.metrics[t][key] for r in members if t in r.metrics and r.metrics[t].get(key) is not None]
                if values:
                    by_t[t] = (statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0,
                               len(values))
            if by_t:
                metrics[key] = by_t
        out[label] = {"runs": [str(r.root) for r in members], "method": members[0].method, "metrics": metrics}
    return out


def metric_list(agg: dict) -> list[tuple[str, str, int]]:
    present = {k for g in agg.values() for k in g["metrics"]}
    known = [m for m in METRICS if m[0] in present]
    extra = [(k, k.split("/", 1)[1], 3) for k in sorted(present)  # every evaluator's metric but stderrs, counts
             if k.startswith("eval/") and k not in {m[0] for m in METRICS} and k != "eval/prompts"
             and not k.endswith(("_se", "/prompts", "/records", "/samples", "/unscored")) and "_stderr" not in k]
    return known[:2] + extra + known[2:]


def _cell(v: tuple[float, float, int] | None, digits: int) -> str:
    if v is None:
        return "–"
    mean, std, n = v
    return f"{mean:,.{digits}f}" + (f" ± {std:,.{digits}f}" if n > 1 else "")


def tables(agg: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, headers, rows) per metric: one row per label, one column per round."""
    rounds = sorted({t for g in agg.values() for by_t in g["metrics"].values() for t in by_t})
    out = []
    for key, title, digits in metric_list(agg):
        rows = [[label] + [_cell(g["metrics"].get(key, {}).get(t), digits) for t in rounds]
                for label, g in agg.items()]
        out.append((title, ["run"] + [f"round {t}" for t in rounds], rows))
    return out


def overview(agg: dict) -> tuple[list[str], list[list[str]]]:
    """One row per label: its runs, method, last round, its final sampled / greedy accuracy, total time."""
    headers = ["run", "runs", "method", "last round", "acc sampled", "acc greedy", "total time s"]
    rows = []
    for label, g in agg.items():
        m = g["metrics"]
        last = max((t for by_t in m.values() for t in by_t), default=0)
        total = sum(v[0] for v in m.get("time/round", {}).values())
        rows.append([label, str(len(g["runs"])), g["method"], str(last),
                     _cell(m.get("eval/accuracy_sampled", {}).get(last), 3),
                     _cell(m.get("eval/accuracy_greedy", {}).get(last), 3), f"{total:,.0f}"])
    return headers, rows


def figures(agg: dict) -> list[Figure]:
    metrics = metric_list(agg)
    out = []
    for start in range(0, len(metrics), 4):
        chunk = metrics[start:start + 4]
        fig, axes = axes_row(len(chunk), width=4.3)
        for ax, (key, title, _) in zip(axes, chunk, strict=True):
            for i, (label, g) in enumerate(agg.items()):
                by_t = g["metrics"].get(key, {})
                ts = sorted(by_t)
                if ts:
                    ax.errorbar(ts, [by_t[t][0] for t in ts], yerr=[by_t[t][1] for t in ts], marker="o", capsize=3,
                                color=f"C{i % 10}", label=label)
            ax.set_title(title if len(title) < 48 else title[:46] + "…")
            ax.set_xlabel("round")
        axes[0].legend()
        out.append((f"compare_{start // 4 + 1}", f"Per round, across runs ({start // 4 + 1})",
                    "One line per run (mean ± std where several runs share a label).", to_png(fig)))
    return out


def write_comparison(runs: list[RunData], labels: list[str], out_dir: Path) -> list[Path]:
    """compare.html, compare.md, compare.json and compare_files/*.png in `out_dir`."""
    from selfalign import __version__

    agg = aggregate(runs, labels)
    figs = figures(agg)
    per_metric = tables(agg)
    made = time.strftime("%Y-%m-%d %H:%M")
    subtitle = f"{len(runs)} runs · selfalign {__version__} · {made}"
    sections = [("overview", "Runs", table_html(*overview(agg))),
                ("figures", "Figures", figures_html(figs)),
                ("tables", "Per metric", "\n".join(f"<h3>{t}</h3>{table_html(h, r)}" for t, h, r in per_metric))]
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path, json_path = out_dir / "compare.html", out_dir / "compare.md", out_dir / "compare.json"
    atomic_write_text(html_path, page("selfalign: run comparison", subtitle, sections))
    write_figures(figs, out_dir / "compare_files")
    md = ["# selfalign: run comparison", "", subtitle, "", "## Runs", "", table_md(*overview(agg), left=3), "",
          "## Figures", ""]
    md += [f"![{title}](compare_files/{stem}.png)\n" for stem, title, _, _ in figs]
    md += ["## Per metric", ""]
    for title, headers, rows in per_metric:
        md += [f"**{title}**", "", table_md(headers, rows), ""]
    atomic_write_text(md_path, "\n".join(md))
    atomic_write_text(json_path, json.dumps({label: {**g, "metrics": {k: {str(t): list(v) for t, v in by_t.items()}
                                                                        for k, by_t in g["metrics"].items()}}
                                             for label, g in agg.items()}, indent=1) + "\n")
    return [html_path, md_path, json_path]
