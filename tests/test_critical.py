"""cDPO in the pipeline on a tiny random model: positive and negative adapters share one copy of the base weights,
are saved and reloaded (not retrained) on resume, score the rejected tokens as `critical_token_scores` does on
independent forwards, and a whole cDPO round (both reductions) writes what it should and trains
`TokenWeightedDPOTrainer` with the rejected weights 1 − s_t.

The tiny random model never writes a sandbox solution, so the round's samples come from a stand-in for `generate`:
for each prompt, correct solutions and solutions with a planted error (eval keeps the real `generate`)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import tiny_recipe
from transformers import AutoModelForCausalLM, AutoTokenizer

import selfalign.model_store as store_module
from selfalign import pipeline, sandbox
from selfalign.artifacts import read_json, read_jsonl
from selfalign.config import LoraOptions
from selfalign.generation import Sample
from selfalign.generation import generate as real_generate
from selfalign.methods import cdpo as critical
from selfalign.methods.cdpo import CDPOConfig, ContrastAdaptersConfig
from selfalign.recipe import recipe_from_dict
from selfalign.rewards.contrastive import critical_token_scores
from selfalign.rewards.verifier import extract_answer
from selfalign.trainers.token_dpo import TokenWeightedDPOTrainer, preference_token_ids

CFG = CDPOConfig(adapters=ContrastAdaptersConfig(lora=LoraOptions(r=4, alpha=8), learning_rate=1e-2, batch_size=4))
PROMPTS = ["Q:47+38+15|S:", "Q:12+30+9|S:"]


def planted_samples(model, tokenizer, prompts, *, num_samples=1, **kwargs):
    """Samples 0, 3, ... are the correct solution; the others carry one of two planted errors."""
    if num_samples == 1:
        return real_generate(model, tokenizer, prompts, num_samples=num_samples, **kwargs)
    out = []
    for p in prompts:
        texts = [sandbox.solve(p) if k % 3 == 0 else sandbox.plant_error(p, k % 2)[0] for k in range(num_samples)]
        out.append([Sample(y, tokenizer(y)["input_ids"], [0.0] * (len(y) + 1), "eos") for y in texts])
    return out


@pytest.fixture
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def examples():
    positive = [{"prompt": p, "completion": sandbox.solve(p)} for p in PROMPTS] * 2
    negative = [{"prompt": p, "completion": sandbox.plant_error(p, k)[0]} for p in PROMPTS for k in range(2)]
    return positive, negative


def flat(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([v for row in rows for v in row])


def wrong_pairs():
    return [{"prompt": p, "chosen": sandbox.solve(p), "rejected": sandbox.plant_error(p, 0)[0]} for p in PROMPTS]


def test_adapters_share_one_copy_of_the_base_weights(tiny_model, tokenizer, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    pointers = {n: p.data_ptr() for n, p in base.named_parameters()}
    reference = AutoModelForCausalLM.from_pretrained(tiny_model)
    model, info = critical.contrast_model(base, tokenizer, *examples(), CFG, tmp_path, seed=0)
    assert (info["positive_examples"], info["negative_examples"]) == (4, 4)
    assert set(model.peft_config) == {"positive", "negative"}
    shared = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
              for n, p in model.named_parameters() if "lora_" not in n}
    assert {n: p.data_ptr() for n, p in shared.items()} == pointers  # the very tensors of `base`: one copy
    assert sum(p.numel() for p in shared.values()) == sum(p.numel() for p in reference.parameters())
    assert all(not p.requires_grad for p in shared.values())
    ids = torch.tensor([tokenizer(PROMPTS[0] + sandbox.solve(PROMPTS[0]))["input_ids"]])
    with torch.no_grad():
        outs = {}
        for name in ("positive", "negative"):
            model.set_adapter(name)
            outs[name] = model(input_ids=ids).logits
        with model.disable_adapter():
            outs["base"] = model(input_ids=ids).logits
        torch.testing.assert_close(outs["base"], reference(input_ids=ids).logits)
    assert not torch.allclose(outs["positive"], outs["negative"])
    assert not torch.allclose(outs["positive"], outs["base"])


def test_scores_match_independent_forwards_and_resume_loads_the_adapters(tiny_model, tokenizer, tmp_path,
                                                                        monkeypatch):
    from peft import PeftModel

    model, _ = critical.contrast_model(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer, *examples(), CFG,
                                       tmp_path, seed=0)
    pairs = wrong_pairs()
    scores = critical.rejected_token_scores(model, tokenizer, pairs, beta=1.0, batch_size=1)
    for p, s in zip(pairs, scores, strict=True):  # each model on its own, no padding
        ids = preference_token_ids(tokenizer, p)
        x, y = ids["prompt_ids"], ids["rejected_ids"]
        assert len(s) == len(y)
        logits = []
        for name in ("positive", "negative"):
            m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(tmp_path / name))
            with torch.no_grad():
                logits.append(m(input_ids=torch.tensor([x + y])).logits[:, len(x) - 1 : -1])
        expected = critical_token_scores(*logits, torch.tensor([y]), beta=1.0)[0]
        torch.testing.assert_close(torch.tensor(s), expected, atol=2e-6, rtol=0)
    batched = critical.rejected_token_scores(model, tokenizer, pairs, beta=1.0, batch_size=8)  # right padding
    torch.testing.assert_close(flat(batched), flat(scores), atol=2e-6, rtol=0)

    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/adapter_model.safetensors")}
    monkeypatch.setattr("selfalign.trainers.sft.train_sft", lambda *a, **k: pytest.fail("retrained an adapter"))
    again, info = critical.contrast_model(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer, *examples(),
                                          CFG, tmp_path, seed=0)
    assert info["positive_loss"] is not None and len(mtimes) == 2
    torch.testing.assert_close(flat(critical.rejected_token_scores(again, tokenizer, pairs, 1.0, 8)), flat(batched))
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/adapter_model.safetensors")} == mtimes


def test_a_killed_run_trains_only_the_missing_adapter(tiny_model, tokenizer, tmp_path, monkeypatch):
    import shutil

    critical.contrast_model(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer, *examples(), CFG, tmp_path, 0)
    shutil.rmtree(tmp_path / "negative")
    trained = []
    from selfalign.trainers import sft

    real = sft.train_sft
    monkeypatch.setattr(sft, "train_sft", lambda model, *a, **k: trained.append(model.active_adapter) or real(
        model, *a, **k))
    model, _ = critical.contrast_model(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer, *examples(), CFG,
                                       tmp_path, 0)
    assert trained == ["negative"] and (tmp_path / "negative" / "adapter_config.json").exists()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".negative." in n for n in trainable)  # the loaded positive adapter was not trained


@pytest.fixture
def spy_trainer(monkeypatch):
    seen = []
    init = TokenWeightedDPOTrainer.__init__

    def spying_init(self, *args, **kwargs):
        seen.append({"reduction": kwargs.get("reduction", "sum"), "treg_alpha": kwargs.get("treg_alpha", 0.0),
                     "rows": kwargs["train_dataset"]})
        init(self, *args, **kwargs)

    monkeypatch.setattr(TokenWeightedDPOTrainer, "__init__", spying_init)
    return seen


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_cdpo_round(reduction, tiny_model, tokenizer, tmp_path, monkeypatch, spy_trainer):
    monkeypatch.setattr(store_module, "generate", planted_samples)
    raw = tiny_recipe(tiny_model, **{
        "prompts.train_per_round": 4, "prompts.eval_prompts": 4, "generation.samples_per_prompt": 6,
        "rewards": {"majority": {}}, "train.lora": {"r": 4, "alpha": 8}, "tracking.wandb.enabled": False,
        "cdpo": {"adapters": {"lora": {"r": 4, "alpha": 8}, "learning_rate": 1e-2, "batch_size": 8},
                 "reduction": reduction}})
    summary = pipeline.run(recipe_from_dict(raw), tmp_path)
    r1 = tmp_path / "round_1"
    for name in ("positive", "negative"):
        assert (r1 / "cdpo" / name / "adapter_model.safetensors").exists()
    assert (r1 / "adapter" / "adapter_model.safetensors").exists() and (r1 / "eval.json").exists()
    assert not list(r1.glob("cdpo/.*"))  # no temporary adapter or trainer dirs left

    gens, pairs = read_jsonl(r1 / "generations.jsonl"), read_jsonl(r1 / "pairs.jsonl")
    info = summary["rounds"][1]["pairs"]
    correct = [sandbox.verify(g["prompt"], g["response"]) for g in gens]
    assert info["grading"] == "verifier" and info["kept"] == len(pairs) == 4
    assert (info["positive_examples"], info["negative_examples"]) == (sum(correct), len(gens) - sum(correct))
    for p in pairs:
        samples = [g["response"] for g in gens if g["prompt_id"] == p["prompt_id"]]
        wrong = Counter(extract_answer(y) for y in samples if not sandbox.verify(p["prompt"], y))
        assert sandbox.verify(p["prompt"], p["chosen"]) and not sandbox.verify(p["prompt"], p["rejected"])
        assert p["rejected_answer"] == wrong.most_common(1)[0][0] and p["rejected_count"] == max(wrong.values())
        n = len(preference_token_ids(tokenizer, p)["rejected_ids"])
        assert len(p["rejected_token_scores"]) == len(p["rejected_weights"]) == n
        assert p["rejected_weights"] == pytest.approx([1 - s for s in p["rejected_token_scores"]], abs=2e-6)
        assert "chosen_weights" not in p  # 1 on every chosen token
    (trained,) = spy_trainer
    assert trained["reduction"] == reduction and trained["treg_alpha"] == 0.0
    assert trained["rows"]["rejected_weights"] == [p["rejected_weights"] for p in pairs]
    train = summary["rounds"][1]["train"]
    assert train["steps"] == 1 and "rewards/weighted_margins" in train
    assert "round_1/pairs" in read_json(tmp_path / "manifest.json")["stages"]
    assert not (r1 / ".parts" / "pairs").exists()  # the chunked scores are cleared once the stage is done
