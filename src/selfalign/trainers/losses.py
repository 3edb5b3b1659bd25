"""Preference losses as pure functions of per-pair sequence log-probs: no model, no trainer, no hidden state."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_margin(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
               ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor) -> torch.Tensor:
    """DPO margin, https://arxiv.org/abs/2305.18290: "Your Language Model is Secretly a Reward Model".

    h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)], so β·h is the difference of the
    implicit rewards of the chosen and the rejected response.

    Args:
        policy_chosen_logps: log π_θ(y_w|x), summed over response tokens. Shape: (batch_size)
        policy_rejected_logps: log π_θ(y_l|x). Shape: (batch_size)
        ref_chosen_logps: log π_ref(y_w|x). Shape: (batch_size)
        ref_rejected_logps: log π_ref(y_l|x). Shape: (batch_size)

    Returns:
        margin: h per pair. Shape: (batch_size)
    """
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def soft_label_dpo_loss(margin: torch.Tensor, label: float | torch.Tensor, beta: float) -> torch.Tensor:
    """Soft-label DPO loss of CREAM, https://arxiv.org/abs/2410.12735: "We then introduce the regularization to this
    generalized framework to mitigate the overconfident preference labeling in the self-rewarding process."

    L = label · (−log σ(βh)) + (1 − label) · (−log σ(−βh)), the cross-entropy between the Bradley–Terry preference
    σ(βh) and a target probability `label` that the chosen response is the better one. label = 1 is the sigmoid DPO
    loss; CREAM's consistency C (or c_j) and OSP's preference strength are this label; label = 1 − ε is DPO with
    label smoothing ε. dL/dh = β · (σ(βh) − label), so label = 0.5 pulls h towards 0. Computed with `logsigmoid`,
    it stays finite for any |β·h|.

    Args:
        margin: DPO margin h (see `dpo_margin`). Shape: (batch_size)
        label: target P(chosen ≻ rejected) in [0, 1]; a float, or one per pair. Shape: () or (batch_size)
        beta: DPO temperature β.

    Returns:
        losses: per-pair loss, not reduced. Shape: (batch_size)
    """
    logits = beta * margin
    return -(label * F.logsigmoid(logits) + (1 - label) * F.logsigmoid(-logits))
