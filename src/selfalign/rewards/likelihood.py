"""Log-likelihood of a response under a model, optionally length-normalised."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfalign.config import opt
from selfalign.rewards.base import RewardOutput, RewardSpec, TokenIds
from selfalign.scoring import sequence_logprobs, token_logprobs


@dataclass
class LikelihoodConfig:
    """Log-likelihood of the response under the current model (length-normalised by default)."""

    normalize: bool = True
    batch_size: int = opt(32, lo=1)


def sequence_score(token_logps: torch.Tensor, normalize: bool) -> float:
    """Σ_t log π(y_t | x, y_<t), divided by the token count when `normalize` (0 tokens: 0.0)."""
    if token_logps.numel() == 0:
        return 0.0
    total = float(token_logps.sum())
    return total / token_logps.numel() if normalize else total


class LikelihoodReward:
    name = "likelihood"

    def __init__(self, model, tokenizer, normalize: bool = True, batch_size: int = 32):
        self.model, self.tokenizer, self.normalize, self.batch_size = model, tokenizer, normalize, batch_size

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        if token_ids is not None:
            logps = token_logprobs(self.model, token_ids, self.batch_size, self.tokenizer.pad_token_id or 0)
        else:
            logps = sequence_logprobs(self.model, self.tokenizer, [r["prompt_text"] for r in rows], responses,
                                      self.batch_size)
        return RewardOutput([sequence_score(lp, self.normalize) for lp in logps],
                            [{"tokens": int(lp.numel())} for lp in logps])


SPEC = RewardSpec(
    "likelihood", LikelihoodConfig,
    lambda cfg, ctx: LikelihoodReward(ctx.policy, ctx.tokenizer, cfg.normalize, cfg.batch_size),
    "its log-likelihood under the policy, length-normalised by default")
