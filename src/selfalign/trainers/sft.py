"""Seed SFT before round 1 (SRLM, CREAM): TRL's `SFTTrainer` on instruction-following examples and
judge-training examples (the rubric prompt with its target judgment), loss on the completion only."""

from __future__ import annotations

from pathlib import Path

from selfalign import distributed, progress
from selfalign.config import SeedSFTConfig


def example_mean_trainer():
    """`trl.SFTTrainer` whose loss weighs every example the same (`losses.example_mean_nll`): the judge-training
    stage mixes one-token labels with whole solutions."""
    from trl import SFTTrainer

    from selfalign.trainers.losses import example_mean_nll

    class ExampleMeanSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            keys = ("input_ids", "attention_mask", "position_ids")
            outputs = model(**{k: inputs[k] for k in keys if k in inputs}, use_cache=False)
            loss = example_mean_nll(outputs.logits, inputs["labels"])
            return (loss, outputs) if return_outputs else loss

    return ExampleMeanSFTTrainer


def train_sft(model, tokenizer, examples: list[dict], cfg: SeedSFTConfig, output_dir: Path, seed: int,
              checkpoint_steps: int | None = None, lr_key: str = "seed_sft.learning_rate", per_example: bool = False):
    """`examples`: rows with `prompt` and `completion` (plain text). Checkpoints every `checkpoint_steps` steps in
    `output_dir` and resumes from the newest one (`selfalign.trainers.checkpoints`; None: no checkpoints); a
    non-finite loss stops it naming `lr_key`. `per_example`: every example weighs the same in the loss (else TRL's
    mean over tokens). Returns the trainer."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from selfalign.trainers import checkpoints
    from selfalign.trainers.callbacks import attach

    args = SFTConfig(
        output_dir=str(output_dir), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, logging_steps=1, report_to="none", seed=seed,
        **checkpoints.checkpoint_args(checkpoint_steps), **progress.trainer_args(), completion_only_loss=True,
        **distributed.precision_args(),
    )
    rows = [{"prompt": e["prompt"], "completion": e["completion"]} for e in examples]
    trainer_class = example_mean_trainer() if per_example else SFTTrainer
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    attach(trainer, lr_key)  # TRL's bar or plain lines, the run's step log, the stop on a non-finite loss
    checkpoints.train(trainer, rows)
    return trainer
