"""GRPO with internal rewards: TRL's `GRPOTrainer` on a round's prompts, rewarded by `train.grpo_rewards`.

Shao et al. 2024 (DeepSeekMath), https://arxiv.org/abs/2402.03300: "GRPO foregoes the critic model, instead
estimating the baseline from group scores". For each prompt the policy samples a group of G completions
online (G = generation.samples_per_prompt, with generation's temperature, top-p and max_new_tokens); each gets
the weighted sum r = Σ_k w_k r_k of its reward terms (any registered reward, through
`trainers/reward_functions.py`: the model's own rewards, computed with the live policy); its advantage is r minus
the group's mean (over the group's std, TRL's default).

Round t: the policy starts as M_{t-1} (full fine-tuning, or a LoRA adapter on it). The reference is M_{t-1}
too, and exists only when train.grpo.beta > 0 (TRL's default is 0, no KL term): with LoRA it is the policy
with the adapter disabled, with full fine-tuning TRL loads it from the directory M_{t-1} was loaded from.
Every completion the trainer samples is kept with its rewards (`trainer.rollouts`), so the round can log how
long and how repetitive they were.
"""

from __future__ import annotations

import logging
import math
import statistics

from selfalign import distributed
from selfalign.artifacts import read_jsonl, write_jsonl
from selfalign.config import ConfigError, did_you_mean
from selfalign.methods.base import Method
from selfalign.rewards.lastde import lastde_summary
from selfalign.rewards.repetition import completion_stats

# trl.GRPOConfig fields a recipe sets through its typed keys (each setting has one place).
_GRPO_MANAGED = {
    "num_generations": "generation.samples_per_prompt", "temperature": "generation.temperature",
    "top_p": "generation.top_p", "max_completion_length": "generation.max_new_tokens",
    "reward_weights": "train.grpo_rewards[].weight", "learning_rate": "train.learning_rate",
    "num_train_epochs": "train.epochs", "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "lr_scheduler_type": "train.lr_scheduler_type", "warmup_steps": "train.warmup_steps", "seed": "seed",
    "output_dir": "the run directory",
}

log = logging.getLogger(__name__)


class GRPO(Method):
    where = "train.algorithm"  # the recipe key its errors name
    name = "grpo"
    title = "GRPO"
    algorithm = "grpo"
    stages = ("train", "eval")  # GRPO samples and rewards online, inside its train stage

    @classmethod
    def active(cls, recipe) -> bool:
        return recipe.train.algorithm == "grpo"


    def roles(self) -> set[str]:
        return {"algorithm"}

    def check(self) -> None:
        """Its reward terms, its passthrough keys, and generation batches of whole prompt groups."""
        recipe = self.recipe
        train, g = recipe.train, recipe.generation
        if train.dpo:
            raise ConfigError("train.dpo: DPOConfig settings; with train.algorithm grpo use train.grpo")
        if train.max_length is not None:
            raise ConfigError("train.max_length: DPO only; GRPO's completions end at generation.max_new_tokens")
        if g.stop:
            raise ConfigError("generation.stop: not supported with train.algorithm grpo (TRL's sampler stops at EOS)")
        if g.backend != "transformers":
            raise ConfigError("generation.backend: GRPO samples inside TRL; for vLLM set train.grpo.use_vllm: true")
        if g.samples_per_prompt < 2:
            raise ConfigError("generation.samples_per_prompt: GRPO needs >= 2 completions per prompt (one group)")
        if g.temperature == 0:
            raise ConfigError("generation.temperature: GRPO samples its groups; 0 (greedy) is not allowed")
        if recipe.rounds > 0 and not train.grpo_rewards:
            raise ConfigError("train.grpo_rewards: GRPO needs at least one reward, e.g. [{source: self_certainty}]")
        import dataclasses

        from trl import GRPOConfig

        allowed = {f.name for f in dataclasses.fields(GRPOConfig)}
        from selfalign.trainers.checkpoints import MANAGED_ARGS

        for key in train.grpo:
            if key in MANAGED_ARGS:
                raise ConfigError(f"train.grpo.{key}: set by {MANAGED_ARGS[key]}")
            if key in _GRPO_MANAGED:
                raise ConfigError(f"train.grpo.{key}: set by {_GRPO_MANAGED[key]}; set it there")
            if key not in allowed:
                raise ConfigError(f"train.grpo.{key}: not a trl.GRPOConfig field{did_you_mean(key, sorted(allowed))}")
        from selfalign.trainers.reward_functions import check_term

        for k, term in enumerate(train.grpo_rewards):
            where = f"train.grpo_rewards[{k}]"
            if term.source in [s.source for s in train.grpo_rewards[:k]]:
                raise ConfigError(f"{where}.source: {term.source!r} is listed twice")
            check_term(term, recipe.rewards, where)
        # One generation batch (per process) must hold whole groups, and the round must have prompts for one batch.
        gen_batch, steps = train.grpo.get("generation_batch_size"), train.grpo.get("steps_per_generation")
        if gen_batch is not None and steps is not None:
            raise ConfigError("train.grpo.steps_per_generation: set it or train.grpo.generation_batch_size, not both")
        if gen_batch is None:
            steps_key = "train.grpo.steps_per_generation" if steps is not None else "train.gradient_accumulation_steps"
            where = f"train.batch_size × {steps_key}"
            size = train.batch_size * (steps or train.gradient_accumulation_steps)
        else:
            where, size = "train.grpo.generation_batch_size", gen_batch
        if not isinstance(size, int):
            return  # TRL reports its own type errors
        if size % g.samples_per_prompt:
            raise ConfigError(f"{where.split(' ')[0]}: {where} = {size} completions per generation batch is not a "
                              f"multiple of generation.samples_per_prompt = {g.samples_per_prompt}")
        if recipe.rounds > 0 and size // g.samples_per_prompt > recipe.prompts.train_per_round:
            raise ConfigError(f"prompts.train_per_round: {recipe.prompts.train_per_round} prompts cannot fill one GRPO "
                              f"generation batch of {size // g.samples_per_prompt} prompts ({where} = {size} "
                              f"completions / {g.samples_per_prompt}); raise it or lower train.batch_size")

    def train(self, ctx, t):
        """GRPO from M_{t-1} on the round's prompts, sampling and rewarding online; writes rollouts.jsonl: every
        sampled completion with its rewards."""
        from selfalign.trainers.grpo import train_grpo

        rows = ctx.methods.train_prompts(ctx, t)
        per_batch = (self.recipe.train.batch_size * self.recipe.train.gradient_accumulation_steps
                     * distributed.world_size())
        if len(rows) * self.recipe.generation.samples_per_prompt < per_batch:  # screened below one generation batch
            log.warning("round %d: %d prompts after screening cannot fill one GRPO generation batch of %d completions; "
                        "the round does not train", t, len(rows), per_batch)
            return None, {"skipped": True, "prompts": len(rows)}
        filters = [f for m in ctx.methods if (f := m.group_filter(ctx, t)) is not None]
        policy = ctx.store.load(t - 1)
        trainer = train_grpo(policy, ctx.store.tokenizer, rows, self.recipe, ctx.run.trainer_dir(t),
                             self.recipe.seed + t, ctx.methods.reward_inputs(ctx, t), group_filters=filters)
        if ctx.main:
            write_jsonl(ctx.run.round_dir(t) / "rollouts.jsonl", trainer.rollouts)
        before = ctx.run.round_dir(t - 1) / "rollouts.jsonl"
        previous = read_jsonl(before) if before.exists() else None
        return trainer, {**grpo_train_stats(trainer.state.log_history),
                         **rollout_stats(trainer.rollouts, previous=previous),
                         **group_filter_stats(trainer.rollouts, self.recipe.generation.samples_per_prompt)}


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


