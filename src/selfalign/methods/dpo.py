"""Self-Rewarding LMs and plain DPO (Yuan et al. 2024, https://arxiv.org/abs/2401.10020): "the model acts as its
own reward model". Each prompt's samples are ranked by one internal reward (`pairs.reward`), the best against the
worst sample is a preference pair (or every pair with a score gap, `pairs.rule: all_pairs`, OSP's several pairs per
prompt), and TRL's `DPOTrainer` trains M_t from M_{t-1}, which is also the reference.

This is the default method of a DPO recipe. It also runs the DPO training of every DPO method: the trainer class
is the one their losses need (`Method.trainer`, the most derived), with their arguments and the pair columns that
class reads.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import ClassVar

from selfalign.artifacts import read_jsonl
from selfalign.config import ConfigError, did_you_mean
from selfalign.methods.base import Method

log = logging.getLogger(__name__)

Chooser = Callable[[list[float | None], list[dict]], list[tuple[int, int]]]


def best_vs_worst(scores: Sequence[float | None], min_margin: float = 0.0) -> tuple[int, int] | None:
    """(index of the highest score, index of the lowest), or None on a tie (best − worst ≤ min_margin).

    Unscored samples (None) are ignored; among equal scores the first sample wins (ordinal ranking).
    """
    scored = [(s, i) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return None
    best = max(scored, key=lambda si: (si[0], -si[1]))
    worst = min(scored, key=lambda si: (si[0], si[1]))
    if best[0] - worst[0] <= min_margin:
        return None
    return best[1], worst[1]


def all_pairs(scores: Sequence[float | None], min_margin: float = 0.0,
              max_pairs: int | None = None) -> list[tuple[int, int]]:
    """Every (better, worse) pair with a score gap above min_margin, largest gaps first (OSP's several pairs per
    prompt from one ranking), at most max_pairs of them."""
    scored = [(s, i) for i, s in enumerate(scores) if s is not None]
    pairs = [(i, j) for si, i in scored for sj, j in scored if si - sj > min_margin]
    pairs.sort(key=lambda ij: (-(scores[ij[0]] - scores[ij[1]]), ij))
    return pairs[:max_pairs] if max_pairs is not None else pairs


def build_pairs(groups: Sequence[dict], reward: str, choose: Chooser) -> tuple[list[dict], int]:
    """Preference pairs from each prompt group; returns (pairs, number of prompts that gave none).

    `choose(scores, samples)` picks the (chosen, rejected) sample indices of one group from its scores by `reward`.
    Each group: {"row": prompt row, "samples": [{"response", "scores": {source: float|None}}, ...]}.
    """
    pairs, dropped = [], 0
    for g in groups:
        scores = [s["scores"].get(reward) for s in g["samples"]]
        chosen = choose(scores, g["samples"])
        if not chosen:
            dropped += 1
        row = g["row"]
        for w, lo in chosen:
            pairs.append({
                "prompt_id": row["id"], "prompt": row["prompt_text"],
                "chosen": g["samples"][w]["response"], "rejected": g["samples"][lo]["response"],
                "chosen_sample": w, "rejected_sample": lo,
                "chosen_score": scores[w], "rejected_score": scores[lo],
            })
    return pairs, dropped


def import_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def trainer_rows(pairs: list[dict], trainer_cls: type | None) -> list[dict]:
    """The dataset rows of the pairs: prompt, chosen, rejected and the extra columns the trainer class reads
    (`extra_columns`; absent ones take the class's `column_defaults`, or are left out)."""
    columns = getattr(trainer_cls, "extra_columns", ())
    defaults = getattr(trainer_cls, "column_defaults", {})
    return [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"],
             **{k: p[k] if k in p else defaults[k] for k in columns if k in p or k in defaults}} for p in pairs]


class DPO(Method):
    where = "pairs.rule"  # the recipe key its errors name
    name = "dpo"
    title = "DPO"
    algorithm = "dpo"
    stages = ("generate", "reward", "pairs", "train", "eval")
    uses_pairs_reward: ClassVar[bool] = True
    pairs_what = "pairs"

    @classmethod
    def active(cls, recipe) -> bool:
        return recipe.train.algorithm == "dpo"


    def roles(self) -> set[str]:
        # all_pairs is a choice of how pairs are built, which no other pair builder can honour
        return {"algorithm"} | ({"pairs"} if self.recipe.pairs.rule != "best_vs_worst" else set())

    def check(self) -> None:
        train = self.recipe.train
        for key in ("grpo_rewards", "grpo"):
            if getattr(train, key):
                raise ConfigError(f"train.{key}: applies to train.algorithm grpo only")
        if train.dpo:
            import dataclasses

            from trl import DPOConfig

            from selfalign.trainers.checkpoints import MANAGED_ARGS

            allowed = {f.name for f in dataclasses.fields(DPOConfig)}
            for key in train.dpo:
                if key in MANAGED_ARGS:
                    raise ConfigError(f"train.dpo.{key}: set by {MANAGED_ARGS[key]}")
                if key not in allowed:
                    raise ConfigError(f"train.dpo.{key}: not a trl.DPOConfig field{did_you_mean(key, sorted(allowed))}")

    def choose(self, scores: list[float | None], samples: list[dict]) -> list[tuple[int, int]]:
        p = self.recipe.pairs
        if p.rule == "all_pairs":
            return all_pairs(scores, p.min_margin, p.max_pairs_per_prompt)
        return [pair for pair in [best_vs_worst(scores, p.min_margin)] if pair]

    def build_pairs(self, ctx, t, groups):
        pairs, dropped = build_pairs(list(groups.values()), self.recipe.pairs.reward, self.choose)
        return pairs, {"kept": len(pairs), "dropped_ties": dropped}

    def train(self, ctx, t):
        from selfalign.trainers.dpo import dpo_config, train_dpo, train_stats

        pairs = read_jsonl(ctx.run.round_dir(t) / "pairs.jsonl")
        if not pairs:
            log.warning("round %d: no preference pairs; the model is carried over unchanged", t)
            return None, {"skipped": True}
        cfg = self.recipe.train
        trainer_cls = import_class(ctx.methods.trainer) if ctx.methods.trainer else None
        kwargs: dict = {}
        for m in ctx.methods:
            kwargs.update(m.trainer_kwargs(ctx, pairs))
        out_dir, seed = ctx.run.trainer_dir(t), self.recipe.seed + t
        # Full fine-tuning: the trainer's arguments come first, so that under ZeRO-3 the policy and the reference
        # are partitioned as they load (zero.Init). LoRA merges the earlier rounds' adapters into whole weights.
        args = None if cfg.lora else dpo_config(cfg, out_dir, seed)
        policy = ctx.store.load(t - 1)
        ref = None if cfg.lora else ctx.store.load(t - 1)
        trainer = train_dpo(policy, ctx.store.tokenizer, trainer_rows(pairs, trainer_cls), cfg, out_dir, seed,
                            ref_model=ref, trainer_cls=trainer_cls, trainer_kwargs=kwargs or None, args=args)
        return trainer, train_stats(trainer.state.log_history)
