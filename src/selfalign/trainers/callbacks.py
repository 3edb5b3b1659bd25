"""Trainer callbacks every selfalign trainer gets (`attach`): plain per-step progress lines when
the output is not a terminal, and the run's per-step training log (train_steps.jsonl, W&B `trainer/*`)."""

from __future__ import annotations

import time

from transformers import TrainerCallback

from selfalign import progress


def format_log(logs: dict) -> str:
    """TRL's log dict as `loss 0.6931, rewards/margins 0.0123, ...` (4 significant digits, as TRL prints it)."""
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()
                     if k not in ("total_flos", "epoch", "step"))


class TrainProgressLines(TrainerCallback):
    """One line per logged step on the main process: step / steps, every value TRL logged (loss, rewards, learning
    rate, ...), elapsed time and ETA; then the trainer's closing summary."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()
        self.label = progress.trainer_label(args.output_dir)
        if state.is_world_process_zero:
            print(f"{self.label}: {state.max_steps} steps", file=progress.stream(), flush=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        elapsed = time.perf_counter() - self.start
        step, total = state.global_step, max(state.max_steps, 1)
        if "train_runtime" in logs:
            line = f"{self.label}: done, {step} steps in {progress.format_seconds(elapsed)}, {format_log(logs)}"
        else:
            eta = (total - step) * elapsed / max(step, 1)
            line = (f"{self.label}: step {step}/{total} ({100 * step / total:.0f}%), {format_log(logs)}, "
                    f"elapsed {progress.format_seconds(elapsed)}, ETA {progress.format_seconds(eta)}")
        print(line, file=progress.stream(), flush=True)


class TrainStepLogger(TrainerCallback):
    """Every logged training step to the run's tracker (the main process's `selfalign.tracking.Tracker` of the run
    in progress, if any): `train_steps.jsonl` and W&B `trainer/*` against its own step metric."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.round, self.name = progress.trainer_round(args.output_dir)

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


def attach(trainer) -> None:
    """Give a TRL trainer made with `progress.trainer_args()` its progress and logging callbacks: in `lines` mode one
    plain line per logged step instead of the bare log dicts, none in `quiet` mode; and, in every mode, the run's
    per-step training log (`train_steps.jsonl` and W&B's `trainer/*`, see `selfalign.tracking`)."""
    from transformers import PrinterCallback

    if progress.mode() != "bar":
        trainer.remove_callback(PrinterCallback)
    if progress.mode() == "lines":
        trainer.add_callback(TrainProgressLines())
    trainer.add_callback(TrainStepLogger())
