"""Internal reward models, one concept per file, one protocol (`RewardModel`)."""

from __future__ import annotations

from selfalign.config import RewardsConfig
from selfalign.rewards.base import RewardModel, RewardOutput
from selfalign.rewards.implicit import ImplicitReward
from selfalign.rewards.judge import JudgeReward
from selfalign.rewards.likelihood import LikelihoodReward
from selfalign.rewards.majority import MajorityReward
from selfalign.rewards.verifier import VerifierReward

__all__ = ["RewardModel", "RewardOutput", "build_rewards"]


def build_rewards(cfg: RewardsConfig, model, tokenizer, reference=None, seed: int = 0) -> dict[str, RewardModel]:
    """Reward models of the current policy `model`; `reference` is needed only by `implicit`."""
    out: dict[str, RewardModel] = {}
    if cfg.judge is not None:
        out["judge"] = JudgeReward(model, tokenizer, cfg.judge, seed)
    if cfg.likelihood is not None:
        out["likelihood"] = LikelihoodReward(model, tokenizer, cfg.likelihood.normalize, cfg.likelihood.batch_size)
    if cfg.implicit is not None:
        if reference is None:
            raise ValueError("the implicit reward needs a reference model")
        out["implicit"] = ImplicitReward(model, reference, tokenizer, cfg.implicit.beta, cfg.implicit.batch_size)
    if cfg.majority is not None:
        out["majority"] = MajorityReward()
    if cfg.verifier is not None:
        out["verifier"] = VerifierReward()
    return out
