"""Preference losses as pure functions of log-probs (per pair, or per token for the token-level losses): no model,
no trainer, no hidden state."""

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
    loss; CREAM's consistency C (or c_j) and OSP's preference strength are this label. label = 1 − ε is the
    label-smoothed ("conservative") DPO of Mitchell 2023, (1 − ε)·(−log σ(βh)) + ε·(−log σ(−βh)), which TRL 1.16
    does NOT compute for its default loss: its `loss_type="sigmoid"` is −log σ(βh) and ignores
    `DPOConfig.label_smoothing` (trl/trainer/dpo_trainer.py, `DPOTrainer._compute_loss`); there `label_smoothing`
    is read only by `exo_pair`, `robust` (a different, unbiased form: [(1 − ε)·(−log σ(βh)) − ε·(−log σ(−βh))] /
    (1 − 2ε)) and `aot` / `aot_unpaired` (this form, on sorted margins). dL/dh = β · (σ(βh) − label), so
    label = 0.5 pulls h towards 0. Computed with `logsigmoid`, it stays finite for any |β·h|.

    Args:
        margin: DPO margin h (see `dpo_margin`). Shape: (batch_size)
        label: target P(chosen ≻ rejected) in [0, 1]; a float, or one per pair. Shape: () or (batch_size)
        beta: DPO temperature β.

    Returns:
        losses: per-pair loss, not reduced. Shape: (batch_size)
    """
    logits = beta * margin
    return -(label * F.logsigmoid(logits) + (1 - label) * F.logsigmoid(-logits))


def _bernoulli_log(p: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    p = p.clamp(eps, 1 - eps)
    return torch.log(p), torch.log1p(-p)


def symmetric_bernoulli_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(Bern(p) ‖ Bern(q)) + KL(Bern(q) ‖ Bern(p)) = (p − q) · [logit(p) − logit(q)], element-wise.

    SCIR's inconsistency penalty between the judge's and the implicit reward's P(y1 ≻ y2) (our reconstruction: the
    paper gives no formula). Zero iff p = q, symmetric, and finite: probabilities are clamped to [eps, 1 − eps].

    Shapes: p (batch_size), q (batch_size) → (batch_size)
    """
    log_p, log_1mp = _bernoulli_log(p, eps)
    log_q, log_1mq = _bernoulli_log(q, eps)
    return (p - q) * ((log_p - log_1mp) - (log_q - log_1mq))


