"""The DPO implicit reward r(x, y) = β · [log π_θ(y|x) − log π_ref(y|x)] (Rafailov et al. 2023).

The reference is a recipe choice: the initial model M_0 (CREAM) or the previous round's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from selfalign.config import opt
from selfalign.rewards.base import RewardOutput, RewardSpec, TokenIds
from selfalign.scoring import sequence_logprobs, token_logprobs


@dataclass
class ImplicitConfig:
    """DPO implicit reward β·(log π_t(y|x) − log π_ref(y|x)).

    reference: `base` = the weights at model.path (before seed SFT; CREAM's M_0), `initial` = the
    round-0 model (after seed SFT when there is one), `previous` = the model before the scoring one.
    """

    reference: Literal["base", "initial", "previous"] = "base"
    beta: float = opt(1.0, lo=0.0, lo_open=True)
    batch_size: int = opt(32, lo=1)


def implicit_reward(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """β · (Σ_t policy_logps − Σ_t ref_logps) over the last dim. Shape: (...,) from (..., length)."""
    return beta * (policy_logps.sum(-1) - ref_logps.sum(-1))


class ImplicitReward:
    name = "implicit"

    def __init__(self, model, ref_model, tokenizer, beta: float = 1.0, batch_size: int = 32):
        self.model, self.ref_model, self.tokenizer = model, ref_model, tokenizer
        self.beta, self.batch_size = beta, batch_size

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        if token_ids is not None:
            pad = self.tokenizer.pad_token_id or 0
            pol = token_logprobs(self.model, token_ids, self.batch_size, pad)
            ref = token_logprobs(self.ref_model, token_ids, self.batch_size, pad)
        else:
            prompts = [r["prompt_text"] for r in rows]
            pol = sequence_logprobs(self.model, self.tokenizer, prompts, responses, self.batch_size)
            ref = sequence_logprobs(self.ref_model, self.tokenizer, prompts, responses, self.batch_size)
        scores = [float(implicit_reward(p, q, self.beta)) for p, q in zip(pol, ref, strict=True)]
        details = [{"policy_logp": float(p.sum()), "ref_logp": float(q.sum())} for p, q in zip(pol, ref, strict=True)]
        return RewardOutput(scores, details)


SPEC = RewardSpec(
    "implicit", ImplicitConfig,
    lambda cfg, ctx: ImplicitReward(ctx.policy, ctx.model(cfg.reference, "implicit"), ctx.tokenizer, cfg.beta,
                                    cfg.batch_size),
    "the DPO implicit reward β·[log π(y|x) − log π_ref(y|x)] against rewards.implicit.reference",
    needs=("policy", "reference"))
