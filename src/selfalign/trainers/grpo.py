"""GRPO with internal rewards: TRL's `GRPOTrainer` on a round's prompts, rewarded by `train.grpo_rewards`.

Shao et al. 2024 (DeepSeekMath), https://arxiv.org/abs/2402.03300: "GRPO foregoes the critic model, instead
estimating the baseline from group scores". For each prompt the policy samples a group of G completions
online (G = generation.samples_per_prompt, with generation's temperature, top-p and max_new_tokens); each gets
the weighted sum r = Σ_k w_k r_k of its reward terms (rewards/functions.py: the model's own rewards, computed
with the live policy); its advantage is r minus the group's mean (over the group's std, TRL's default).

Round t: the policy starts as M_{t-1} (full fine-tuning, or a LoRA adapter on it). The reference is M_{t-1}
too, and exists only when train.grpo.beta > 0 (TRL's default is 0, no KL term): with LoRA it is the policy
with the adapter disabled, with full fine-tuning TRL loads it from the directory M_{t-1} was loaded from.
Every completion the trainer samples is kept with its rewards (`trainer.rollouts`), so the round can log how
long and how repetitive they were.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from trl import GRPOTrainer

from selfalign import distributed
from selfalign.config import Recipe
from selfalign.rewards.functions import bind_reward_functions, build_reward_functions
from selfalign.rewards.repetition import completion_stats
from selfalign.rewards.verifier import is_correct
from selfalign.trainers.dpo import lora_config


def grpo_config(recipe: Recipe, weights: list[float], output_dir: Path, seed: int):
    from trl import GRPOConfig

    cfg, g = recipe.train, recipe.generation
    kwargs = dict(
        output_dir=str(output_dir), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps, logging_steps=1, save_strategy="no",
        report_to="none", seed=seed, disable_tqdm=True, **distributed.precision_args(),
        num_generations=g.samples_per_prompt, temperature=g.temperature, top_p=g.top_p,
        max_completion_length=g.max_new_tokens, reward_weights=weights,
    )
    kwargs.update(cfg.grpo)
    return GRPOConfig(**kwargs)


class RolloutRecordingGRPOTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` that keeps every sampled completion with its reward per term, in `self.rollouts` (on the
    main process): {step, prompt_id, response, token_ids, finish_reason, scores}. `step` is the number of optimizer
    steps taken before the completion was sampled."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rollouts: list[dict] = []

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        from accelerate.utils import gather_object

        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # gathered
        ends = set(self.eos_token_ids)
        rows = gather_object([{"step": self.state.global_step, "prompt_id": x.get("prompt_id"), "response": c,
                               "token_ids": list(ids),
                               "finish_reason": "eos" if ids and ids[-1] in ends else "length"}
                              for x, c, ids in zip(inputs, completions, completion_ids_list, strict=True)])
        if self.accelerator.is_main_process:
            for row, values in zip(rows, rewards.tolist(), strict=True):
                row["scores"] = {name: None if math.isnan(v) else v
                                 for name, v in zip(self.reward_func_names, values, strict=True)}
                self.rollouts.append(row)
        return rewards


def train_grpo(model, tokenizer, rows: list[dict], recipe: Recipe, output_dir: Path, seed: int):
    """Run GRPO on the prompt rows (id, prompt, prompt_text, answer?); returns the trainer (its `.model` is the
    trained policy, a PeftModel with LoRA; `.rollouts` every sampled completion, with `prompt` and, where the
    rows have answers, `correct` added: ground truth measured, never trained on unless a reward says so)."""
    from datasets import Dataset
    from transformers import PrinterCallback

    funcs, weights = build_reward_functions(recipe.train.grpo_rewards, recipe.rewards, tokenizer,
                                            recipe.generation.max_new_tokens, seed)
    dataset = Dataset.from_list([{"prompt": r["prompt_text"], "prompt_id": str(r["id"]), "user_prompt": r["prompt"],
                                  "answer": None if r.get("answer") is None else str(r["answer"])} for r in rows])
    lora = recipe.train.lora
    trainer = RolloutRecordingGRPOTrainer(
        model=model, reward_funcs=funcs, args=grpo_config(recipe, weights, output_dir, seed), train_dataset=dataset,
        processing_class=tokenizer, peft_config=lora_config(lora) if lora is not None else None,
    )
    bind_reward_functions(funcs, trainer)
    trainer.remove_callback(PrinterCallback)  # selfalign reports the round's training stats itself
    trainer.train()
    by_id = {str(r["id"]): r for r in rows}
    verifiable = all(r.get("answer") is not None for r in rows)
    for roll in trainer.rollouts:
        row = by_id[roll["prompt_id"]]
        roll["prompt"] = row["prompt"]
        if verifiable:
            roll["correct"] = is_correct(row, roll["response"])
    return trainer


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def grpo_train_stats(log_history: list[dict]) -> dict:
    """From TRL's log: steps; loss, KL to the reference (beta > 0) and reward (total, and `reward_<name>` per term)
    as the round's mean, first and last step; entropy and the share of zero-std groups (no signal) as means."""
    steps = [h for h in log_history if "loss" in h]
    stats: dict = {"steps": len(steps)}
    if not steps:
        return stats
    trends = {"loss": "loss", "reward": "reward", "kl": "kl"}
    trends.update({k: "reward_" + k.split("/")[1] for k in steps[0]
                   if k.startswith("rewards/") and k.endswith("/mean")})
    for key in (*trends, "entropy", "frac_reward_zero_std"):
        values = [h[key] for h in steps if isinstance(h.get(key), int | float) and not math.isnan(h[key])]
        if not values:
            continue
        name = trends.get(key, key)
        stats[name] = _mean(values)
        if key in trends:
            stats[f"{name}_first"], stats[f"{name}_last"] = values[0], values[-1]
    return stats


def rollout_stats(rollouts: list[dict], n: int = 4) -> dict:
    """Length and repetition (rewards/repetition.py) of the round's sampled completions, and their accuracy where
    measured; `rollout_*` over the round, `rollout_*_last` over the last generation batch (where a drift to
    degenerate text shows first)."""
    if not rollouts:
        return {}
    last_step = max(r["step"] for r in rollouts)
    stats: dict = {}
    for suffix, part in (("", rollouts), ("_last", [r for r in rollouts if r["step"] == last_step])):
        s = completion_stats([r["token_ids"] for r in part], [r["response"] for r in part],
                             [r["prompt_id"] for r in part], [r["finish_reason"] == "length" for r in part], n)
        if all("correct" in r for r in part):
            s["accuracy"] = _mean([float(r["correct"]) for r in part])
        stats.update({f"rollout_{k}{suffix}": v for k, v in s.items()})
    return stats