def bernoulli_entropy(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """H(Bern(p)) = −p·log p − (1 − p)·log(1 − p) in nats; log 2 at p = 0.5, → 0 at p ∈ {0, 1}.

    Shape: (batch_size) → (batch_size)
    """
    log_p, log_1mp = _bernoulli_log(p, eps)
    return -(p * log_p + (1 - p) * log_1mp)


def scir_regularizer(p_judge: torch.Tensor, p_implicit: torch.Tensor, lambda_cons: float,
                     lambda_conf: float) -> torch.Tensor:
    """SCIR's added training terms, https://arxiv.org/abs/2502.08922 (Zhou et al. 2025): "we enforce consistency
    between [the two internal reward models] ... and [use] confident and consistent preferences".

    λ_cons · [KL(p_J ‖ p_I) + KL(p_I ‖ p_J)] + λ_conf · H(½(p_J + p_I)): the inconsistency penalty pulls the judge's
    and the implicit reward's predictions of P(y1 ≻ y2) together, and the confidence term (entropy of their mean,
    minimised) pushes the agreed prediction away from 0.5. The forms are our reconstruction (METHODS.md).

    Args:
        p_judge: the judge's P(y1 ≻ y2). Shape: (batch_size)
        p_implicit: σ(r(y1) − r(y2)) of the implicit reward. Shape: (batch_size)
        lambda_cons: weight of the inconsistency penalty.
        lambda_conf: weight of the confidence term.

    Returns:
        per-pair regulariser, not reduced. Shape: (batch_size)
    """
    return (lambda_cons * symmetric_bernoulli_kl(p_judge, p_implicit)
            + lambda_conf * bernoulli_entropy(0.5 * (p_judge + p_implicit)))


def token_weighted_margin(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                          ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
                          chosen_mask: torch.Tensor, rejected_mask: torch.Tensor,
                          chosen_weights: torch.Tensor | None = None, rejected_weights: torch.Tensor | None = None,
                          reduction: str = "sum") -> torch.Tensor:
    """Token-weighted DPO margin of cDPO, https://arxiv.org/abs/2411.19943: "we extend the conventional DPO
    algorithms to token-level DPO and utilize the differential likelihood from the aforementioned positive and
    negative model as important weight for token-level DPO learning."

    With Δ(t) = log π_θ(y_t|x, y_<t) − log π_ref(y_t|x, y_<t) and token weights a(t), over the masked tokens:
    - "sum":  h = Σ_t a_w(t)·Δ_w(t) − Σ_t a_l(t)·Δ_l(t); with all weights 1 it is `dpo_margin`.
    - "mean": h = Σ_t a_w(t)·Δ_w(t) / n_w − Σ_t a_l(t)·Δ_l(t) / n_l, each weighted sum divided by its masked token
      count n (not by the sum of its weights; n = 0 counts as 1). A length-normalised margin, as TRL normalises
      IPO's; it is not the released cDPO code's reduction, which averages −log σ(β·(a_w(t)Δ_w(t) − a_l(t)Δ_l(t)))
      over positions t, pairing chosen and rejected tokens by index.

    Args:
        policy_chosen_logps: log π_θ(y_w,t | x, y_w,<t). Shape: (batch_size, length)
        policy_rejected_logps: log π_θ(y_l,t | x, y_l,<t). Shape: (batch_size, length)
        ref_chosen_logps: log π_ref of the chosen tokens. Shape: (batch_size, length)
        ref_rejected_logps: log π_ref of the rejected tokens. Shape: (batch_size, length)
        chosen_mask: 1 on the chosen response's tokens, 0 elsewhere. Shape: (batch_size, length)
        rejected_mask: 1 on the rejected response's tokens. Shape: (batch_size, length)
        chosen_weights: a_w(t); None: all 1. Shape: (batch_size, length)
        rejected_weights: a_l(t) (cDPO: 1 − s_t, see `selfalign.rewards.contrastive`); None: all 1.
            Shape: (batch_size, length)
        reduction: "sum" or "mean", as above.

    Returns:
        margin: h per pair. Shape: (batch_size)
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"unknown reduction {reduction!r}: expected 'sum' or 'mean'")

    def weighted_sum(policy, ref, mask, weights):
        total = ((policy - ref) * mask * (1.0 if weights is None else weights)).sum(dim=-1)
        return total / mask.sum(dim=-1).clamp(min=1) if reduction == "mean" else total

    return (weighted_sum(policy_chosen_logps, ref_chosen_logps, chosen_mask, chosen_weights)
            - weighted_sum(policy_rejected_logps, ref_rejected_logps, rejected_mask, rejected_weights))


def token_weighted_dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                            ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
                            chosen_mask: torch.Tensor, rejected_mask: torch.Tensor,
                            chosen_weights: torch.Tensor | None = None, rejected_weights: torch.Tensor | None = None,
                            beta: float = 0.1, reduction: str = "sum") -> torch.Tensor:
    """Token-weighted DPO loss of cDPO, https://arxiv.org/abs/2411.19943: L = −log σ(β·h), h the
    `token_weighted_margin` (see there for the arguments, shapes and the two reductions). With all weights 1 and
    reduction "sum" it is the sigmoid DPO loss.

    Returns:
        losses: per-pair loss, not reduced. Shape: (batch_size)
    """
    margin = token_weighted_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                                   chosen_mask, rejected_mask, chosen_weights, rejected_weights, reduction)
    return -F.logsigmoid(beta * margin)


def treg_regularizer(policy_logps: torch.Tensor, token_rewards: torch.Tensor, mask: torch.Tensor,
                     beta: float) -> torch.Tensor:
    """T-REG's token-level regulariser, https://arxiv.org/abs/2412.02685: "These self-generated rewards then act as
    reward regularization, guiding the model to more effectively distribute sequence-level rewards across tokens."

    L_REG(y) = −Σ_t β · r̂_t · log π_θ(y_t | x, y_<t) over the masked tokens: it raises the log-prob of tokens with
    r̂_t > 0 and lowers it where r̂_t < 0.

    Args:
        policy_logps: log π_θ(y_t | x, y_<t). Shape: (batch_size, length)
        token_rewards: r̂_t ∈ (−0.5, 0.5) (see `selfalign.rewards.contrastive.treg_token_rewards`).
            Shape: (batch_size, length)
        mask: 1 on the response's tokens, 0 elsewhere. Shape: (batch_size, length)
        beta: DPO temperature β.

    Returns:
        regulariser: L_REG per sequence. Shape: (batch_size)
    """
    return -beta * (token_rewards * policy_logps * mask).sum(dim=-1)


def treg_loss(margin: torch.Tensor, chosen_regularizer: torch.Tensor, rejected_regularizer: torch.Tensor,
              beta: float, alpha: float) -> torch.Tensor:
    """T-REG's loss, https://arxiv.org/abs/2412.02685: L = −log σ(βh) + α · sg(σ(−βh)) · (L_REG(y_w) + L_REG(y_l)).

    The weight σ(−βh), without gradient, is the size of the DPO gradient dL/d(βh): the regulariser counts as much as
    the pair is still misordered and fades as DPO fits it. α = 0 is DPO on h.

    Args:
        margin: DPO margin h (`dpo_margin`, or `token_weighted_margin` for cDPO weights). Shape: (batch_size)
        chosen_regularizer: L_REG(y_w) (`treg_regularizer`). Shape: (batch_size)
        rejected_regularizer: L_REG(y_l). Shape: (batch_size)
        beta: DPO temperature β.
        alpha: weight α of the regulariser (the paper tries 0.1, 0.25, 0.5).

    Returns:
        losses: per-pair loss, not reduced. Shape: (batch_size)
    """
    logits = beta * margin
    weight = torch.sigmoid(-logits).detach()
    return -F.logsigmoid(logits) + alpha * weight * (chosen_regularizer + rejected_regularizer)


def example_mean_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """SFT loss where every example weighs the same: each example's mean negative log-likelihood over its labelled
    tokens (labels shifted by one, as a causal LM predicts them), then the mean over the examples that have any.
    TRL's SFT loss is the mean over all labelled tokens of the batch instead, so a one-token label next to a
    30-token solution weighs 1/31 of the batch. Shapes: logits (batch, length, vocab), labels (batch, length)."""
    targets = labels[:, 1:]
    mask = targets != ignore_index
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets.clamp(min=0), reduction="none")
    per_example = (nll * mask).sum(1) / mask.sum(1).clamp(min=1)
    has = mask.any(1)
    return per_example[has].mean() if bool(has.any()) else logits.sum() * 0.0
