"""Internal reward models: one concept per file, one protocol (`base.RewardModel`), one registry (`REWARDS`).

Every reward model is registered here once, by the name recipes use. A round's reward stage (`rewards:`, ranked by
`pairs.reward`), GRPO's reward functions (`train.grpo_rewards`) and best-of-N selection (`selfalign eval
--select`) all build reward models through `build_reward`, so any registered reward works in all three. Adding a
reward: a module with its config dataclass, its reward model and a `RewardSpec`, and one line below.
"""

from __future__ import annotations

from typing import Any

from selfalign.config import ConfigError, build, did_you_mean
from selfalign.rewards import (
    gencls,
    implicit,
    infalign,
    judge,
    lastde,
    likelihood,
    majority,
    ptrue,
    repetition,
    self_certainty,
    verifier,
)
from selfalign.rewards.base import RewardContext, RewardModel, RewardOutput, RewardSpec

__all__ = ["REWARDS", "RewardContext", "RewardModel", "RewardOutput", "RewardSpec", "build_reward", "reward_spec"]

REWARDS: dict[str, RewardSpec] = {spec.name: spec for spec in (
    judge.SPEC,
    likelihood.SPEC,
    implicit.SPEC,
    majority.SPEC,
    verifier.SPEC,
    self_certainty.SPEC,
    ptrue.SPEC,
    repetition.REPETITION,
    repetition.LENGTH,
    lastde.SPEC,
    infalign.SPEC,
    gencls.SPEC,
)}


def reward_spec(name: str, where: str) -> RewardSpec:
    """The registered reward `name`; a one-line ConfigError with the closest name otherwise."""
    if name not in REWARDS:
        raise ConfigError(f"{where}: {name!r} is not a registered reward ({', '.join(REWARDS)})"
                          f"{did_you_mean(name, REWARDS)}")
    return REWARDS[name]


def reward_config(name: str, values: Any = None, where: str = "rewards") -> Any:
    """The options of reward `name` from a mapping (None: its defaults), checked."""
    spec = reward_spec(name, where)
    cfg = values if isinstance(values, spec.config) else build(spec.config, values or {}, f"{where}.{name}")
    if spec.check is not None:
        spec.check(cfg, f"{where}.{name}")
    return cfg


def build_reward(name: str, cfg: Any, ctx: RewardContext) -> RewardModel:
    """Reward model `name` with options `cfg` (its config dataclass; None: the defaults) in context `ctx`."""
    spec = reward_spec(name, ctx.where)
    return spec.build(cfg if cfg is not None else spec.config(), ctx)
