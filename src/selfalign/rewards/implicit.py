"""The DPO implicit reward r(x, y) = β · [log π_θ(y|x) − log π_ref(y|x)] (Rafailov et al. 2023).

The reference is a recipe choice: the initial model M_0 (CREAM) or the previous round's model.
"""

from __future__ import annotations

import torch

from selfalign.rewards.base import RewardOutput
from selfalign.scoring import sequence_logprobs


def implicit_reward(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """β · (Σ_t policy_logps − Σ_t ref_logps) over the last dim. Shape: (...,) from (..., length)."""
    return beta * (policy_logps.sum(-1) - ref_logps.sum(-1))


class ImplicitReward:
    name = "implicit"

    def __init__(self, model, ref_model, tokenizer, beta: float = 1.0, batch_size: int = 32):
        self.model, self.ref_model, self.tokenizer = model, ref_model, tokenizer
        self.beta, self.batch_size = beta, batch_size

    def score(self, rows: list[dict], responses: list[str]) -> RewardOutput:
        prompts = [r["prompt_text"] for r in rows]
        pol = sequence_logprobs(self.model, self.tokenizer, prompts, responses, self.batch_size)
        ref = sequence_logprobs(self.ref_model, self.tokenizer, prompts, responses, self.batch_size)
        scores = [float(implicit_reward(p, q, self.beta)) for p, q in zip(pol, ref, strict=True)]
        details = [{"policy_logp": float(p.sum()), "ref_logp": float(q.sum())} for p, q in zip(pol, ref, strict=True)]
        return RewardOutput(scores, details)
