"""Self-certainty: how far the model's next-token distributions are from uniform, over a response.

Kang et al. 2025, https://arxiv.org/abs/2502.18581: "self-certainty ... leverages the inherent
probability distribution of LLM outputs to estimate response quality without external reward
models". Per response token t, KL(U ‖ p_t) = −(1/V) Σ_v log p_t,v − log V
= logsumexp(z_t) − mean_v z_t,v − log V ≥ 0; the response's score is its mean over t. Unlike the
likelihood it looks at the whole distribution, not only at the sampled token. Higher = more
confident; 0 = uniform; unbounded as mass concentrates on one token (one logit L above the others
gives about L·(1 − 1/V) − log V; it is KL(p ‖ U), not this, that tends to log V).

The window differs on purpose from the released code of Kang et al. (backprop07/Self-Certainty,
`src/confidence_list.py`, `confidence_with_file`, line 188: `batch_logprob_sum[:, input_length:, :]`, then
`confidence_logprob_sum` masked by the response's attention mask). With a prompt of p tokens and a response of m
tokens at positions p..p+m−1, and the logits at position i predicting the token at i + 1, that code averages the
distributions at positions p..p+m−1: they predict response tokens 2..m and, last, the token after the response
(there it tokenizes the output text alone, so that is the distribution over "what follows the text", where an EOS
would be); it leaves out position p−1, the distribution that produced the first response token. Its window is
shifted one position late. selfalign averages positions p−1..p+m−2, the m distributions p(·|x, y_<t) that predict
the response's own tokens y_1..y_m, which is the paper's mean over the response tokens of KL(U ‖ p(·|x, y_<t));
when the response ends with an EOS token (sampled, or appended as DPO tokenizes), its prediction is one of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from selfalign.config import opt
from selfalign.rewards.base import RewardOutput, RewardSpec, TokenIds
from selfalign.scoring import response_logit_chunks, tokenize_pair


def self_certainty(logits: torch.Tensor, mask: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
    """Mean over masked positions of KL(U ‖ softmax(z)) = logsumexp(z) − mean_v z_v − log V.

    Args:
        logits: (batch, length, vocab), any float dtype; computed in float32.
        mask: (batch, length); nonzero marks the positions to average. Unmasked positions are never
            read into the result, so padding may hold anything (even inf or NaN).
        chunk_size: positions per step along `length`; the float32 temporaries are (batch,
            chunk_size, vocab), never (batch, length, vocab).

    Returns:
        (batch,) float32. A sequence with an all-zero mask gets 0.0, the certainty of the uniform
        distribution (the least possible), so an empty response never wins an argmax.
    """
    if logits.dim() != 3 or mask.shape != logits.shape[:2]:
        raise ValueError(f"self_certainty: logits (batch, length, vocab) and mask (batch, length) expected, "
                         f"got {tuple(logits.shape)} and {tuple(mask.shape)}")
    if chunk_size < 1:
        raise ValueError(f"self_certainty: chunk_size must be >= 1, got {chunk_size}")
    batch, length, vocab = logits.shape
    keep = mask.to(device=logits.device) != 0
    total = torch.zeros(batch, dtype=torch.float32, device=logits.device)
    for start in range(0, length, chunk_size):
        z = logits[:, start : start + chunk_size].float()
        per_position = torch.logsumexp(z, dim=-1) - z.mean(dim=-1) - math.log(vocab)
        total += torch.where(keep[:, start : start + chunk_size], per_position, 0.0).sum(dim=-1)
    count = keep.sum(dim=-1)
    return torch.where(count > 0, total / count.clamp(min=1), 0.0)


def response_certainty(model, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 32,
                       pad_token_id: int = 0, chunk_size: int = 64) -> list[float]:
    """Self-certainty of each (prompt_ids, response_ids) pair: one teacher-forced pass, averaged over
    the positions that predict the response tokens (position p − 1 + j predicts response token j, j = 0..m−1, for
    a prompt of p tokens): positions p−1..p+m−2, one earlier than the released code's p..p+m−1 (module docstring).
    The logits come a block of `chunk_size` positions at a time (`scoring.response_logit_chunks`), never as a
    (batch, length, vocab) tensor; an empty response gets 0.0, as in `self_certainty`."""
    totals = [0.0] * len(pairs)
    for i, _, logits, _ in response_logit_chunks(model, pairs, batch_size, pad_token_id, chunk_size):
        per_position = torch.logsumexp(logits, dim=-1) - logits.mean(dim=-1) - math.log(logits.shape[-1])
        totals[i] += float(per_position.sum())
    return [total / len(y) if y else 0.0 for total, (_, y) in zip(totals, pairs, strict=True)]


@dataclass
class SelfCertaintyConfig:
    """Self-certainty under the policy, from its logits at temperature 1."""

    batch_size: int = opt(32, lo=1)
    chunk_size: int = opt(64, lo=1)  # positions per float32 (batch, chunk, vocab) step


class SelfCertaintyReward:
    name = "self_certainty"

    def __init__(self, model, tokenizer, batch_size: int = 32, chunk_size: int = 64):
        self.model, self.tokenizer, self.batch_size, self.chunk_size = model, tokenizer, batch_size, chunk_size

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        """The sampled tokens when `token_ids` are given (GRPO: EOS included when sampled); otherwise the responses
        tokenized as DPO does (EOS appended), so the EOS decision is scored too."""
        pairs = list(token_ids) if token_ids is not None else [
            tokenize_pair(self.tokenizer, r["prompt_text"], y) for r, y in zip(rows, responses, strict=True)]
        was_training = self.model.training
        self.model.eval()
        try:
            scores = response_certainty(self.model, pairs, self.batch_size, self.tokenizer.pad_token_id or 0,
                                        self.chunk_size)
        finally:
            self.model.train(was_training)
        return RewardOutput(list(scores), [{"tokens": len(y)} for _, y in pairs])


SPEC = RewardSpec(
    "self_certainty", SelfCertaintyConfig,
    lambda cfg, ctx: SelfCertaintyReward(ctx.policy, ctx.tokenizer, cfg.batch_size, cfg.chunk_size),
    "mean over its tokens of KL(U ‖ p) under the policy (Kang et al.; Intuitor's GRPO reward)")
