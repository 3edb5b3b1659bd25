"""The run report as one self-contained HTML file (figures inlined as PNG data, no external resource) and its
markdown twin (the same tables; figures as PNG files beside it)."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

from selfalign.artifacts import atomic_write_text, follow_umask
from selfalign.config import ConfigError
from selfalign.report.data import RunData
from selfalign.report.plots import Figure

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1640px;
padding:0 24px 48px;color:#1f2328;line-height:1.45}
header{border-bottom:1px solid #d0d7de;margin-bottom:12px}h1{font-size:1.6em;margin:18px 0 4px}
h2{font-size:1.25em;margin:28px 0 8px;border-bottom:1px solid #eaeef2;padding-bottom:4px}
.meta{color:#57606a;margin:4px 0 12px}nav a{margin-right:14px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;
text-align:right;vertical-align:top}th{background:#f6f8fa}td.text{text-align:left;font-family:ui-monospace,monospace;
white-space:pre-wrap;word-break:break-word;max-width:520px}
.figures{display:flex;flex-wrap:wrap;gap:8px 20px;align-items:flex-start}
figure{margin:8px 0 14px;display:table}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{display:table-caption;caption-side:bottom;color:#57606a;font-size:13px;margin-top:4px}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}details{margin:8px 0}
summary{cursor:pointer;font-weight:600}input[type=search]{padding:4px 8px;width:320px;margin:6px 0}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px}
"""

FILTER_SCRIPT = """
document.getElementById('filter').addEventListener('input', function (e) {
  var q = e.target.value.toLowerCase();
  document.querySelectorAll('tr.sample').forEach(function (row) {
    row.style.display = row.textContent.toLowerCase().indexOf(q) === -1 ? 'none' : '';
  });
});
"""

# (header, metric key, format): the per-round table, the columns a run has values for
ROUND_COLUMNS = [
    ("acc greedy", "eval/accuracy_greedy", ".3f"),
    ("acc sampled", "eval/accuracy_sampled", ".3f"),
    ("resp tokens", "eval/mean_response_tokens", ".1f"),
    ("pairs", "pairs/kept", "d"),
    ("chosen right", "pairs/chosen_correct", ".2f"),
    ("rejected right", "pairs/rejected_correct", ".2f"),
    ("reward mean", "reward/mean", ".3g"),
    ("reward sd", "reward/std", ".3g"),
    ("consistency", "pairs/consistency", ".3f"),
    ("loss", "train/loss", ".4f"),
    ("rollouts right", "train/rollout_accuracy", ".3f"),
    ("time s", "time/round", ".0f"),
    ("peak RSS GB", "memory/peak_rss_mb", "gb"),
]


def fmt(value, spec: str) -> str:
    if value is None:
        return "–"
    if spec == "gb":
        return f"{value / 1024:.2f}"
    if spec == "d":
        return f"{int(value):,}"
    return format(value, spec)


def eval_headline(run: RunData) -> list[tuple[str, str]]:
    """(header, key) of the eval metrics the per-round table shows: each evaluator's headline numbers (its recipe's
    `eval.evaluators`), or, when the recipe does not load, every eval metric but stderrs and counts."""
    from selfalign.config import EvalConfig, build
    from selfalign.evaluators import configured, headline_columns

    present = {k for m in run.metrics.values() for k in m}
    try:
        instances = configured(build(EvalConfig, (run.recipe or {}).get("eval") or {}, "eval"))
        metrics = {k.split("/", 1)[1]: None for k in present if k.startswith("eval/")}
        return [(key, f"eval/{key}") for _, key in headline_columns(instances, metrics)]
    except ConfigError:
        return [(k.split("/", 1)[1], k) for k in sorted(present) if k.startswith("eval/") and k != "eval/prompts"
                and not k.endswith(("_se", "/prompts", "/records", "/samples", "/unscored")) and "_stderr" not in k]


def round_columns(run: RunData) -> list[tuple[str, str, str]]:
    """ROUND_COLUMNS with values in this run, plus any other eval metric and each reward's pairwise accuracy."""
    present = {k for m in run.metrics.values() for k in m}
    known = {key for _, key, _ in ROUND_COLUMNS}
    extra_eval = [(label, k, ".3f") for label, k in eval_headline(run) if k in present and k not in known]
    accuracy = [(k.split("/", 1)[1].replace("_pairwise_accuracy", " pairwise acc"), k, ".3f") for k in sorted(present)
                if k.startswith("reward/") and k.endswith("_pairwise_accuracy")]
    columns = [c for c in ROUND_COLUMNS if c[1] in present]
    return columns[:2] + extra_eval + columns[2:8] + accuracy + columns[8:]


