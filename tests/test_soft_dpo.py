"""Tests of `SoftLabelDPOTrainer` on tiny random Llamas: with label 1 it is TRL's sigmoid DPO (with a reference
model, precomputed reference log-probs, or LoRA), label 0.5 has no gradient at h = 0, weights and labels act per
pair, TRL's metrics are kept, and `train_dpo` trains with it (LoRA, full fine-tuning, precomputed reference)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_model, trainable_weights_moved
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from selfalign.config import LoraOptions, TrainConfig
from selfalign.trainers.dpo import lora_config, train_dpo, train_stats
from selfalign.trainers.soft_dpo import PairColumnsCollator, SoftLabelDPOTrainer

ROWS = [
    {"prompt": "12+30=", "chosen": "42", "rejected": "7"},
    {"prompt": "5+5=", "chosen": "10", "rejected": "55"},
    {"prompt": "9-4=", "chosen": "5", "rejected": "13"},
    {"prompt": "7*3=", "chosen": "21", "rejected": "10 or so"},
]
TRL_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
               "logps/chosen", "logps/rejected")
LORA = LoraOptions(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> str:
    """A second tiny model with other weights: as reference it makes every margin h non-zero."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model_other"), seed=1)


def build(cls, policy: str, tmp_path, rows=ROWS, ref: str | None = None, lora: bool = False, **dpo):
    args = DPOConfig(output_dir=str(tmp_path / cls.__name__), beta=0.1, per_device_train_batch_size=len(rows),
                     report_to="none", use_cpu=True, bf16=False, save_strategy="no", disable_tqdm=True, **dpo)
    return cls(model=AutoModelForCausalLM.from_pretrained(policy),
               ref_model=AutoModelForCausalLM.from_pretrained(ref) if ref else None, args=args,
               train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(policy),
               peft_config=lora_config(LORA) if lora else None)


def batch(trainer, label=None, weight=None) -> dict:
    """All of the trainer's rows as one collated batch; `label`/`weight` override the collated columns."""
    out = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    if "label" in out:
        n = out["label"].numel()
        out["label"] = out["label"] if label is None else torch.as_tensor(label, dtype=torch.float32).expand(n)
        out["weight"] = out["weight"] if weight is None else torch.as_tensor(weight, dtype=torch.float32).expand(n)
    return trainer._prepare_inputs(out)


