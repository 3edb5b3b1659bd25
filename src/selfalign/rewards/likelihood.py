"""Log-likelihood of a response under a model, optionally length-normalised."""

from __future__ import annotations

import torch

from selfalign.rewards.base import RewardOutput
from selfalign.scoring import sequence_logprobs


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

    def score(self, rows: list[dict], responses: list[str]) -> RewardOutput:
        logps = sequence_logprobs(self.model, self.tokenizer, [r["prompt_text"] for r in rows], responses,
                                  self.batch_size)
        return RewardOutput([sequence_score(lp, self.normalize) for lp in logps],
                            [{"tokens": int(lp.numel())} for lp in logps])
