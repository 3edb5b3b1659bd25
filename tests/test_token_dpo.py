"""Tests of `TokenWeightedDPOTrainer` on tiny random Llamas: `preference_token_ids` is TRL's tokenization, all-1
weights are TRL's sigmoid DPO (with a reference model or LoRA), weights, both reductions and T-REG rewards give the
pure losses on log-probs computed independently, misaligned columns are refused naming the row, truncation cuts the
columns with the tokens, and `train_dpo` trains with it."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from conftest import make_tiny_model, trainable_weights_moved
from datasets import Dataset
from test_soft_dpo import perturb_lora
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from selfalign.config import LoraOptions, TrainConfig
from selfalign.scoring import token_logprobs
from selfalign.trainers.dpo import lora_config, train_dpo
from selfalign.trainers.losses import token_weighted_margin, treg_loss, treg_regularizer
from selfalign.trainers.token_dpo import TokenWeightedDPOTrainer, preference_token_ids

ROWS = [
    {"prompt": "12+30=", "chosen": "42", "rejected": "7"},
    {"prompt": "5+5=", "chosen": "10</s>", "rejected": "55"},  # EOS already there: TRL appends none
    {"prompt": "9-4=", "chosen": "5", "rejected": "13"},
    {"prompt": "7*3=", "chosen": "21", "rejected": "10 or so"},
]
TRL_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
               "logps/chosen", "logps/rejected")
LORA = LoraOptions(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
BETA = 0.1


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> str:
    """A second tiny model with other weights: as reference it makes every margin h non-zero."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model_other"), seed=1)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def build(cls, policy: str, tmp_path, rows=ROWS, ref: str | None = None, lora: bool = False, tokenizer=None,
          trainer_kwargs=None, **dpo):
    args = DPOConfig(output_dir=str(tmp_path / cls.__name__), beta=BETA, per_device_train_batch_size=len(rows),
                     report_to="none", use_cpu=True, bf16=False, save_strategy="no", disable_tqdm=True, **dpo)
    return cls(model=AutoModelForCausalLM.from_pretrained(policy),
               ref_model=AutoModelForCausalLM.from_pretrained(ref) if ref else None, args=args,
               train_dataset=Dataset.from_list(rows),
               processing_class=tokenizer or AutoTokenizer.from_pretrained(policy),
               peft_config=lora_config(LORA) if lora else None, **(trainer_kwargs or {}))


def batch(trainer) -> dict:
    """All of the trainer's rows as one collated batch, in dataset order."""
    return trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i]
                                                          for i in range(len(trainer.train_dataset))]))


