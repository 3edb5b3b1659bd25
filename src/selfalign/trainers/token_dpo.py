"""Token-level DPO on TRL's `DPOTrainer`: cDPO's token-weighted DPO (https://arxiv.org/abs/2411.19943) and T-REG's
token-level regulariser (https://arxiv.org/abs/2412.02685), from per-token columns of the pair rows.

A per-token column holds one float per completion token exactly as TRL tokenizes the completion, EOS included:
`preference_token_ids(tokenizer, row)` gives those tokens, so compute the values on its `chosen_ids` /
`rejected_ids` (the released cDPO code gives the EOS weight 1). A column of another length is an error that names
the row; values are never shifted or padded to fit. `DPOConfig.max_length` truncation cuts the values with the
tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from selfalign.scoring import preference_token_ids
from selfalign.trainers.losses import token_weighted_margin, treg_loss, treg_regularizer
from selfalign.trainers.soft_dpo import _RecordingForward, require_sigmoid_loss, trl_loss_with_reference

WEIGHT_COLUMNS = ("chosen_weights", "rejected_weights")  # cDPO's a(t); all 1 when absent (or None)
REWARD_COLUMNS = ("chosen_token_rewards", "rejected_token_rewards")  # T-REG's r̂_t; required when treg_alpha > 0
REDUCTIONS = ("sum", "mean")
TOKEN_COLUMNS = WEIGHT_COLUMNS + REWARD_COLUMNS


class TokenAlignmentError(ValueError):
    """A per-token column whose length is not the number of completion tokens TRL trains on."""


def token_values(example: dict[str, Any], column: str, where: str) -> list[float]:
    """The values of per-token `column` in a tokenized row, checked against its completion tokens.

    An absent (or None) weight column is all 1; an absent reward column is an error.
    """
    side = column.split("_", 1)[0]
    n_tokens = len(example[f"{side}_ids"])
    values = example.get(column)
    if values is None:
        if column in REWARD_COLUMNS:
            raise ValueError(f"{where}: no `{column}`; treg_alpha > 0 needs T-REG's per-token rewards")
        return [1.0] * n_tokens
    if len(values) != n_tokens:
        raise TokenAlignmentError(
            f"{where}: `{column}` has {len(values)} values but the {side} completion has {n_tokens} tokens as TRL "
            f"tokenizes it (EOS included); compute one value per token of "
            f"`preference_token_ids(tokenizer, row)['{side}_ids']`")
    if column in WEIGHT_COLUMNS and min(values, default=0.0) < 0:
        raise ValueError(f"{where}: `{column}` has negative token weights: {values}")
    return [float(v) for v in values]


def check_token_columns(tokenizer, rows: list[dict[str, Any]], where: str) -> None:
    """Raise `TokenAlignmentError` naming the row when a per-token column of a pair row (prompt, chosen, rejected and
    any of `TOKEN_COLUMNS`) does not have one value per completion token of `preference_token_ids`."""
    for i, row in enumerate(rows):
        columns = [c for c in TOKEN_COLUMNS if row.get(c) is not None]
        if columns:
            example = {**preference_token_ids(tokenizer, row), **{c: row[c] for c in columns}}
            for column in columns:
                token_values(example, column, f"{where}: pair {i} (prompt {str(row['prompt'])[:60]!r})")


@dataclass
class TokenColumnsCollator:
    """Wraps TRL's `DataCollatorForPreference` and adds the per-token columns laid out like its `input_ids`: chosen
    rows, then rejected rows, 0 off the completion, truncated as the collator truncates the tokens.

    `token_weights` from `chosen_weights` / `rejected_weights`, and with `rewards` `token_rewards` from
    `chosen_token_rewards` / `rejected_token_rewards`. Shape: (2·batch_size, length), float32.
    """

    collator: DataCollatorForPreference
    rewards: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        width = batch["input_ids"].size(1)
        batch["token_weights"] = self.layout(examples, WEIGHT_COLUMNS, width)
        if self.rewards:
            batch["token_rewards"] = self.layout(examples, REWARD_COLUMNS, width)
        return batch

    def layout(self, examples: list[dict[str, Any]], columns: tuple[str, str], width: int) -> torch.Tensor:
        out = torch.zeros(2 * len(examples), width)
        for half, column in enumerate(columns):
            for i, ex in enumerate(examples):
                row = [0.0] * len(ex["prompt_ids"]) + token_values(ex, column, f"pair {i} of the batch")
                row = self.truncate(row)
                out[half * len(examples) + i, : len(row)] = torch.tensor(row)
        return out

    def truncate(self, row: list[float]) -> list[float]:
        max_length = self.collator.max_length
        if max_length is None:
            return row
        return row[:max_length] if self.collator.truncation_mode == "keep_start" else row[-max_length:]


class TokenWeightedDPOTrainer(DPOTrainer):
    """`trl.DPOTrainer` whose loss is mean_i [−log σ(βh_i) + α · sg(σ(−βh_i)) · (L_REG(y_w,i) + L_REG(y_l,i))].

    h_i is cDPO's token-weighted margin of the pair (`token_weighted_margin`) with the rows' `chosen_weights` /
    `rejected_weights` (default all 1) and `reduction` "sum" (default; all weights 1 is sigmoid DPO) or "mean" (each
    weighted sum divided by its token count); L_REG is T-REG's regulariser (`treg_regularizer`) with the rows'
    `chosen_token_rewards` / `rejected_token_rewards`, required when α = `treg_alpha` > 0 (default 0: no
    regulariser). The per-token columns follow the alignment of this module's docstring, checked for every row of a
    map-style dataset when the trainer prepares it.

    Hooked into TRL 1.x as `SoftLabelDPOTrainer` is: the columns are kept as signature columns and batched by a
    wrapped collator (`TokenColumnsCollator`); TRL's `_compute_loss` runs whole (its metrics are logged as usual and
    describe the unweighted margin) on a recorded policy forward, and its loss is replaced. The reference's per-token
    log-probs come from TRL's `compute_ref_log_probs` on a recorded forward (a PEFT model's reference is the model
    with the adapter disabled) and are handed to `_compute_loss` as precomputed sums. Logged in addition:
    `rewards/weighted_margins` (β·h) and, with α > 0, `treg/regularizer` (L_REG(y_w) + L_REG(y_l)).

    Not supported: `precompute_ref_log_probs` (it keeps only the summed reference log-probs), a custom
    `data_collator`, and DPOConfig's loss variants (loss_type other than ["sigmoid"], loss_weights,
    f_divergence_type, ld_alpha, use_weighting).
    """

    #: dataset columns it reads (absent weight columns are all 1)
    extra_columns: tuple[str, ...] = TOKEN_COLUMNS
    #: DPOConfig settings it refuses (recipe check: train.dpo)
    refused_dpo_args = ("loss_type", "loss_weights", "f_divergence_type", "ld_alpha", "use_weighting",
                        "precompute_ref_log_probs")
    refused_reason = "token-weighted DPO replaces the sigmoid loss and reads per-token reference log-probs"

    def __init__(self, *args, reduction: str = "sum", treg_alpha: float = 0.0, **kwargs):
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}: expected one of {REDUCTIONS}")
        if treg_alpha < 0:
            raise ValueError(f"treg_alpha must be non-negative, got {treg_alpha}")
        self.reduction, self.treg_alpha = reduction, treg_alpha  # set first: `_prepare_dataset` runs in __init__
        super().__init__(*args, **kwargs)
        require_sigmoid_loss(self)
        if not isinstance(self.data_collator, DataCollatorForPreference):
            raise ValueError(f"{type(self).__name__} lays out per-token columns as TRL's DataCollatorForPreference "
                             f"lays out the tokens; pass no data_collator")
        self.data_collator = TokenColumnsCollator(self.data_collator, rewards=treg_alpha > 0)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns += [c for c in self.extra_columns if c not in self._signature_columns]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if isinstance(dataset, Dataset):  # fail at construction, naming the row; the collator checks streamed rows
            columns = WEIGHT_COLUMNS + (REWARD_COLUMNS if self.treg_alpha > 0 else ())
            kept = ["prompt", "chosen_ids", "rejected_ids", *(c for c in columns if c in dataset.column_names)]
            for i, example in enumerate(dataset.select_columns(kept)):
                for column in columns:
                    token_values(example, column, f"row {i} of the {dataset_name} dataset "
                                                  f"(prompt {str(example['prompt'])[:60]!r})")
        return dataset

    def _precompute_ref_logps(self, dataset, name, batch_size):
        raise ValueError(f"{type(self).__name__} needs the reference's per-token log-probs, which "
                         f"precompute_ref_log_probs does not keep; set it to False")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        weights, rewards = inputs.pop("token_weights"), inputs.pop("token_rewards", None)
        reference = _RecordingForward(self.ref_model if self.ref_model is not None else self.model)
        inputs["ref_chosen_logps"], inputs["ref_rejected_logps"] = self.compute_ref_log_probs(reference, inputs)
        result, outputs = trl_loss_with_reference(self, model, inputs, return_outputs, num_items_in_batch)

        # as in TRL: log-probs of tokens 1.. (zero off the completion); the columns are laid out like tokens 0..
        mask = inputs["completion_mask"][:, 1:]
        seq_len = mask.size(1)
        policy_logps = outputs.log_probs[:, -seq_len:].chunk(2)
        ref_logps = reference.outputs.log_probs[:, -seq_len:].chunk(2)
        masks = mask.chunk(2)
        margin = token_weighted_margin(*policy_logps, *ref_logps, *masks, *weights[:, 1:].chunk(2),
                                       reduction=self.reduction)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["rewards/weighted_margins"].append(
            self.accelerator.gather(self.beta * margin.detach()).mean().item())
        if rewards is None:
            losses = -F.logsigmoid(self.beta * margin)
        else:
            reg_chosen, reg_rejected = (treg_regularizer(logps, r, m, self.beta)
                                        for logps, r, m in zip(policy_logps, rewards[:, 1:].chunk(2), masks,
                                                               strict=True))
            losses = treg_loss(margin, reg_chosen, reg_rejected, self.beta, self.treg_alpha)
            self._metrics[mode]["treg/regularizer"].append(
                self.accelerator.gather((reg_chosen + reg_rejected).detach()).mean().item())
        loss = losses.mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
        return (loss, result[1]) if return_outputs else loss
