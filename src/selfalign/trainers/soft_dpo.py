"""DPO with a soft preference label and a weight per pair: CREAM's consistency-regularised loss
(https://arxiv.org/abs/2410.12735) and OSP's preference strength, on TRL's `DPOTrainer`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from trl import DPOTrainer

from selfalign.trainers.losses import dpo_margin, soft_label_dpo_loss

PAIR_COLUMNS = {"label": 1.0, "weight": 1.0}  # per-pair dataset columns and their value when absent (or None)


@dataclass
class PairColumnsCollator:
    """Wraps a preference collator and adds each pair's `label` and `weight`. Shape: (batch_size), float32."""

    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        for key, default in PAIR_COLUMNS.items():
            batch[key] = torch.tensor([default if ex.get(key) is None else float(ex[key]) for ex in examples],
                                      dtype=torch.float32)
        if not ((batch["label"] >= 0) & (batch["label"] <= 1)).all():
            raise ValueError(f"pair labels must lie in [0, 1], got {batch['label'].tolist()}")
        if (batch["weight"] < 0).any():
            raise ValueError(f"pair weights must be non-negative, got {batch['weight'].tolist()}")
        return batch


def require_sigmoid_loss(trainer: DPOTrainer) -> None:
    """Refuse DPOConfig loss variants: a subclass that replaces TRL's sigmoid loss would silently ignore them."""
    unsupported = {
        "loss_type": trainer.loss_types != ["sigmoid"],
        "loss_weights": trainer.loss_weights != [1.0],
        "f_divergence_type": trainer.f_divergence_type != "reverse_kl",
        "ld_alpha": trainer.ld_alpha is not None,
        "use_weighting": trainer.use_weighting,
    }
    if any(unsupported.values()):
        raise ValueError(f"{type(trainer).__name__} replaces the sigmoid DPO loss; leave DPOConfig's "
                         f"{[k for k, bad in unsupported.items() if bad]} at their defaults")


class _RecordingForward:
    """Calls the policy as TRL's loss does and keeps the outputs of the fused-LM-head forward (the per-token
    log-probs, still attached to the graph)."""

    def __init__(self, model):
        self.model, self.outputs = model, None

    def __call__(self, *args, **kwargs):
        outputs = self.model(*args, **kwargs)
        if kwargs.get("fused_lm_head"):
            self.outputs = outputs
        return outputs


def trl_loss_with_reference(trainer: DPOTrainer, model, inputs: dict, return_outputs: bool, num_items_in_batch):
    """Run TRL's own `DPOTrainer.compute_loss` whole (so it logs all its metrics) on a recorded forward of `model`,
    reading the reference log-probs from `inputs["ref_chosen_logps"]` / `["ref_rejected_logps"]` as it does with
    precomputed ones. Returns (TRL's result, the recorded outputs of the policy forward)."""
    policy = _RecordingForward(model)
    precomputed, trainer.precompute_ref_logps = trainer.precompute_ref_logps, True
    try:
        result = DPOTrainer.compute_loss(trainer, policy, inputs, return_outputs, num_items_in_batch)
    finally:
        trainer.precompute_ref_logps = precomputed
    return result, policy.outputs


class SoftLabelDPOTrainer(DPOTrainer):
    """`trl.DPOTrainer` whose loss is mean_i w_i · [ℓ_i · (−log σ(βh_i)) + (1 − ℓ_i) · (−log σ(−βh_i))].

    ℓ_i is the row's `label` (default 1.0: plain sigmoid DPO) and w_i its `weight` (default 1.0); the rest of the
    trainer — tokenization, reference model or PEFT adapter-disabled reference, `precompute_ref_log_probs`, logged
    metrics — is TRL's.

    How it hooks into TRL 1.x, copying none of its loss code:
    - `_set_signature_columns_if_needed` keeps the `label` and `weight` columns, which TRL's tokenization already
      carries through, and the collator is wrapped (`PairColumnsCollator`) to batch them.
    - `compute_loss` pops them from the batch and lets TRL's `_compute_loss` run whole, so every metric it logs
      (rewards/*, logps/*, logits/*, entropy, ...) is computed by TRL; the policy is passed through a recorder that
      keeps the outputs of TRL's own forward, from which the per-pair h is summed as TRL sums it, and the returned
      loss is replaced by the soft-label one (TRL's sigmoid loss is left unused). TRL computes the reference
      log-probs inside `_compute_loss`, out of reach, so they are computed first with TRL's `compute_ref_log_probs`
      and handed to it in the batch, as precomputed ones are: the reference still runs once per step.
    - `compute_ref_log_probs` drops the two columns, which are not model inputs (TRL passes unknown batch keys to the
      model; this path runs on the wrapped collator's batches when `evaluate` precomputes a new dataset).

    Only TRL's default margin is supported: loss_type ["sigmoid"] with weight 1, f_divergence_type "reverse_kl",
    no ld_alpha, no WPO weighting. `DPOConfig.label_smoothing` has no effect here, as it has none on TRL 1.16's own
    sigmoid loss (which does not read it); label smoothing ε is a per-pair `label` of 1 − ε (`soft_label_dpo_loss`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        require_sigmoid_loss(self)
        self.data_collator = PairColumnsCollator(self.data_collator)

    #: dataset columns the collator turns into extra batch keys (and batch keys that are not model inputs)
    extra_columns: tuple[str, ...] = tuple(PAIR_COLUMNS)
    column_defaults: dict = PAIR_COLUMNS  # the value of an absent column
    extra_batch_keys: tuple[str, ...] = tuple(PAIR_COLUMNS)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns += [c for c in self.extra_columns if c not in self._signature_columns]

    def compute_ref_log_probs(self, model, inputs):
        # TRL forwards every batch key it does not know to the model; many forwards swallow `label`/`weight` silently
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items()
                                                     if k not in self.extra_batch_keys})

    def extra_loss(self, model, inputs: dict, extras: dict, margin: torch.Tensor) -> torch.Tensor | float:
        """Added to the soft-label DPO loss; `extras` holds the popped extra batch keys. Subclasses override."""
        return 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        extras = {k: inputs.pop(k) for k in self.extra_batch_keys if k in inputs}
        label, weight = extras["label"], extras["weight"]
        if not self.precompute_ref_logps:
            reference = self.ref_model if self.ref_model is not None else self.model
            inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = self.compute_ref_log_probs(reference, inputs)
        result, outputs = trl_loss_with_reference(self, model, inputs, return_outputs, num_items_in_batch)

        seq_len = inputs["completion_mask"].size(1) - 1  # as in TRL: log-probs of tokens 1.., zero off the completion
        chosen_logps, rejected_logps = outputs.log_probs[:, -seq_len:].sum(dim=1).chunk(2)
        margin = dpo_margin(chosen_logps, rejected_logps, inputs["ref_chosen_logps"], inputs["ref_rejected_logps"])
        loss = (soft_label_dpo_loss(margin, label, self.beta) * weight).mean()
        loss = loss + self.extra_loss(model, inputs, extras, margin)
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
        return (loss, result[1]) if return_outputs else loss
