"""Token-level rewards by contrast: of two models (cDPO's critical tokens) or of two prompts to one model (T-REG).

Both take per-position model outputs already aligned to the response tokens: the logits (or log-probs) that
predict token t sit at position t, i.e. a causal LM's outputs shifted by one (`logits[:, :-1]` against
`input_ids[:, 1:]`), restricted or masked to the completion.
"""

from __future__ import annotations

import torch


def critical_token_scores(pos_logits: torch.Tensor, neg_logits: torch.Tensor, token_ids: torch.Tensor,
                          beta: float = 1.0) -> torch.Tensor:
    """cDPO's contrastive estimation, https://arxiv.org/abs/2411.19943: "we develop a contrastive estimation
    approach to automatically identify critical tokens. It is achieved by comparing the generation likelihood of
    positive and negative models."

    s_t = softmax((1 + β)·z_pos − β·z_neg)[y_t]: the probability of the token under the positive model's
    distribution pushed away from the negative model's. A low s_t means the negative model prefers the token: a
    critical token. β = 0 gives softmax(z_pos)[y_t]. cDPO weights a rejected token by 1 − s_t.

    Args:
        pos_logits: logits z_pos of the model trained on correct solutions. Shape: (batch_size, length, vocab)
        neg_logits: logits z_neg of the model trained on incorrect solutions. Shape: (batch_size, length, vocab)
        token_ids: y_t, the token scored at each position. Shape: (batch_size, length)
        beta: contrast strength β (the paper: 1).

    Returns:
        scores: s_t ∈ (0, 1). Shape: (batch_size, length)
    """
    contrast = (1 + beta) * pos_logits.float() - beta * neg_logits.float()
    return torch.log_softmax(contrast, dim=-1).gather(-1, token_ids.unsqueeze(-1)).squeeze(-1).exp()


def treg_token_rewards(better_logps: torch.Tensor, worse_logps: torch.Tensor) -> torch.Tensor:
    """T-REG's token rewards by contrastive prompting, https://arxiv.org/abs/2412.02685: "our method uses
    contrastive prompting to enable LLMs to self-generate token-level rewards."

    r̂_t = σ(log π(y_t | x_better, y_<t) − log π(y_t | x_worse, y_<t)) − 0.5 ∈ (−0.5, 0.5): positive where the
    prompt asking for a better response makes the token more likely than the prompt asking for a worse one (in
    float32 σ rounds to 0 or 1, so r̂_t to ∓0.5, once the difference exceeds about 17 nats).

    Args:
        better_logps: per-token log-probs of the response under the "better" prompt. Shape: (batch_size, length)
        worse_logps: per-token log-probs of the same response tokens under the "worse" prompt.
            Shape: (batch_size, length)

    Returns:
        rewards: r̂_t. Shape: (batch_size, length)
    """
    return torch.sigmoid(better_logps - worse_logps) - 0.5
