"""Looking at runs: `selfalign report RUN_DIR` (one run: report.html, self-contained, and report.md) and `selfalign
compare RUN_DIR RUN_DIR ...` (runs side by side: compare.html, compare.md, compare.json).

    from selfalign.report import report_run, compare_runs
    report_run("runs/quickstart")                       # -> [runs/quickstart/report.html, .../report.md]
"""

from __future__ import annotations

from pathlib import Path

from selfalign.report.compare import labels_for, write_comparison
from selfalign.report.data import RunData, load_run
from selfalign.report.plots import run_figures
from selfalign.report.render import write_run_report

__all__ = ["RunData", "compare_runs", "load_run", "report_run"]


def report_run(run_dir: str | Path, output_dir: str | Path | None = None, samples: int = 12) -> list[Path]:
    """Write the report of run `run_dir` (into it, or `output_dir`); returns [report.html, report.md]."""
    run = load_run(run_dir, samples=samples)
    return write_run_report(run, run_figures(run), Path(output_dir or run_dir))


def compare_runs(run_dirs: list[str | Path], output_dir: str | Path, labels: list[str] | None = None) -> list[Path]:
    """Write the comparison of `run_dirs` into `output_dir`; returns [compare.html, compare.md, compare.json]."""
    runs = [load_run(d, per_sample=False) for d in run_dirs]
    return write_comparison(runs, labels_for(runs, labels), Path(output_dir))