def table_html(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table_md(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A markdown table; the first `left` columns (names, text) left-aligned, the rest (numbers) right-aligned."""
    lines = ["| " + " | ".join(headers) + " |", "|" + ":---|" * left + "---:|" * (len(headers) - left)]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return html.escape(str(text)).replace("|", "\\|").replace("\n", "<br>")


def round_table(run: RunData) -> tuple[list[str], list[list[str]]]:
    columns = round_columns(run)
    headers = ["round"] + [h for h, _, _ in columns]
    rows = [[str(t)] + [fmt(run.metrics[t].get(key), spec) for _, key, spec in columns] for t in run.round_numbers]
    return headers, rows


def stage_table(run: RunData) -> tuple[list[str], list[list[str]]]:
    stages = list(dict.fromkeys(k.split("/", 1)[1] for m in run.metrics.values() for k in m
                                if k.startswith("time/") and k != "time/round"))
    headers = ["round"] + [f"{s} s" for s in stages] + [f"{s} peak RSS GB" for s in stages]
    rows = [[str(t)] + [fmt(run.metrics[t].get(f"time/{s}"), ".1f") for s in stages]
            + [fmt(run.metrics[t].get(f"memory/{s}_peak_rss_mb"), "gb") for s in stages] for t in run.round_numbers]
    return headers, rows


def _mark(ok) -> tuple[str, str]:
    return ("", "") if ok is None else (("ok", "✓") if ok else ("bad", "✗"))


def _score(v) -> str:
    return "–" if v is None else f"{v:.4g}"


def _samples_html(run: RunData) -> str:
    if not run.samples:
        return "<p>No pairs or rollouts in this run yet.</p>"
    parts = ['<input type="search" id="filter" placeholder="filter the samples by text…" aria-label="filter">']
    for t in sorted(run.samples):
        rows = run.samples[t]
        online = t in run.online
        what = "rollouts" if online else "pairs"
        parts.append(f"<details{' open' if t == min(run.samples) else ''}><summary>Round {t}: {len(rows)} of "
                     f"{run.sample_totals.get(t, len(rows)):,} {what}</summary>")
        if online:
            parts.append("<table><thead><tr><th>prompt</th><th>response</th><th>scores</th><th>right</th>"
                         "<th>step</th></tr></thead><tbody>")
            for r in rows:
                cls, mark = _mark(r["correct"])
                scores = ", ".join(f"{k} {_score(v)}" for k, v in r["scores"].items())
                parts.append(f'<tr class="sample"><td class="text">{html.escape(str(r["prompt"]))}</td>'
                             f'<td class="text">{html.escape(r["response"])}</td><td>{html.escape(scores)}</td>'
                             f'<td class="{cls}">{mark}</td><td>{r.get("step", "")}</td></tr>')
        else:
            extra = any(r.get("label") is not None or r.get("weight") is not None for r in rows)
            parts.append("<table><thead><tr><th>prompt</th><th>chosen</th><th>score</th><th>right</th>"
                         "<th>rejected</th><th>score</th><th>right</th>"
                         + ("<th>label</th><th>weight</th>" if extra else "") + "</tr></thead><tbody>")
            for r in rows:
                (c_cls, c_mark), (r_cls, r_mark) = _mark(r["chosen_correct"]), _mark(r["rejected_correct"])
                parts.append(
                    f'<tr class="sample"><td class="text">{html.escape(r["prompt"])}</td>'
                    f'<td class="text">{html.escape(r["chosen"])}</td><td>{_score(r["chosen_score"])}</td>'
                    f'<td class="{c_cls}">{c_mark}</td><td class="text">{html.escape(r["rejected"])}</td>'
                    f'<td>{_score(r["rejected_score"])}</td><td class="{r_cls}">{r_mark}</td>'
                    + (f'<td>{_score(r.get("label"))}</td><td>{_score(r.get("weight"))}</td>' if extra else "")
                    + "</tr>")
        parts.append("</tbody></table></details>")
    return "\n".join(parts)


def _samples_md(run: RunData) -> str:
    out = []
    for t in sorted(run.samples):
        rows = run.samples[t]
        if t in run.online:
            out += [f"**Round {t}** ({len(rows)} of {run.sample_totals.get(t, len(rows)):,} rollouts)", "",
                    table_md(["prompt", "response", "scores", "right"],
                              [[str(r["prompt"]), r["response"],
                                ", ".join(f"{k} {_score(v)}" for k, v in r["scores"].items()),
                                _mark(r["correct"])[1]] for r in rows], left=4), ""]
        else:
            out += [f"**Round {t}** ({len(rows)} of {run.sample_totals.get(t, len(rows)):,} pairs)", "",
                    table_md(["prompt", "chosen", "score", "right", "rejected", "score", "right"],
                              [[r["prompt"], r["chosen"], _score(r["chosen_score"]), _mark(r["chosen_correct"])[1],
                                r["rejected"], _score(r["rejected_score"]), _mark(r["rejected_correct"])[1]]
                               for r in rows], left=7), ""]
    return "\n".join(out) if out else "No pairs or rollouts in this run yet."


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """A whole HTML page: `sections` are (anchor, heading, inner HTML)."""
    nav = "".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h, _ in sections)
    body = "\n".join(f'<section id="{a}"><h2>{html.escape(h)}</h2>\n{inner}</section>' for a, h, inner in sections)
    script = f"<script>{FILTER_SCRIPT}</script>" if 'id="filter"' in body else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{STYLE}</style></head>\n'
            f'<body><header><h1>{html.escape(title)}</h1><p class="meta">{subtitle}</p><nav>{nav}</nav></header>\n'
            f"{body}\n{script}</body></html>\n")


def figures_html(figures: list[Figure]) -> str:
    return '<div class="figures">' + "\n".join(
        f'<figure id="fig-{stem}"><img alt="{html.escape(title)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption><b>{html.escape(title)}.</b> {html.escape(caption)}'
        f"</figcaption></figure>" for stem, title, caption, png in figures) + "</div>"


def write_figures(figures: list[Figure], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, _, _, png in figures:
        tmp = folder / f".{stem}.png.tmp"
        tmp.write_bytes(png)
        tmp.replace(folder / f"{stem}.png")
    follow_umask(folder)


def write_run_report(run: RunData, figures: list[Figure], out_dir: Path) -> list[Path]:
    """report.html, report.md and report_files/*.png in `out_dir`; returns the paths of the two documents."""
    from selfalign import __version__

    made = time.strftime("%Y-%m-%d %H:%M")
    subtitle = (f"{html.escape(run.method)}<br>{html.escape(str(run.root.resolve()))} · {len(run.rounds)} rounds "
                f"reported · selfalign {__version__} · {made}")
    recipe_text = (run.root / "recipe.yaml").read_text() if (run.root / "recipe.yaml").exists() else ""
    sections = [
        ("rounds", "Per round", table_html(*round_table(run))),
        ("figures", "Figures", figures_html(figures)),
        ("samples", "Chosen vs rejected" if not run.online else "Samples", _samples_html(run)),
        ("stages", "Stages", table_html(*stage_table(run))),
        ("recipe", "Recipe", f"<details><summary>recipe.yaml</summary><pre>{html.escape(recipe_text)}</pre>"
                             "</details>"),
    ]
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    atomic_write_text(html_path, page(f"selfalign run: {run.name}", subtitle, sections))
    write_figures(figures, out_dir / "report_files")
    md = [f"# selfalign run: {run.name}", "", f"{run.method}. `{run.root.resolve()}`, selfalign {__version__}, "
          f"{made}.", "", "## Per round", "", table_md(*round_table(run)), "", "## Figures", ""]
    for stem, title, caption, _ in figures:
        md += [f"![{title}](report_files/{stem}.png)", "", f"*{title}.* {caption}", ""]
    md += ["## Chosen vs rejected" if not run.online else "## Samples", "", _samples_md(run), "", "## Stages", "",
           table_md(*stage_table(run)), "", "## Recipe", "", "```yaml", recipe_text.rstrip(), "```", ""]
    atomic_write_text(md_path, "\n".join(md))
    return [html_path, md_path]
