"""Where metrics go: `metrics.jsonl` always, Weights & Biases (offline unless configured), the console.

W&B mode `auto` is online only when WANDB_API_KEY is set, so nothing reaches the network by
default. A resumed run continues the same W&B run (its id is kept in the manifest).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from selfalign.artifacts import RunDir, append_jsonl
from selfalign.config import TrackingConfig

log = logging.getLogger(__name__)

CONSOLE_COLUMNS = [  # (header, metric key, format spec)
    ("round", "round", "d"),
    ("acc_greedy", "eval/accuracy_greedy", ".3f"),
    ("acc_sampled", "eval/accuracy_sampled", ".3f"),
    ("resp_tok", "eval/mean_response_tokens", ".1f"),
    ("pairs", "pairs/kept", "d"),
    ("reward", "reward/mean", ".2f"),
    ("reward_sd", "reward/std", ".2f"),
    ("judge_acc", "reward/judge_pairwise_accuracy", ".3f"),
    ("loss", "train/loss", ".4f"),
    ("time_s", "time/round", ".0f"),
]


def wandb_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


class Tracker:
    def __init__(self, run: RunDir, cfg: TrackingConfig, recipe: dict, is_main: bool = True):
        self.run, self.cfg, self.is_main = run, cfg, is_main
        self.wandb = None
        self._header_printed = False
        if is_main and cfg.wandb.enabled and wandb_mode(cfg.wandb.mode) != "disabled":
            self._init_wandb(recipe)

    def _init_wandb(self, recipe: dict) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")
        if os.environ.get("WANDB_MODE") == "":  # an empty value is invalid for wandb; treat it as unset
            del os.environ["WANDB_MODE"]
        try:
            import wandb
        except ImportError:
            log.warning("wandb is not installed; logging to metrics.jsonl only")
            return
        run_id = self.run.get("wandb_run_id")
        if run_id is None:
            run_id = secrets.token_hex(4)
            self.run.set("wandb_run_id", run_id)
        w = self.cfg.wandb
        self.wandb = wandb.init(
            project=w.project, entity=w.entity, name=w.name or self.run.root.name, tags=w.tags, config=recipe,
            dir=str(self.run.root), mode=wandb_mode(w.mode), id=run_id, resume="allow",
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        self.wandb.define_metric("round")
        self.wandb.define_metric("*", step_metric="round")

    def log(self, round_: int, metrics: dict) -> None:
        if not self.is_main:
            return
        append_jsonl(self.run.metrics_path, {"round": round_, "time": time.time(), **metrics})
        if self.wandb is not None:
            self.wandb.log({"round": round_, **metrics})

    def log_samples(self, round_: int, rows: list[dict]) -> None:
        """A W&B table of sampled responses with their scores (first `log_samples` rows)."""
        if not self.is_main or self.wandb is None or not rows or self.cfg.log_samples == 0:
            return
        import wandb

        rows = rows[: self.cfg.log_samples]
        columns = list(rows[0])
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        self.wandb.log({"round": round_, f"samples/round_{round_}": table})

    def console_row(self, metrics: dict) -> None:
        """One line of the per-round table (header before the first line)."""
        if not self.is_main or not self.cfg.console:
            return
        width = max(len(name) for name, _, _ in CONSOLE_COLUMNS)
        if not self._header_printed:
            print(" ".join(name.rjust(width) for name, _, _ in CONSOLE_COLUMNS), flush=True)
            self._header_printed = True
        cells = [("-" if metrics.get(key) is None else format(metrics[key], spec)).rjust(width)
                 for _, key, spec in CONSOLE_COLUMNS]
        print(" ".join(cells), flush=True)

    def finish(self) -> Path | None:
        if self.wandb is None:
            return None
        path = Path(self.wandb.dir).parent
        self.wandb.finish()
        return path
