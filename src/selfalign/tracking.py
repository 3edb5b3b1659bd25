"""Where metrics go: `metrics.jsonl` and `train_steps.jsonl` always, Weights & Biases (offline unless configured),
the console.

- Round metrics (`eval/*`, `reward/*`, `pairs/*`, `train/*`, `time/*`, `memory/*`) are one point per round, against
  the step metric `round`.
- Training steps: every step TRL logs (loss, rewards/*, logps/*, learning rate, grad norm, ...), from every trainer
  of the run (seed SFT, DPO, GRPO, cDPO's adapters), under `trainer/*` against their own step metric
  `trainer/global_step`, which counts on across rounds (so round t's curve follows round t-1's);
  `trainer/round` says which round a step belongs to. The same rows go to `train_steps.jsonl`.
- Per round: a table of training samples with their scores (`samples/round_t`), a table of eval responses
  (`eval_samples/round_t`), and the round's pairs (text and conversational form), eval samples and GRPO rollouts
  as versioned artifacts (`pairs-<run id>:round_t`, `eval_samples-<run id>:round_t`, `rollouts-<run id>:round_t`).
- W&B's own system metrics (CPU, memory, GPU) are on, as W&B's default.

W&B mode `auto` is online only when WANDB_API_KEY is set, so nothing reaches the network by
default. A resumed run continues the same W&B run (its id is kept in the manifest).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
from pathlib import Path

from selfalign.artifacts import RunDir, append_jsonl, read_jsonl, write_jsonl
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

TRAIN_STEP = "trainer/global_step"
_active: Tracker | None = None


def active_tracker() -> Tracker | None:
    """The tracker of the run in progress in this process (main process only), for the trainers' step logs."""
    return _active


def wandb_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class Tracker:
    def __init__(self, run: RunDir, cfg: TrackingConfig, recipe: dict, is_main: bool = True):
        global _active
        self.run, self.cfg, self.is_main = run, cfg, is_main
        self.wandb = None
        self._header_printed = False
        self._columns = list(CONSOLE_COLUMNS)
        self._defined: set[str] = set()
        if is_main and cfg.wandb.enabled and wandb_mode(cfg.wandb.mode) != "disabled":
            self._init_wandb(recipe)
        if is_main:
            _active = self

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
            settings=wandb.Settings(console="off"),
        )
        self.wandb.define_metric("round")
        self.wandb.define_metric(TRAIN_STEP)
        self.wandb.define_metric("trainer/*", step_metric=TRAIN_STEP)

    def _define_round_metrics(self, keys) -> None:
        """Each top-level prefix of the round metrics (`eval/*`, ...) against `round`, once."""
        for key in keys:
            prefix = key.split("/", 1)[0]
            if "/" in key and prefix not in self._defined and prefix != "trainer":
                self.wandb.define_metric(f"{prefix}/*", step_metric="round")
                self._defined.add(prefix)

    def log(self, round_: int, metrics: dict) -> None:
        if not self.is_main:
            return
        append_jsonl(self.run.metrics_path, {"round": round_, "time": time.time(), **metrics})
        if self.wandb is not None:
            self._define_round_metrics(metrics)
            self.wandb.log({"round": round_, **metrics})

    # ------------------------------------------------------------------------------------------- training steps

    def log_train_step(self, round_: int | None, trainer: str, step: int, max_steps: int, logs: dict) -> None:
        """One of TRL's step logs (or its closing summary, `train_runtime`, ...): numbers only."""
        values = {k: v for k, v in logs.items() if _number(v) and k != "total_flos"}
        if not self.is_main or not values:
            return
        global_step = self.run.get("trainer_global_step", 0) + step
        append_jsonl(self.run.train_steps_path, {"round": round_, "trainer": trainer, "step": step,
                                                 "max_steps": max_steps, "global_step": global_step,
                                                 "time": time.time(), **values})
        if self.wandb is not None:
            point = {TRAIN_STEP: global_step, **{f"trainer/{k}": v for k, v in values.items()}}
            if round_ is not None:
                point["trainer/round"] = round_
            self.wandb.log(point)

    def forget_train_steps(self, round_: int | None, trainer: str, after: int) -> None:
        """Drop the `train_steps.jsonl` lines of this trainer after step `after` (a trainer resumed from its checkpoint
        at that step logs them again)."""
        path = self.run.train_steps_path
        if not self.is_main or not path.exists():
            return
        rows = read_jsonl(path)
        kept = [r for r in rows if not (r.get("round") == round_ and r.get("trainer") == trainer
                                        and r.get("step", 0) > after)]
        if len(kept) < len(rows):
            write_jsonl(path, kept)

    def end_training(self, steps: int) -> None:
        """A trainer finished after `steps` steps: the next one's steps count on from there."""
        if self.is_main:
            self.run.set("trainer_global_step", self.run.get("trainer_global_step", 0) + steps)

    # ------------------------------------------------------------------------------------------- per round

    def log_samples(self, round_: int, rows: list[dict], key: str = "samples") -> None:
        """A W&B table `<key>/round_t` of responses with their scores (first `log_samples` rows)."""
        if not self.is_main or self.wandb is None or not rows or self.cfg.log_samples == 0:
            return
        import wandb

        rows = rows[: self.cfg.log_samples]
        columns = list(dict.fromkeys(c for r in rows for c in r))
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        self._define_round_metrics([f"{key}/round_{round_}"])
        self.wandb.log({"round": round_, f"{key}/round_{round_}": table})

    def log_files(self, round_: int, name: str, kind: str, paths: list[Path], root: Path | None = None) -> None:
        """Round t's files as version `round_t` of the W&B artifact `<name>-<run id>` (type `kind`), named by their
        path under `root` (default: their file names)."""
        paths = [p for p in paths if p.exists()]
        if not self.is_main or self.wandb is None or not paths:
            return
        import wandb

        artifact = wandb.Artifact(f"{name}-{self.wandb.id}", type=kind,
                                  metadata={"round": round_, "run_dir": str(self.run.root)})
        for p in paths:
            artifact.add_file(str(p), name=str(p.relative_to(root)) if root is not None else p.name)
        self.wandb.log_artifact(artifact, aliases=[f"round_{round_}"])

    def add_console_columns(self, columns: list[tuple[str, str, str]]) -> None:
        """More (header, metric key, format) columns, after the eval ones (the evaluators' headline numbers); only
        before the header is printed, so every row has the same columns."""
        if self._header_printed:
            return
        known = {key for _, key, _ in self._columns}
        at = next(i for i, (_, key, _) in enumerate(self._columns) if key == "eval/mean_response_tokens")
        new = [c for c in columns if c[1] not in known]
        self._columns[at:at] = list(dict((c[1], c) for c in new).values())

    def console_row(self, metrics: dict) -> None:
        """One line of the per-round table (header before the first line)."""
        if not self.is_main or not self.cfg.console:
            return
        width = max(len(name) for name, _, _ in self._columns)
        if not self._header_printed:
            print(" ".join(name.rjust(width) for name, _, _ in self._columns), flush=True)
            self._header_printed = True
        cells = [("-" if metrics.get(key) is None else format(metrics[key], spec)).rjust(width)
                 for _, key, spec in self._columns]
        print(" ".join(cells), flush=True)

    def finish(self) -> Path | None:
        global _active
        if _active is self:
            _active = None
        if self.wandb is None:
            return None
        path = Path(self.wandb.dir).parent
        self.wandb.finish()
        return path