def perturb_lora(trainer, seed: int = 0):
    """LoRA's B starts at zero (policy = reference, h = 0); give it the same random values in every trainer."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))


def trainable_grads(trainer, loss) -> list[torch.Tensor]:
    trainer.model.zero_grad()
    loss.backward()
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    return [torch.zeros_like(p) if p.grad is None else p.grad for p in params]


def last_metrics(trainer) -> dict:
    """The TRL metrics of the last `compute_loss` call."""
    mode = "train" if trainer.model.training else "eval"
    return {k: trainer._metrics[mode][k][-1] for k in TRL_METRICS}


SETUPS = {
    "ref_model": {"ref": "other"},
    "precompute": {"ref": "other", "precompute_ref_log_probs": True},
    "lora": {"lora": True},
    "lora_precompute": {"lora": True, "precompute_ref_log_probs": True},
}


@pytest.mark.parametrize("setup", list(SETUPS))
def test_label_one_is_trl_sigmoid_dpo(setup, tiny_model, other_model, tmp_path):
    kwargs = {k: other_model if v == "other" else v for k, v in SETUPS[setup].items()}
    trl, soft = (build(cls, tiny_model, tmp_path, **kwargs) for cls in (DPOTrainer, SoftLabelDPOTrainer))
    if "lora" in setup:
        perturb_lora(trl), perturb_lora(soft)
    trl_loss = trl.compute_loss(trl.model, batch(trl))
    soft_loss = soft.compute_loss(soft.model, batch(soft, label=1.0, weight=1.0))
    assert abs(soft_loss.item() - math.log(2)) > 1e-3  # the margins are not all zero
    torch.testing.assert_close(soft_loss, trl_loss, atol=1e-5, rtol=0)
    trl_metrics, soft_metrics = last_metrics(trl), last_metrics(soft)
    assert soft_metrics == pytest.approx(trl_metrics, abs=1e-5)
    # L(label 0) − L(label 1) = mean(βh) (−log σ(−x) = −log σ(x) + x), which TRL logs as rewards/margins
    label0_loss = soft.compute_loss(soft.model, batch(soft, label=0.0))
    assert (label0_loss - soft_loss).item() == pytest.approx(trl_metrics["rewards/margins"], abs=1e-5)


@pytest.mark.parametrize("setup", ["ref_model", "lora"])
def test_label_half_has_no_gradient_at_initialisation(setup, tiny_model, tmp_path):
    kwargs = {"ref_model": {"ref": tiny_model}, "lora": {"lora": True}}[setup]  # policy = reference: h = 0
    trainer = build(SoftLabelDPOTrainer, tiny_model, tmp_path, **kwargs)
    loss = trainer.compute_loss(trainer.model, batch(trainer, label=0.5))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert max(g.abs().max().item() for g in trainable_grads(trainer, loss)) < 1e-7  # dL/dh = β(σ(0) − 0.5) = 0
    loss = trainer.compute_loss(trainer.model, batch(trainer, label=1.0))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert max(g.abs().max().item() for g in trainable_grads(trainer, loss)) > 1e-4  # dL/dh = −β/2


def test_labels_and_weights_act_per_pair(tiny_model, other_model, tmp_path):
    trainer = build(SoftLabelDPOTrainer, tiny_model, tmp_path, ref=other_model)

    def loss(label, weight) -> float:
        return trainer.compute_loss(trainer.model, batch(trainer, label, weight)).item()

    n = len(ROWS)
    one_hot = torch.eye(n) * n  # weight n on pair i alone: the batch mean is pair i's loss
    hard = [loss(1.0, one_hot[i]) for i in range(n)]  # −log σ(βh_i)
    flipped = [loss(0.0, one_hot[i]) for i in range(n)]  # −log σ(−βh_i)
    assert loss(1.0, 1.0) == pytest.approx(sum(hard) / n, abs=1e-6)
    assert loss(1.0, 2.0) == pytest.approx(2 * loss(1.0, 1.0), abs=1e-6)
    weights = [1.0, 2.0, 0.0, 3.0]
    assert loss(1.0, weights) == pytest.approx(sum(w * h for w, h in zip(weights, hard, strict=True)) / n, abs=1e-6)
    labels = [1.0, 0.0, 0.5, 0.25]
    expected = sum(c * h + (1 - c) * f for c, h, f in zip(labels, hard, flipped, strict=True)) / n
    assert loss(labels, 1.0) == pytest.approx(expected, abs=1e-6)


def test_collator_adds_label_and_weight():
    collator = PairColumnsCollator(lambda examples: {})
    out = collator([{"label": 0.25, "weight": 2}, {"label": None}, {}])
    assert out["label"].tolist() == [0.25, 1.0, 1.0] and out["weight"].tolist() == [2.0, 1.0, 1.0]
    assert out["label"].dtype == out["weight"].dtype == torch.float32
    with pytest.raises(ValueError, match="labels must lie in"):
        collator([{"label": 1.5}])
    with pytest.raises(ValueError, match="weights must be non-negative"):
        collator([{"weight": -1.0}])


def test_label_and_weight_reach_the_batches(tiny_model, tmp_path):
    rows = [{**r, "label": i / 10, "weight": float(i)} for i, r in enumerate(ROWS)]
    trainer = build(SoftLabelDPOTrainer, tiny_model, tmp_path, rows=rows, ref=tiny_model)
    (only,) = list(trainer.get_train_dataloader())  # through Trainer's column removal and the collator
    got = sorted(zip(only["label"].tolist(), only["weight"].tolist(), strict=True))
    assert got == [(pytest.approx(i / 10), float(i)) for i in range(len(ROWS))]


def test_evaluate_on_a_new_dataset(tiny_model, other_model, tmp_path):
    # the reference log-probs of a dataset given to `evaluate` are precomputed with the wrapped collator's batches
    trainer = build(SoftLabelDPOTrainer, tiny_model, tmp_path, ref=other_model, precompute_ref_log_probs=True)
    hard = trainer.evaluate(Dataset.from_list(ROWS))
    flipped = trainer.evaluate(Dataset.from_list([{**r, "label": 0.0} for r in ROWS]))
    assert flipped["eval_rewards/margins"] == pytest.approx(hard["eval_rewards/margins"])
    assert flipped["eval_loss"] - hard["eval_loss"] == pytest.approx(hard["eval_rewards/margins"], abs=1e-5)


def test_other_loss_types_are_refused(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="loss_type"):
        build(SoftLabelDPOTrainer, tiny_model, tmp_path, ref=tiny_model, loss_type=["ipo"])


@pytest.mark.parametrize("setup", ["lora", "full", "full_precompute"])
def test_train_dpo_with_soft_labels(setup, tiny_model, tmp_path):
    weights = [1.0, 0.5, 2.0, 1.0]
    rows = [{**r, "label": label, "weight": weight}
            for r, label, weight in zip(ROWS, [1.0, 0.8, 0.6, 0.9], weights, strict=True)]
    cfg = TrainConfig(learning_rate=1e-3, batch_size=2, beta=0.1, lora=LORA if setup == "lora" else None,
                      dpo={"precompute_ref_log_probs": True} if setup == "full_precompute" else {})
    ref = None if setup == "lora" else AutoModelForCausalLM.from_pretrained(tiny_model)
    trainer = train_dpo(AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model),
                        rows, cfg, tmp_path / "out", seed=0, ref_model=ref, trainer_cls=SoftLabelDPOTrainer)
    assert isinstance(trainer, SoftLabelDPOTrainer)
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert len(steps) == 2  # 4 pairs, batch 2, one epoch
    assert all(key in h for h in steps for key in TRL_METRICS)
    # first step: policy = reference, every pair's loss is log 2, so the loss is the mean weight of 2 pairs × log 2
    pair_means = {(a + b) / 2 for i, a in enumerate(weights) for b in weights[i + 1:]}
    assert min(abs(steps[0]["loss"] / math.log(2) - m) for m in pair_means) < 1e-4
    stats = train_stats(trainer.state.log_history)
    assert all(math.isfinite(stats[k]) for k in ("loss", "rewards/margins", "rewards/accuracies"))
    assert trainable_weights_moved(trainer, tiny_model, setup == "lora")
