"""`SCIRTrainer` on tiny random Llamas: with both weights 0 it is soft-label DPO; the added term equals SCIR's
regulariser computed by hand from separate forward passes (pointwise and pairwise judges); the judge path gets
gradients on pairs DPO ignores; `option_logits` ignores padding; a training run logs the SCIR metrics."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model
from datasets import Dataset
from test_soft_dpo import LORA, perturb_lora, trainable_grads
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig

from selfalign.config import TrainConfig
from selfalign.rewards.preference import judge_probability
from selfalign.scoring import left_pad, option_logits, sequence_logprobs, single_token_ids
from selfalign.trainers.dpo import lora_config, train_dpo, train_stats
from selfalign.trainers.losses import scir_regularizer
from selfalign.trainers.scir import SCIRTrainer
from selfalign.trainers.soft_dpo import SoftLabelDPOTrainer

QA = [("Q:12+30|S:", "42", "7"), ("Q:5+5|S:", "10", "55"), ("Q:9+4|S:", "13", "5"), ("Q:7+3|S:", "10", "1")]


def rows(judge_format: str, weight=(1.0, 0.0, 1.0, 1.0)) -> list[dict]:
    out = []
    for (q, c, r), w, r0 in zip(QA, weight, (0.3, -0.2, 1.5, 0.0), strict=True):
        if judge_format == "pointwise":
            j1, j2 = f"{q}{c}|Score:", f"{q}{r}|Score:"
        else:
            j1, j2 = f"{q} A:{c} B:{r} Better:", f"{q} A:{r} B:{c} Better:"
        out.append({"prompt": q, "chosen": c, "rejected": r, "label": 1.0, "weight": w,
                    "judge_1": j1, "judge_2": j2, "reward0_chosen": r0, "reward0_rejected": 0.1})
    return out


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> str:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model_ref"), seed=3)


OPTIONS = {"pointwise": ["1", "2", "3", "4", "5"], "pairwise": ["A", "B"]}


def build(cls, policy, tmp_path, data, ref=None, lora=False, judge_format="pointwise", **scir):
    tok = AutoTokenizer.from_pretrained(policy)
    args = DPOConfig(output_dir=str(tmp_path / cls.__name__), beta=0.1, per_device_train_batch_size=len(data),
                     report_to="none", use_cpu=True, bf16=False, save_strategy="no", disable_tqdm=True)
    kwargs = {}
    if cls is SCIRTrainer:
        kwargs = {"judge_format": judge_format, "option_ids": single_token_ids(tok, "x", OPTIONS[judge_format], "t"),
                  "implicit_beta": 0.5, "lambda_cons": 1.0, "lambda_conf": 0.1, **scir}
    return cls(model=AutoModelForCausalLM.from_pretrained(policy),
               ref_model=AutoModelForCausalLM.from_pretrained(ref) if ref else None, args=args,
               train_dataset=Dataset.from_list(data), processing_class=tok,
               peft_config=lora_config(LORA) if lora else None, **kwargs)


def full_batch(trainer) -> dict:
    ds = trainer.train_dataset
    return trainer._prepare_inputs(trainer.data_collator([ds[i] for i in range(len(ds))]))


def hand_regularizer(policy, ref, tok, data, judge_format, implicit_beta=0.5, lambda_cons=1.0, lambda_conf=0.1):
    """SCIR's term from scratch: unpadded judge forwards and TRL-tokenized sequence log-probs."""
    ids = single_token_ids(tok, "x", OPTIONS[judge_format], "t")
    pj = []
    for row in data:
        logits = []
        for text in (row["judge_1"], row["judge_2"]):
            x = torch.tensor([tok(text)["input_ids"]])
            logits.append(policy(input_ids=x).logits[:, -1, ids])
        pj.append(judge_probability(judge_format, *logits))
    pj = torch.cat(pj)
    prompts = [r["prompt"] for r in data]
    logp = {(m, k): torch.stack([x.sum() for x in sequence_logprobs(model, tok, prompts, [r[k] for r in data])])
            for m, model in (("pol", policy), ("ref", ref)) for k in ("chosen", "rejected")}
    h = (logp["pol", "chosen"] - logp["ref", "chosen"]) - (logp["pol", "rejected"] - logp["ref", "rejected"])
    r0 = torch.tensor([r["reward0_chosen"] - r["reward0_rejected"] for r in data])
    pi = torch.sigmoid(r0 + implicit_beta * h)
    return scir_regularizer(pj, pi, lambda_cons, lambda_conf).mean()


@pytest.mark.parametrize("judge_format", ["pointwise", "pairwise"])
def test_scir_loss_is_soft_dpo_plus_the_regularizer(judge_format, tiny_model, other_model, tmp_path):
    data = rows(judge_format)
    soft = build(SoftLabelDPOTrainer, tiny_model, tmp_path, data, ref=other_model)
    scir = build(SCIRTrainer, tiny_model, tmp_path, data, ref=other_model, judge_format=judge_format)
    zero = build(SCIRTrainer, tiny_model, tmp_path, data, ref=other_model, judge_format=judge_format,
                 lambda_cons=0.0, lambda_conf=0.0)
    soft_loss = soft.compute_loss(soft.model, full_batch(soft))
    torch.testing.assert_close(zero.compute_loss(zero.model, full_batch(zero)), soft_loss, atol=1e-6, rtol=0)
    with torch.no_grad():
        expected = hand_regularizer(scir.model, scir.ref_model, scir.processing_class, data, judge_format)
    total = scir.compute_loss(scir.model, full_batch(scir))
    assert expected.item() > 1e-3
    torch.testing.assert_close(total - soft_loss, expected, atol=1e-5, rtol=1e-5)
    mode = "train" if scir.model.training else "eval"
    metrics = {k: v[-1] for k, v in scir._metrics[mode].items() if k.startswith("scir/")}
    assert set(metrics) == {"scir/p_judge", "scir/p_implicit", "scir/agreement", "scir/inconsistency",
                            "scir/regularizer"}
    assert metrics["scir/regularizer"] == pytest.approx(expected.item(), abs=1e-5)


