"""Preference training with TRL's `DPOTrainer`: full fine-tuning or LoRA, hyperparameters from the recipe."""

from __future__ import annotations

from pathlib import Path

from selfalign import distributed, progress
from selfalign.config import LoraOptions, TrainConfig
from selfalign.trainers.checkpoints import checkpoint_args


def lora_config(opts: LoraOptions):
    from peft import LoraConfig

    return LoraConfig(r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout,
                      target_modules=opts.target_modules, task_type="CAUSAL_LM")


def dpo_config(cfg: TrainConfig, output_dir: Path, seed: int):
    from trl import DPOConfig

    kwargs = dict(
        output_dir=str(output_dir), beta=cfg.beta, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps, logging_steps=1, report_to="none", seed=seed,
        **checkpoint_args(cfg.checkpoint_steps), **progress.trainer_args(), **distributed.precision_args(),
    )
    if cfg.max_length is not None:
        kwargs["max_length"] = cfg.max_length
    kwargs.update(cfg.dpo)
    return DPOConfig(**kwargs)


def train_stats(log_history: list[dict]) -> dict:
    """Mean training loss and the last logged DPO reward metrics from a Trainer's log history."""
    steps = [h for h in log_history if "loss" in h]
    stats: dict = {"steps": len(steps)}
    if steps:
        stats["loss"] = sum(h["loss"] for h in steps) / len(steps)
        stats["loss_first"], stats["loss_last"] = steps[0]["loss"], steps[-1]["loss"]
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                    "rewards/weighted_margins", "treg/regularizer"):  # the last two: TokenWeightedDPOTrainer
            values = [h[key] for h in steps if key in h]
            if values:
                stats[key] = sum(values) / len(values)
    return stats


def train_dpo(model, tokenizer, pairs: list[dict], cfg: TrainConfig, output_dir: Path, seed: int,
              ref_model=None, trainer_cls=None, trainer_kwargs: dict | None = None, args=None):
    """Run DPO on `pairs` (rows with prompt, chosen, rejected, and any extra columns a subclass reads).

    Reference: `ref_model` for full fine-tuning; with LoRA, the base with the adapter disabled. `args`: a
    `dpo_config(cfg, output_dir, seed)` made before the models were loaded (under ZeRO-3 that makes
    `from_pretrained` partition the weights as they load); made here when not given.
    Checkpoints every `cfg.checkpoint_steps` steps in `output_dir`, and resumes from the newest one
    (`selfalign.trainers.checkpoints`). Returns the trainer (its `.model` is the trained policy, a PeftModel with
    LoRA).
    """
    from datasets import Dataset
    from trl import DPOTrainer

    from selfalign.trainers import checkpoints
    from selfalign.trainers.callbacks import attach

    trainer_cls = trainer_cls or DPOTrainer
    dataset = Dataset.from_list(pairs)
    peft = lora_config(cfg.lora) if cfg.lora is not None else None
    trainer = trainer_cls(
        model=model, ref_model=None if peft is not None else ref_model, args=args or dpo_config(cfg, output_dir, seed),
        train_dataset=dataset, processing_class=tokenizer, peft_config=peft, **(trainer_kwargs or {}),
    )
    attach(trainer)  # TRL's bar or plain lines, the run's step log, the stop on a non-finite loss
    checkpoints.train(trainer, pairs)  # from the stage's newest checkpoint, if it was killed
    return trainer