def with_columns(rows, tokenizer, seed: int = 0, weights: bool = True, rewards: bool = False) -> list[dict]:
    """`rows` with random per-token weights in [0, 2) and T-REG rewards in (−0.5, 0.5), aligned to TRL's tokens."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for row in rows:
        ids = preference_token_ids(tokenizer, row)
        row = dict(row)
        for side in ("chosen", "rejected"):
            n = len(ids[f"{side}_ids"])
            if weights:
                row[f"{side}_weights"] = (2 * torch.rand(n, generator=gen)).tolist()
            if rewards:
                row[f"{side}_token_rewards"] = (torch.rand(n, generator=gen) - 0.5).tolist()
        out.append(row)
    return out


def expected_loss(trainer, tokenizer, rows, reduction="sum", alpha=0.0) -> float:
    """The pure loss, pair by pair, on per-token log-probs from plain forwards (`scoring.token_logprobs`)."""
    model, sides = trainer.model, ("chosen", "rejected")
    losses = []
    for row in rows:
        ids = preference_token_ids(tokenizer, row)
        pairs = [(ids["prompt_ids"], ids[f"{side}_ids"]) for side in sides]
        policy = [lp[None] for lp in token_logprobs(model, pairs)]
        if trainer.ref_model is not None:
            ref = [lp[None] for lp in token_logprobs(trainer.ref_model, pairs)]
        else:  # LoRA: the reference is the base model, the adapter disabled
            with model.disable_adapter():
                ref = [lp[None] for lp in token_logprobs(model, pairs)]
        masks = [torch.ones_like(lp) for lp in policy]
        weights = [torch.tensor([row.get(f"{side}_weights") or [1.0] * lp.size(1)])
                   for side, lp in zip(sides, policy, strict=True)]
        margin = token_weighted_margin(*policy, *ref, *masks, *weights, reduction=reduction)
        regs = [treg_regularizer(lp, torch.tensor([row.get(f"{side}_token_rewards") or [0.0] * lp.size(1)]), m, BETA)
                for side, lp, m in zip(sides, policy, masks, strict=True)]
        losses.append(treg_loss(margin, *regs, BETA, alpha))
    return torch.cat(losses).mean().item()


def test_preference_token_ids_are_trl_tokenization(tiny_model, tokenizer, tmp_path):
    trainer = build(DPOTrainer, tiny_model, tmp_path, ref=tiny_model)
    for i, row in enumerate(ROWS):
        prepared = trainer.train_dataset[i]
        ids = preference_token_ids(tokenizer, row)
        assert ids == {k: prepared[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
        assert ids["chosen_ids"][-1] == ids["rejected_ids"][-1] == tokenizer.eos_token_id
    assert len(preference_token_ids(tokenizer, ROWS[0])["chosen_ids"]) == 3  # "4", "2", EOS
    assert len(preference_token_ids(tokenizer, ROWS[1])["chosen_ids"]) == 3  # "1", "0", the row's own EOS


def test_preference_token_ids_conversational(tiny_model, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    rows = [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in ROWS[:2]]
    trainer = build(DPOTrainer, tiny_model, tmp_path, rows=rows, ref=tiny_model, tokenizer=tok)
    for i, row in enumerate(rows):
        ids = preference_token_ids(tok, row)
        assert ids == {k: trainer.train_dataset[i][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
    assert tok.decode(preference_token_ids(tok, rows[0])["chosen_ids"]) == "42\n"  # the template's end, no EOS


@pytest.mark.parametrize("setup", ["ref_model", "lora"])
@pytest.mark.parametrize("columns", ["absent", "ones"])
def test_unit_weights_are_trl_sigmoid_dpo(setup, columns, tiny_model, other_model, tokenizer, tmp_path):
    kwargs = {"ref_model": {"ref": other_model}, "lora": {"lora": True}}[setup]
    rows = ROWS if columns == "absent" else [
        {**r, **{f"{s}_weights": [1.0] * len(ids[f"{s}_ids"]) for s in ("chosen", "rejected")}}
        for r, ids in ((r, preference_token_ids(tokenizer, r)) for r in ROWS)]
    trl = build(DPOTrainer, tiny_model, tmp_path, **kwargs)
    ours = build(TokenWeightedDPOTrainer, tiny_model, tmp_path, rows=rows, **kwargs)
    if setup == "lora":
        perturb_lora(trl), perturb_lora(ours)
    trl_loss = trl.compute_loss(trl.model, batch(trl))
    our_loss = ours.compute_loss(ours.model, batch(ours))
    assert abs(our_loss.item() - math.log(2)) > 1e-3  # the margins are not all zero
    torch.testing.assert_close(our_loss, trl_loss, atol=1e-5, rtol=0)
    mode = "train" if trl.model.training else "eval"
    for key in TRL_METRICS:
        assert ours._metrics[mode][key][-1] == pytest.approx(trl._metrics[mode][key][-1], abs=1e-5)
    assert ours._metrics[mode]["rewards/weighted_margins"][-1] == pytest.approx(
        trl._metrics[mode]["rewards/margins"][-1], abs=1e-5)


@pytest.mark.parametrize("setup", ["ref_model", "lora"])
@pytest.mark.parametrize(("reduction", "alpha"), [("sum", 0.0), ("mean", 0.0), ("sum", 0.5), ("mean", 0.25)])
def test_loss_is_the_pure_loss_on_independent_logps(setup, reduction, alpha, tiny_model, other_model, tokenizer,
                                                    tmp_path):
    # the per-token columns meet the log-probs of the tokens they were computed for: no shift, EOS included
    rows = with_columns(ROWS, tokenizer, rewards=alpha > 0)
    kwargs = {"ref_model": {"ref": other_model}, "lora": {"lora": True}}[setup]
    trainer = build(TokenWeightedDPOTrainer, tiny_model, tmp_path, rows=rows,
                    trainer_kwargs={"reduction": reduction, "treg_alpha": alpha}, **kwargs)
    if setup == "lora":
        perturb_lora(trainer)
    loss = trainer.compute_loss(trainer.model, batch(trainer)).item()
    assert loss == pytest.approx(expected_loss(trainer, tokenizer, rows, reduction, alpha), abs=1e-5)
    if alpha > 0:
        assert trainer._metrics["train" if trainer.model.training else "eval"]["treg/regularizer"]


def test_misaligned_weights_are_refused_naming_the_row(tiny_model, tokenizer, tmp_path):
    rows = with_columns(ROWS, tokenizer)
    rows[2]["rejected_weights"] = rows[2]["rejected_weights"][:-1]  # e.g. computed without the appended EOS
    with pytest.raises(ValueError, match=r"row 2 of the train dataset \(prompt '9-4='\): `rejected_weights` has 2 "
                                         r"values but the rejected completion has 3 tokens"):
        build(TokenWeightedDPOTrainer, tiny_model, tmp_path, rows=rows, ref=tiny_model)


def test_collator_refuses_misaligned_and_negative_columns(tiny_model, tokenizer, tmp_path):
    trainer = build(TokenWeightedDPOTrainer, tiny_model, tmp_path, rows=with_columns(ROWS, tokenizer),
                    ref=tiny_model)
    examples = [dict(trainer.train_dataset[i]) for i in range(2)]
    examples[1]["chosen_weights"] = examples[1]["chosen_weights"] + [1.0]
    with pytest.raises(ValueError, match="pair 1 of the batch: `chosen_weights` has 4 values"):
        trainer.data_collator(examples)
    examples[1]["chosen_weights"] = [-1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="negative token weights"):
        trainer.data_collator(examples)


def test_treg_needs_token_rewards(tiny_model, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="row 0 .* no `chosen_token_rewards`; treg_alpha > 0"):
        build(TokenWeightedDPOTrainer, tiny_model, tmp_path, rows=with_columns(ROWS, tokenizer), ref=tiny_model,
              trainer_kwargs={"treg_alpha": 0.1})


def test_refused_settings(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="precompute_ref_log_probs"):
        build(TokenWeightedDPOTrainer, tiny_model, tmp_path, ref=tiny_model, precompute_ref_log_probs=True)
    with pytest.raises(ValueError, match="loss_type"):
        build(TokenWeightedDPOTrainer, tiny_model, tmp_path, ref=tiny_model, loss_type=["ipo"])
    with pytest.raises(ValueError, match="unknown reduction"):
        build(TokenWeightedDPOTrainer, tiny_model, tmp_path, ref=tiny_model, trainer_kwargs={"reduction": "max"})


def test_evaluate_on_a_new_dataset(tiny_model, other_model, tokenizer, tmp_path):
    trainer = build(TokenWeightedDPOTrainer, tiny_model, tmp_path, rows=with_columns(ROWS, tokenizer, rewards=True),
                    ref=other_model, trainer_kwargs={"reduction": "mean", "treg_alpha": 0.5})
    rows = with_columns(ROWS, tokenizer, seed=1, rewards=True)
    rows[1]["chosen_weights"] = None  # all 1
    metrics = trainer.evaluate(Dataset.from_list(rows))
    assert metrics["eval_loss"] == pytest.approx(expected_loss(trainer, tokenizer, rows, "mean", 0.5), abs=1e-5)
    rows[3]["chosen_token_rewards"] = rows[3]["chosen_token_rewards"][1:]
    with pytest.raises(ValueError, match="row 3 of the eval dataset"):
        trainer.evaluate(Dataset.from_list(rows))


@pytest.mark.parametrize("truncation_mode", ["keep_start", "keep_end"])
def test_truncation_cuts_the_columns_with_the_tokens(truncation_mode, tiny_model, tokenizer, tmp_path):
    rows = with_columns(ROWS, tokenizer)
    max_length = 7  # cuts "7*3=" + "10 or so</s>" (13 tokens) and "12+30=" + "42</s>" (9 tokens)
    trainer = build(TokenWeightedDPOTrainer, tiny_model, tmp_path, rows=rows, ref=tiny_model, max_length=max_length,
                    truncation_mode=truncation_mode)
    out = batch(trainer)
    n = len(rows)
    for half, side in enumerate(("chosen", "rejected")):
        for i, row in enumerate(rows):
            ids = preference_token_ids(tokenizer, row)
            full_ids = ids["prompt_ids"] + ids[f"{side}_ids"]
            full_weights = [0.0] * len(ids["prompt_ids"]) + row[f"{side}_weights"]
            cut = slice(None, max_length) if truncation_mode == "keep_start" else slice(-max_length, None)
            kept = len(full_ids[cut])
            assert out["input_ids"][half * n + i, :kept].tolist() == full_ids[cut]
            torch.testing.assert_close(out["token_weights"][half * n + i, :kept], torch.tensor(full_weights[cut]))
            assert (out["token_weights"][half * n + i, kept:] == 0).all()
            on_completion = out["completion_mask"][half * n + i].bool()
            assert (out["token_weights"][half * n + i][~on_completion] == 0).all()


@pytest.mark.parametrize(("setup", "reduction", "alpha"),
                         [("lora", "sum", 0.0), ("lora", "mean", 0.5), ("full", "mean", 0.0), ("full", "sum", 0.25)])
def test_train_dpo_with_token_columns(setup, reduction, alpha, tiny_model, tokenizer, tmp_path):
    rows = with_columns(ROWS, tokenizer, rewards=alpha > 0)
    cfg = TrainConfig(learning_rate=1e-3, batch_size=2, beta=BETA, lora=LORA if setup == "lora" else None)
    ref = None if setup == "lora" else AutoModelForCausalLM.from_pretrained(tiny_model)
    trainer_cls = functools.partial(TokenWeightedDPOTrainer, reduction=reduction, treg_alpha=alpha)
    trainer = train_dpo(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer, rows, cfg, tmp_path / "out",
                        seed=0, ref_model=ref, trainer_cls=trainer_cls)
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert len(steps) == 2  # 4 pairs, batch 2, one epoch
    extra = ("rewards/weighted_margins",) + (("treg/regularizer",) if alpha > 0 else ())
    assert all(key in h and math.isfinite(h[key]) for h in steps for key in TRL_METRICS + extra)
    assert trainable_weights_moved(trainer, tiny_model, setup == "lora")