def test_regularizer_trains_the_judge_on_pairs_dpo_ignores(tiny_model, tmp_path):
    data = rows("pointwise", weight=(0.0, 0.0, 0.0, 0.0))
    trainer = build(SCIRTrainer, tiny_model, tmp_path, data, lora=True)
    perturb_lora(trainer)
    loss = trainer.compute_loss(trainer.model, full_batch(trainer))
    grads = trainable_grads(trainer, loss)
    assert max(g.abs().max().item() for g in grads) > 1e-5
    no_reg = build(SCIRTrainer, tiny_model, tmp_path, data, lora=True, lambda_cons=0.0, lambda_conf=0.0)
    perturb_lora(no_reg)
    loss = no_reg.compute_loss(no_reg.model, full_batch(no_reg))
    assert loss.item() == 0.0


def test_option_logits_ignore_left_padding(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["Q:1+2|S:3|Score:", "Q:12+30+44|S:86|Score:"]
    ids = [tok(t)["input_ids"] for t in texts]
    batch_ids, mask = left_pad(ids, tok.pad_token_id)
    options = single_token_ids(tok, "x", ["1", "2", "3"], "t")
    with torch.no_grad():
        batched = option_logits(model, batch_ids, mask, options)
        alone = torch.cat([model(input_ids=torch.tensor([x])).logits[:, -1, options] for x in ids])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not a single token"):
        single_token_ids(tok, "x", ["10"], "scir.options")


def test_train_dpo_with_scir_logs_its_metrics(tiny_model, tmp_path):
    cfg = TrainConfig(beta=0.1, learning_rate=1e-3, epochs=2, batch_size=2, lora=LORA)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    trainer = train_dpo(AutoModelForCausalLM.from_pretrained(tiny_model), tok, rows("pairwise"), cfg,
                        tmp_path / "out", seed=0, trainer_cls=SCIRTrainer,
                        trainer_kwargs={"judge_format": "pairwise", "implicit_beta": 0.1, "lambda_cons": 1.0,
                                        "option_ids": single_token_ids(tok, "x", ["A", "B"], "t"), "lambda_conf": 0.1})
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 4 and all("scir/p_judge" in h and "rewards/margins" in h for h in logged)
    assert train_stats(trainer.state.log_history)["steps"] == 4


@pytest.mark.parametrize(("template", "probs", "expected"), [
    # srlm, 0..5: y1 = 5 surely; y2 = 0 (½) or 5 (½): P(S1 > S2) + ½P(=) = ½ + ½·½ = 0.75
    ("srlm", ([0, 0, 0, 0, 0, 1.0], [0.5, 0, 0, 0, 0, 0.5]), 0.75),
    # sandbox, 1..5: y1 = 2 or 4 (½ each); y2 = 3 surely: ½
    ("sandbox", ([0, 0.5, 0, 0.5, 0], [0, 0, 1.0, 0, 0]), 0.5),
    # sandbox: y1 = 4 surely; y2 = 1 (¼) or 4 (¾): ¼ + ½·¾ = 0.625
    ("sandbox", ([0, 0, 0, 1.0, 0], [0.25, 0, 0, 0.75, 0]), 0.625),
])
def test_pointwise_p_judge_reads_the_judges_score_range(template, probs, expected):
    """SCIR's pointwise P_J from the two samples' score distributions over the judge template's range; a pair's
    orientation comes from pairs.reward (here the judge score, y1 the higher)."""
    from types import SimpleNamespace

    from selfalign.methods.scir import SCIR, SCIRConfig
    from selfalign.rewards.judge import JudgeConfig
    from selfalign.sandbox.tokenizer import build_char_tokenizer

    row = {"id": "0", "prompt": "Q:1+2|S:", "prompt_text": "Q:1+2|S:"}
    samples = [{"response": f"1+2=3;A:{k}", "scores": {"implicit": r, "judge": s},
                "details": {"judge": {"score_probs": p}}}
               for k, (r, s, p) in enumerate([(0.3, 4.0, probs[0]), (0.1, 2.0, probs[1])])]
    recipe = SimpleNamespace(
        scir=SCIRConfig(judge_format="pointwise"),
        pairs=SimpleNamespace(reward="judge", max_pairs_per_prompt=None),
        rewards=SimpleNamespace(judge=JudgeConfig(mode="expected", template=template), implicit=SimpleNamespace()))
    ctx = SimpleNamespace(store=SimpleNamespace(tokenizer=build_char_tokenizer()))
    pairs, stats = SCIR(recipe).build_pairs(ctx, 1, {"p": {"row": row, "samples": samples}})
    assert stats["candidates"] == 1
    # implicit: σ(0.3 − 0.1) > 0.5 prefers y1, as the judge does when expected > 0.5
    assert [(q["chosen_sample"], q["rejected_sample"]) for q in pairs] == [(0, 1)]
    assert pairs[0]["p_judge"] == pytest.approx(expected)
    # details from a judge of the other range are refused, not misread
    other = [0.2] * 5 if len(probs[0]) == 6 else [1 / 6] * 6
    samples[1]["details"]["judge"]["score_probs"] = other
    with pytest.raises(ValueError, match="score probabilities for the"):
        SCIR(recipe).build_pairs(ctx, 1, {"p": {"row": row, "samples": samples}})
