"""Seed SFT before round 1 (SRLM, CREAM): TRL's `SFTTrainer` on instruction-following examples and
judge-training examples (the rubric prompt with its target judgment), loss on the completion only."""

from __future__ import annotations

from pathlib import Path

from selfalign import distributed, progress
from selfalign.config import SeedSFTConfig


def train_sft(model, tokenizer, examples: list[dict], cfg: SeedSFTConfig, output_dir: Path, seed: int):
    """`examples`: rows with `prompt` and `completion` (plain text). Returns the trainer."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from selfalign.trainers.callbacks import attach

    args = SFTConfig(
        output_dir=str(output_dir), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, logging_steps=1, save_strategy="no", report_to="none",
        seed=seed, **progress.trainer_args(), completion_only_loss=True, **distributed.precision_args(),
    )
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    attach(trainer)  # TRL's bar or plain lines, and the run's step log
    trainer.train()
    return trainer
