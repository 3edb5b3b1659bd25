"""SCIR training (Zhou et al. 2025, https://arxiv.org/abs/2502.08922): soft-label DPO on the pairs where the
judge and the implicit reward agree, plus a consistency and a confidence term between their predictions, on
TRL's `DPOTrainer` (via `SoftLabelDPOTrainer`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from selfalign.rewards.preference import judge_probability
from selfalign.scoring import left_pad, option_logits
from selfalign.trainers.losses import scir_regularizer, symmetric_bernoulli_kl
from selfalign.trainers.soft_dpo import PAIR_COLUMNS, SoftLabelDPOTrainer

JUDGE_COLUMNS = ("judge_1", "judge_2")  # the judge's two prompts for the pair (texts)
ANCHOR_COLUMNS = ("reward0_chosen", "reward0_rejected")  # implicit rewards r(y) at the start of the round


@dataclass
class JudgeColumnsCollator:
    """Adds the tokenized judge prompts of each pair and the round-start implicit rewards to the batch.

    judge_input_ids / judge_attention_mask: all pairs' `judge_1` prompts, then all `judge_2` prompts, left-padded.
    Shape: (2 * batch_size, width). reward0_chosen / reward0_rejected: Shape: (batch_size), float32.
    """

    collator: Any
    tokenizer: Any

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        texts = [ex["judge_1"] for ex in examples] + [ex["judge_2"] for ex in examples]
        ids, mask = left_pad([self.tokenizer(t)["input_ids"] for t in texts], self.tokenizer.pad_token_id or 0)
        batch["judge_input_ids"], batch["judge_attention_mask"] = ids, mask
        for key in ANCHOR_COLUMNS:
            batch[key] = torch.tensor([float(ex[key]) for ex in examples], dtype=torch.float32)
        return batch


class SCIRTrainer(SoftLabelDPOTrainer):
    """Loss = mean_i w_i · soft-DPO_i + mean_i [λ_cons · SKL(p_J,i ‖ p_I,i) + λ_conf · H(½(p_J,i + p_I,i))].

    w_i is 1 on pairs where the two reward models agreed at the start of the round and 0 elsewhere (the pairs
    stage sets it), so DPO uses only agreed pairs while both added terms act on every row. Per step and per pair:
    - p_J: the live policy as judge, from the option logits of the pair's two judge prompts (`judge_probability`);
    - p_I = σ(r_θ(y_w) − r_θ(y_l)) with r_θ(y) = r_0(y) + β_I · [log π_θ(y) − log π_ref(y)]: the round-start
      implicit reward r_0 against the fixed anchor (from the reward stage) plus the change since the start of the
      round, which TRL's DPO margin h already holds, so r_θ(y_w) − r_θ(y_l) = r_0(y_w) − r_0(y_l) + β_I · h.
    """

    extra_columns = (*PAIR_COLUMNS, *JUDGE_COLUMNS, *ANCHOR_COLUMNS)
    extra_batch_keys = (*PAIR_COLUMNS, *ANCHOR_COLUMNS, "judge_input_ids", "judge_attention_mask")

    def __init__(self, *args, judge_format: str, option_ids: list[int], implicit_beta: float,
                 lambda_cons: float, lambda_conf: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.judge_format, self.option_ids = judge_format, list(option_ids)
        self.implicit_beta, self.lambda_cons, self.lambda_conf = implicit_beta, lambda_cons, lambda_conf
        self.data_collator = JudgeColumnsCollator(self.data_collator, self.processing_class)

    def extra_loss(self, model, inputs: dict, extras: dict, margin: torch.Tensor) -> torch.Tensor:
        logits = option_logits(model, extras["judge_input_ids"], extras["judge_attention_mask"], self.option_ids)
        p_judge = judge_probability(self.judge_format, *logits.chunk(2))
        p_implicit = torch.sigmoid(extras["reward0_chosen"] - extras["reward0_rejected"] + self.implicit_beta * margin)
        reg = scir_regularizer(p_judge, p_implicit, self.lambda_cons, self.lambda_conf)

        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        with torch.no_grad():
            for key, value in (("scir/p_judge", p_judge), ("scir/p_implicit", p_implicit),
                               ("scir/agreement", ((p_judge > 0.5) == (p_implicit > 0.5)).float()),
                               ("scir/inconsistency", symmetric_bernoulli_kl(p_judge, p_implicit)),
                               ("scir/regularizer", reg)):
                self._metrics[mode][key].append(gather(value.detach()).mean().item())
        return reg.mean()
