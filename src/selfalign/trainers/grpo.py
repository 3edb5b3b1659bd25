"""TRL's `GRPOTrainer` on a round's prompts (`selfalign.methods.grpo`): its arguments, and a subclass that keeps
every sampled completion with its rewards."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from trl import GRPOTrainer

from selfalign import distributed, progress
from selfalign.artifacts import read_jsonl, write_jsonl
from selfalign.rewards.verifier import is_correct
from selfalign.trainers.checkpoints import checkpoint_args
from selfalign.trainers.dpo import lora_config
from selfalign.trainers.reward_functions import bind_reward_functions, build_reward_functions


def grpo_config(recipe, weights: list[float], output_dir: Path, seed: int):
    from trl import GRPOConfig

    cfg, g = recipe.train, recipe.generation
    kwargs = dict(
        output_dir=str(output_dir), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps, logging_steps=1,
        report_to="none", seed=seed, **checkpoint_args(cfg.checkpoint_steps), **progress.trainer_args(),
        **distributed.precision_args(), num_generations=g.samples_per_prompt, temperature=g.temperature, top_p=g.top_p,
        max_completion_length=g.max_new_tokens, reward_weights=weights,
    )
    kwargs.update(cfg.grpo)
    args = GRPOConfig(**kwargs)
    if args.save_strategy == "steps":  # checkpoint where a generation batch starts: a resumed trainer samples anew
        args.save_steps = checkpoint_args(cfg.checkpoint_steps, generation_boundary(args))["save_steps"]
    return args


def generation_boundary(args) -> int:
    """The smallest number of optimizer steps after which TRL's GRPOTrainer samples a new generation batch: it samples
    every steps_per_generation × num_iterations micro-batches and an optimizer step takes gradient_accumulation_steps
    of them. A checkpoint saved there resumes with no buffered completions lost (TRL regenerates on resume)."""
    every = args.steps_per_generation * args.num_iterations
    return every // math.gcd(every, args.gradient_accumulation_steps)


def group_keep(rows: list[dict], completions: list[str], group_size: int, filters) -> tuple[list[bool], list[dict]]:
    """Each completion's keep flag and each group's filter records (`{name: record}`), over consecutive groups of
    `group_size` completions (TRL's grouping of a generation batch); a group is kept when every filter keeps it."""
    if len(rows) % group_size:
        raise ValueError(f"{len(rows)} completions are not whole groups of {group_size}")
    keep, records = [], []
    for start in range(0, len(rows), group_size):
        group = rows[start : start + group_size]
        if len({str(r["id"]) for r in group}) != 1:
            raise ValueError(f"completions {start}..{start + group_size - 1} are not one prompt's group")
        rec = {f.name: f(group[0], completions[start : start + group_size]) for f in filters}
        keep += [all(r["keep"] for r in rec.values())] * group_size
        records.append(rec)
    return keep, records


class RolloutRecordingGRPOTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` that keeps every sampled completion with its reward per term, in `self.rollouts` (on the
    main process): {step, prompt_id, response, token_ids, finish_reason, scores, filters}. `step` is the number of
    optimizer steps taken before the completion was sampled.

    `group_filters` (the methods' `group_filter`s) judge each group already sampled, as it is rewarded; a group one
    of them drops gets advantage 0 for every completion (no policy gradient, no extra samples drawn)."""

    def __init__(self, *args, group_filters=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.rollouts: list[dict] = []
        self.group_filters = list(group_filters)
        self._keep: list[bool] | None = None

    def save_extra_state(self, checkpoint: Path) -> None:
        """The rollouts so far, with each checkpoint (`selfalign.trainers.checkpoints`)."""
        write_jsonl(checkpoint / "rollouts.jsonl", self.rollouts)

    def load_extra_state(self, checkpoint: Path) -> None:
        self.rollouts = read_jsonl(checkpoint / "rollouts.jsonl") if self.accelerator.is_main_process else []

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        from accelerate.utils import gather_object

        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # gathered
        ends = set(self.eos_token_ids)
        rows = gather_object([{"step": self.state.global_step, "prompt_id": x.get("prompt_id"), "response": c,
                               "token_ids": list(ids),
                               "finish_reason": "eos" if ids and ids[-1] in ends else "length"}
                              for x, c, ids in zip(inputs, completions, completion_ids_list, strict=True)])
        records = None
        if self.group_filters:  # every process judges the whole gathered batch, so all agree on the groups kept
            prompt_rows = gather_object([{"id": x.get("prompt_id"), "prompt": x.get("user_prompt", x["prompt"]),
                                          "answer": x.get("answer")} for x in inputs])
            self._keep, records = group_keep(prompt_rows, [r["response"] for r in rows], self.num_generations,
                                             self.group_filters)
        if self.accelerator.is_main_process:
            for i, (row, values) in enumerate(zip(rows, rewards.tolist(), strict=True)):
                row["scores"] = {name: None if math.isnan(v) else v
                                 for name, v in zip(self.reward_func_names, values, strict=True)}
                if records is not None:
                    row["filters"] = records[i // self.num_generations]
                self.rollouts.append(row)
        return rewards

    def _generate_and_score_completions(self, inputs):
        self._keep = None
        output = super()._generate_and_score_completions(inputs)
        if self._keep is not None:
            n = len(inputs)
            start = self.accelerator.process_index * n
            keep = torch.tensor(self._keep[start : start + n], device=output["advantages"].device)
            output["advantages"] = output["advantages"] * keep.to(output["advantages"].dtype)
        return output


def train_grpo(model, tokenizer, rows: list[dict], recipe, output_dir: Path, seed: int,
               reward_inputs: dict | None = None, group_filters=()):
    """Run GRPO on the prompt rows (id, prompt, prompt_text, answer?); returns the trainer (its `.model` is the
    trained policy, a PeftModel with LoRA; `.rollouts` every sampled completion, with `prompt` and, where the
    rows have answers, `correct` added: ground truth measured, never trained on unless a reward says so).
    `reward_inputs`: what the round's methods hand the rewards (`RewardContext.inputs`)."""
    from datasets import Dataset

    from selfalign.trainers import checkpoints
    from selfalign.trainers.callbacks import attach

    funcs, weights = build_reward_functions(recipe.train.grpo_rewards, recipe.rewards, tokenizer,
                                            recipe.generation.max_new_tokens, seed, reward_inputs)
    dataset = Dataset.from_list([{"prompt": r["prompt_text"], "prompt_id": str(r["id"]), "user_prompt": r["prompt"],
                                  "answer": None if r.get("answer") is None else str(r["answer"])} for r in rows])
    lora = recipe.train.lora
    trainer = RolloutRecordingGRPOTrainer(
        model=model, reward_funcs=funcs, args=grpo_config(recipe, weights, output_dir, seed), train_dataset=dataset,
        processing_class=tokenizer, peft_config=lora_config(lora) if lora is not None else None,
        group_filters=group_filters,
    )
    bind_reward_functions(funcs, trainer)
    attach(trainer)  # TRL's bar or plain lines, the run's step log, the stop on a non-finite loss
    checkpoints.train(trainer, dataset.to_list())  # from the stage's newest checkpoint, if it was killed
    by_id = {str(r["id"]): r for r in rows}
    verifiable = all(r.get("answer") is not None for r in rows)
    for roll in trainer.rollouts:
        row = by_id[roll["prompt_id"]]
        roll["prompt"] = row["prompt"]
        if verifiable:
            roll["correct"] = is_correct(row, roll["response"])
    return trainer
