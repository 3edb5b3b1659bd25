"""TRL's `GRPOTrainer` on classifier prompts with GenCLS++'s rule reward (`selfalign.methods.gencls`): the label is
the whole completion (as many tokens as the longest label, then it stops), rewarded 1 when it is the target."""

from __future__ import annotations

from pathlib import Path

from selfalign import distributed, progress
from selfalign.rewards.gencls import label_reward
from selfalign.trainers.checkpoints import checkpoint_args


def label_reward_function(labels: list[str], uncertain_reward: float):
    """A TRL reward function: `label_reward` of each completion against its row's `target`."""
    def label(prompts, completions, target, **kwargs) -> list[float]:
        return [label_reward(c, y, labels, uncertain_reward) for c, y in zip(completions, target, strict=True)]

    return label


def train_label_grpo(model, tokenizer, rows: list[dict], labels: list[str], cfg, output_dir: Path, seed: int,
                     checkpoint_steps: int | None = None):
    """GRPO on rows {prompt (rendered classifier prompt), target (label string)}; `cfg` the gencls section. Returns
    the trainer (its `.model` is the trained classifier)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from selfalign.trainers import checkpoints
    from selfalign.trainers.callbacks import attach

    width = max(len(tokenizer(lab, add_special_tokens=False)["input_ids"]) for lab in labels)
    args = GRPOConfig(
        output_dir=str(output_dir), learning_rate=cfg.rl_learning_rate, num_train_epochs=cfg.rl_epochs,
        per_device_train_batch_size=cfg.rl_batch_size, num_generations=cfg.rl_num_generations,
        temperature=cfg.rl_temperature, top_p=1.0, max_completion_length=width, beta=cfg.rl_beta,
        logging_steps=1, report_to="none", seed=seed, **checkpoint_args(checkpoint_steps),
        **progress.trainer_args(), **distributed.precision_args(),
    )
    dataset = Dataset.from_list([{"prompt": r["prompt"], "target": r["target"]} for r in rows])
    trainer = GRPOTrainer(model=model, reward_funcs=[label_reward_function(labels, cfg.uncertain_reward)], args=args,
                          train_dataset=dataset, processing_class=tokenizer)
    attach(trainer, "gencls.rl_learning_rate")
    checkpoints.train(trainer, dataset.to_list())
    return trainer