def rollout_stats(rollouts: list[dict], n: int = 4, previous: list[dict] | None = None) -> dict:
    """Length and repetition (rewards/repetition.py) of the round's sampled completions, and their accuracy where
    measured; `rollout_*` over the round, `rollout_*_last` over the last generation batch (where a drift to
    degenerate text shows first). With a `lastde` reward term, the Lastde distribution (`rollout_lastde_*`, with its
    drift from the `previous` round's rollouts) and that of the last batch with its drift from the first
    (`rollout_lastde_last_*`)."""
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
    if any("lastde" in r["scores"] for r in rollouts):  # a lastde term (weight 0: logged only) scored them
        first_step = min(r["step"] for r in rollouts)
        first = [r["scores"].get("lastde") for r in rollouts if r["step"] == first_step]
        last = [r["scores"].get("lastde") for r in rollouts if r["step"] == last_step]
        before = [r["scores"].get("lastde") for r in previous or ()]
        stats.update(lastde_summary([r["scores"].get("lastde") for r in rollouts], before, prefix="rollout_lastde"))
        stats.update(lastde_summary(last, first, prefix="rollout_lastde_last"))
    return stats


def group_filter_stats(rollouts: list[dict], group_size: int) -> dict:
    """Per group filter (`<name>_*`): the groups it judged, how many it dropped and why (its records' `reason`), and
    the mean of its records' numbers (e.g. `pik_p_hat_mean`); groups are the rollouts' consecutive blocks."""
    groups = [r["filters"] for r in rollouts[::group_size] if "filters" in r]
    stats: dict = {}
    for name in (groups[0] if groups else {}):
        records = [g[name] for g in groups]
        stats[f"{name}_groups"] = len(records)
        stats[f"{name}_dropped"] = sum(not r["keep"] for r in records)
        for reason in sorted({r["reason"] for r in records if r["reason"] is not None}):
            stats[f"{name}_dropped_{reason}"] = sum(r["reason"] == reason for r in records)
        for key in records[0]:
            values = [r[key] for r in records if isinstance(r.get(key), int | float) and not isinstance(r[key], bool)]
            if values:
                stats[f"{name}_{key}_mean"] = _mean(values)
    return stats
