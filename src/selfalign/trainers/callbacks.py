"""Trainer callbacks every selfalign trainer gets (`attach`): plain per-step progress lines when
the output is not a terminal, the run's per-step training log (train_steps.jsonl, W&B `trainer/*`), and the stop on
a loss that is not finite."""

from __future__ import annotations

import math
import time

from transformers import TrainerCallback

from selfalign import progress
from selfalign.errors import TrainingDiverged


def format_log(logs: dict) -> str:
    """TRL's log dict as `loss 0.6931, rewards/margins 0.0123, ...` (4 significant digits, as TRL prints it)."""
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()
                     if k not in ("total_flos", "epoch", "step"))


class TrainProgressLines(TrainerCallback):
    """One line per logged step on the main process: step / steps, every value TRL logged (loss, rewards, learning
    rate, ...), elapsed time and ETA; then the trainer's closing summary."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.first = time.perf_counter(), state.global_step  # > 0: resumed from a checkpoint
        self.label = progress.trainer_label(args.output_dir)
        if state.is_world_process_zero:
            resumed = f", resuming at step {self.first}" if self.first else ""
            print(f"{self.label}: {state.max_steps} steps{resumed}", file=progress.stream(), flush=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.perf_counter() - self.start
        step, total = state.global_step, max(state.max_steps, 1)
        if "train_runtime" in logs:
            line = f"{self.label}: done, {step} steps in {progress.format_seconds(elapsed)}, {format_log(logs)}"
        else:
            eta = (total - step) * elapsed / max(step - self.first, 1)
            line = (f"{self.label}: step {step}/{total} ({100 * step / total:.0f}%), {format_log(logs)}, "
                    f"elapsed {progress.format_seconds(elapsed)}, ETA {progress.format_seconds(eta)}")
        print(line, file=progress.stream(), flush=True)


class TrainStepLogger(TrainerCallback):
    """Every logged training step to the run's tracker (the main process's `selfalign.tracking.Tracker` of the run
    in progress, if any): `train_steps.jsonl` and W&B `trainer/*` against its own step metric. A trainer resumed from
    a checkpoint at step s first drops the lines it logged after step s before it was killed (they are logged again,
    and W&B keeps both); one that starts from step 0 (its stage redone, e.g. after a divergence) drops all of them."""

    def on_train_begin(self, args, state, control, **kwargs):
        from selfalign.tracking import active_tracker

        self.round, self.name = progress.trainer_round(args.output_dir)
        tracker = active_tracker()
        if tracker is not None and state.is_world_process_zero:
            tracker.forget_train_steps(self.round, self.name, after=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        from selfalign.tracking import active_tracker

        tracker = active_tracker()
        if tracker is None or not state.is_world_process_zero or not logs:
            return
        tracker.log_train_step(self.round, self.name, state.global_step, state.max_steps, logs)

    def on_train_end(self, args, state, control, **kwargs):
        from selfalign.tracking import active_tracker

        tracker = active_tracker()
        if tracker is not None and state.is_world_process_zero:
            tracker.end_training(state.global_step)


class StopOnNonFiniteLoss(TrainerCallback):
    """Stop training at the first logged loss that is NaN or infinite, with one line naming the round, the step and
    the logged loss terms (`TrainingDiverged`): nothing of the stage is saved, so the run's last good model stays the
    newest, and the same command resumes the run once `lr_key` (a setting a resumed run may change) is lowered.

    Needs `logging_nan_inf_filter=False` (`checkpoints.checkpoint_args`): transformers otherwise logs the running mean
    in place of a non-finite loss."""

    def __init__(self, lr_key: str = "train.learning_rate"):
        self.lr_key = lr_key

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if not isinstance(loss, int | float) or math.isfinite(loss):
            return
        t, _ = progress.trainer_round(args.output_dir)
        kept = ("the model it started from is unchanged" if t is None else "the base model is kept" if t == 0
                else f"round {t - 1}'s model is kept")
        raise TrainingDiverged(
            f"{progress.trainer_label(args.output_dir)}: the loss is {loss} at step {state.global_step}/"
            f"{state.max_steps} ({format_log(logs)}); the stage stopped and saved nothing ({kept}); lower "
            f"{self.lr_key} and run the same command again to redo it")


def attach(trainer, lr_key: str = "train.learning_rate") -> None:
    """Give a TRL trainer made with `progress.trainer_args()` its progress and logging callbacks: in `lines` mode one
    plain line per logged step instead of the bare log dicts, none in `quiet` mode; in every mode, the run's
    per-step training log (`train_steps.jsonl` and W&B's `trainer/*`, see `selfalign.tracking`) and the stop on a
    non-finite loss (naming `lr_key`, the recipe key of the trainer's learning rate)."""
    from transformers import PrinterCallback

    if progress.mode() != "bar":
        trainer.remove_callback(PrinterCallback)
    if progress.mode() == "lines":
        trainer.add_callback(TrainProgressLines())
    trainer.add_callback(TrainStepLogger())
    trainer.add_callback(StopOnNonFiniteLoss(lr_key))
