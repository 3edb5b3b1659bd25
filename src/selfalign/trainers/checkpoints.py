"""Checkpoints inside a training stage: every `train.checkpoint_steps` optimizer steps the trainer saves a checkpoint
(weights, optimizer, scheduler, RNG states, its state: transformers' `Trainer._save_checkpoint`), and a stage killed
at any moment starts again from its newest complete checkpoint (`resume_from_checkpoint`), not from step 0.

    train(trainer, rows)    # instead of trainer.train()

A checkpoint is complete once selfalign's marker (`selfalign_checkpoint.json`) is in it: the marker is written last,
atomically, after every process has written its part and after any state the trainer keeps besides TRL's
(`save_extra_state(dir)` / `load_extra_state(dir)` on the trainer, e.g. GRPO's recorded rollouts). Only then are the
older checkpoints removed, so a kill in the middle of a save leaves the previous checkpoint to resume from. A
checkpoint is used only when it was taken with the same training settings and data (the marker's `fingerprint`:
learning rate, schedule, batch sizes, processes, seed and a hash of the rows); otherwise it is removed and the
stage starts again from its starting model. The checkpoints go with the rest of the stage's scratch once the stage
is recorded as done (`RunDir.mark_done`).

Resumed this way, a stage ends with the weights an uninterrupted one ends with: the Trainer restores the data order
(same sampler seed, the trained batches skipped) and the RNG states (`tests/test_resilience.py` checks bitwise
equality on CPU for DPO and GRPO).

A loss that stops being finite stops the stage (`callbacks.StopOnNonFiniteLoss`) and its checkpoints are removed:
they were taken on the way to the divergence, and a checkpoint's optimizer and scheduler carry the old learning rate,
which a resumed Trainer would keep.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

from transformers import TrainerCallback

from selfalign import distributed
from selfalign.artifacts import WRITE_ERRORS, read_json, write_failed, write_json
from selfalign.errors import TrainingDiverged, WriteFailed

log = logging.getLogger(__name__)

MARKER = "selfalign_checkpoint.json"
PREFIX = "checkpoint-"
#: the trainer arguments a checkpoint must have been taken with to be resumed
FINGERPRINT_ARGS = ("learning_rate", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "max_grad_norm",
                    "weight_decay", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                    "gradient_accumulation_steps", "seed", "world_size")


def checkpoint_args(steps: int | None, every: int = 1) -> dict:
    """The trainer arguments of checkpointing every `steps` optimizer steps (rounded up to a multiple of `every`;
    None: never), and of logging non-finite losses as they are (transformers replaces them with the running mean by
    default, which would hide a divergence). selfalign removes old checkpoints itself, after the new one is complete."""
    args = {"logging_nan_inf_filter": False, "save_only_model": False, "save_total_limit": None}
    if steps is None:
        return {**args, "save_strategy": "no"}
    return {**args, "save_strategy": "steps", "save_steps": math.ceil(steps / every) * every}


#: trainer arguments a recipe may not pass through train.dpo / train.grpo: checkpoints and resume depend on them
MANAGED_ARGS = {"save_strategy": "train.checkpoint_steps", "save_steps": "train.checkpoint_steps",
                "save_total_limit": "train.checkpoint_steps", "save_only_model": "train.checkpoint_steps",
                "logging_nan_inf_filter": "selfalign (a non-finite loss stops the stage)",
                "resume_from_checkpoint": "selfalign (a killed stage resumes from its newest checkpoint)"}


def fingerprint(args, rows: list[dict]) -> dict:
    """What a checkpoint must have been taken with to be resumed: `FINGERPRINT_ARGS` and a hash of the rows."""
    data = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    return {**{k: getattr(args, k, None) for k in FINGERPRINT_ARGS}, "data_sha256": data}


def _step(path: Path) -> int:
    return int(path.name[len(PREFIX):])


def checkpoints(output_dir: Path) -> list[Path]:
    """The checkpoint directories under `output_dir`, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=_step)


def _marker(path: Path) -> dict | None:
    try:
        return read_json(path / MARKER)
    except (OSError, ValueError):
        return None


def prune(output_dir: Path, fp: dict, label: str) -> Path | None:
    """Remove every checkpoint but the newest complete one taken with fingerprint `fp`; return that one (or None)."""
    keep = None
    for path in reversed(checkpoints(output_dir)):
        marker = _marker(path)
        if keep is None and marker is not None and marker.get("fingerprint") == fp:
            keep = path
            continue
        if keep is None and marker is not None:
            changed = sorted(k for k in fp if marker.get("fingerprint", {}).get(k) != fp[k])
            log.warning("%s: not resuming from %s: it was taken with other training settings (%s); starting the "
                        "stage again", label, path.name, ", ".join(changed))
        elif keep is None:
            log.info("%s: removing the incomplete %s (its save was interrupted)", label, path.name)
        shutil.rmtree(path, ignore_errors=True)
    return keep


class CompleteCheckpoints(TrainerCallback):
    """After the Trainer saved checkpoint-N: the trainer's extra state, then the marker, then the older checkpoints
    go (module docstring)."""

    def __init__(self, trainer, fp: dict):
        self.trainer, self.fp = trainer, fp

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
        distributed.barrier()  # every process has written its part (its RNG state, its ZeRO shard)
        if args.should_save:
            save_extra = getattr(self.trainer, "save_extra_state", None)
            if save_extra is not None:
                save_extra(path)
            write_json(path / MARKER, {"step": state.global_step, "fingerprint": self.fp})
            for older in checkpoints(path.parent):
                if _step(older) < state.global_step:
                    shutil.rmtree(older, ignore_errors=True)
        distributed.barrier()


def train(trainer, rows: list[dict]) -> None:
    """`trainer.train()`, resumed from the newest complete checkpoint of the same settings and `rows` (its training
    data) in the trainer's output_dir, when there is one. A failed checkpoint write leaves no partial checkpoint and
    raises `WriteFailed`; a non-finite loss (`TrainingDiverged`) removes the stage's checkpoints."""
    from selfalign import progress

    out = Path(trainer.args.output_dir)
    label = progress.trainer_label(out)
    fp = fingerprint(trainer.args, rows)
    if distributed.is_main():
        prune(out, fp, label)
    distributed.barrier()
    complete = [p for p in checkpoints(out) if _marker(p) is not None]
    resume = complete[-1] if complete else None
    if resume is not None:
        log.info("%s: resuming from %s (step %d)", label, resume.name, _step(resume))
        load_extra = getattr(trainer, "load_extra_state", None)
        if load_extra is not None:
            load_extra(resume)
    trainer.add_callback(CompleteCheckpoints(trainer, fp))
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    except TrainingDiverged:
        if distributed.is_main():
            for path in checkpoints(out):
                shutil.rmtree(path, ignore_errors=True)
        raise
    except (OSError, WriteFailed) as e:  # disk full, no permission while saving a checkpoint
        if isinstance(e, OSError) and e.errno not in WRITE_ERRORS:
            raise
        if distributed.is_main():
            for path in checkpoints(out):
                if _marker(path) is None:
                    shutil.rmtree(path, ignore_errors=True)
        if isinstance(e, WriteFailed):
            raise
        raise write_failed(Path(e.filename) if e.filename else out, e) from None
