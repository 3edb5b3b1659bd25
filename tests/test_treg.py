"""T-REG in the pipeline on a tiny random model: token rewards from the frozen round-start model by contrastive
prompting, one per completion token as TRL tokenizes it (EOS included), equal to r̂_t on independent forwards; a
misaligned vector stops the pairs stage; `TokenWeightedDPOTrainer` trains with treg_alpha. Also the recipe errors of
the token-level options (treg and cdpo)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_recipe
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfalign import pipeline
from selfalign.artifacts import read_json, read_jsonl
from selfalign.config import ConfigError
from selfalign.methods import treg
from selfalign.methods.treg import TREGConfig
from selfalign.recipe import recipe_from_dict
from selfalign.scoring import token_logprobs
from selfalign.trainers.token_dpo import TokenAlignmentError, check_token_columns, preference_token_ids

TREG = {"alpha": 0.5, "better_template": "good {prompt}", "worse_template": "bad {prompt}"}


@pytest.fixture
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def test_token_rewards_are_sigmoid_of_the_contrast_on_trl_tokens(tiny_model, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    pairs = [{"prompt": "Q:1+2|S:", "chosen": "1+2=3;A:3", "rejected": "1+2=4;A:4"},
             {"prompt": "Q:10+5|S:", "chosen": "10+5=15;A:15", "rejected": "oops</s>"}]  # EOS already there
    cfg = TREGConfig(**TREG, batch_size=3)
    rows = treg.pair_token_rewards(model, tokenizer, pairs, [p["prompt"] for p in pairs], cfg)
    for p, row in zip(pairs, rows, strict=True):
        ids = preference_token_ids(tokenizer, p)
        for side in ("chosen", "rejected"):
            y = ids[f"{side}_ids"]
            assert len(row[f"{side}_token_rewards"]) == len(y) and y[-1] == tokenizer.eos_token_id
            better, worse = token_logprobs(model, [(tokenizer(f"{w} {p['prompt']}")["input_ids"], y)
                                                   for w in ("good", "bad")])
            expected = torch.sigmoid(better - worse) - 0.5
            torch.testing.assert_close(torch.tensor(row[f"{side}_token_rewards"]), expected, atol=1e-6, rtol=0)
    check_token_columns(tokenizer, [{**p, **r} for p, r in zip(pairs, rows, strict=True)], "test")


def test_a_misaligned_vector_is_refused(tokenizer):
    row = {"prompt": "Q:1+2|S:", "chosen": "1+2=3;A:3", "rejected": "1+2=4;A:4"}
    n = len(preference_token_ids(tokenizer, row)["chosen_ids"])
    check_token_columns(tokenizer, [{**row, "chosen_token_rewards": [0.1] * n}], "ok")
    with pytest.raises(TokenAlignmentError, match=r"round 1 pairs: pair 1 \(prompt 'Q:1\+2\|S:'\): "
                                                  rf"`chosen_token_rewards` has {n - 1} values but the chosen "
                                                  rf"completion has {n} tokens"):
        check_token_columns(tokenizer, [row, {**row, "chosen_token_rewards": [0.1] * (n - 1)}], "round 1 pairs")
    with pytest.raises(TokenAlignmentError, match="`rejected_weights` has"):
        check_token_columns(tokenizer, [{**row, "rejected_weights": [1.0] * (n + 5)}], "x")


def test_treg_round(tiny_model, tokenizer, tmp_path, monkeypatch):
    from selfalign.trainers.token_dpo import TokenWeightedDPOTrainer

    seen = []
    init = TokenWeightedDPOTrainer.__init__
    monkeypatch.setattr(TokenWeightedDPOTrainer, "__init__",
                        lambda self, *a, **k: seen.append(k["treg_alpha"]) or init(self, *a, **k))
    raw = tiny_recipe(tiny_model, **{"prompts.train_per_round": 4, "prompts.eval_prompts": 4, "treg": TREG,
                                     "tracking.wandb.enabled": False})
    summary = pipeline.run(recipe_from_dict(raw), tmp_path)
    pairs = read_jsonl(tmp_path / "round_1/pairs.jsonl")
    assert len(pairs) == 4 and seen == [0.5]
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()  # M_0, the frozen reference of round 1
    for p in pairs:
        ids = preference_token_ids(tokenizer, p)
        for side in ("chosen", "rejected"):
            y = ids[f"{side}_ids"]
            better, worse = token_logprobs(base, [(tokenizer(f"{w} {p['prompt']}")["input_ids"], y)
                                                  for w in ("good", "bad")])
            torch.testing.assert_close(torch.tensor(p[f"{side}_token_rewards"]), torch.sigmoid(better - worse) - 0.5,
                                       atol=1e-6, rtol=0)
    info, train = summary["rounds"][1]["pairs"], summary["rounds"][1]["train"]
    assert -0.5 < info["treg_chosen_reward_mean"] < 0.5 and "treg/regularizer" in train and train["steps"] == 1
    assert (tmp_path / "round_1/model/model.safetensors").exists()


def test_a_misaligned_reward_vector_stops_the_pairs_stage(tiny_model, tmp_path, monkeypatch):
    real = treg.pair_token_rewards

    def one_short(*args, **kwargs):
        rows = real(*args, **kwargs)
        rows[-1]["rejected_token_rewards"] = rows[-1]["rejected_token_rewards"][1:]  # e.g. a shifted slice
        return rows

    monkeypatch.setattr(treg, "pair_token_rewards", one_short)
    raw = tiny_recipe(tiny_model, **{"prompts.train_per_round": 4, "prompts.eval_prompts": 4, "treg": TREG,
                                     "tracking.wandb.enabled": False})
    with pytest.raises(TokenAlignmentError, match="round 1 pairs: pair 1 .*`rejected_token_rewards` has"):
        pipeline.run(recipe_from_dict(raw), tmp_path)
    assert not (tmp_path / "round_1/pairs.jsonl").exists()
    assert "round_1/pairs" not in read_json(tmp_path / "manifest.json")["stages"]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"treg": {"alpha": 0}}, "r.yaml: treg.alpha: 0.0 is out of range; must be > 0"),
    ({"treg": {"alpah": 0.1}}, "treg.alpah: unknown key; did you mean 'alpha'?"),
    ({"treg": {"better_template": "be good"}}, r"treg.better_template: missing \{prompt\}"),
    ({"treg": {"better_template": "{prompt}", "worse_template": "{prompt}"}},
     "treg.worse_template: equal to treg.better_template"),
    ({"treg": {}, "scir": {}, "rewards": {"judge": {"mode": "expected"}, "implicit": {}}, "pairs.reward": "judge"},
     r"treg: T-REG's DPO loss \(TokenWeightedDPOTrainer\) cannot be combined with SCIR's \(SCIRTrainer, scir\)"),
    ({"cdpo": {}, "consistency": {}, "rewards": {"implicit": {}}},
     r"cdpo: cDPO's DPO loss \(TokenWeightedDPOTrainer\) cannot be combined with CREAM's \(SoftLabelDPOTrainer, "
     r"consistency\); choose one"),
    ({"treg": {}, "pairs.label": "judge_strength", "rewards": {"judge": {"mode": "expected"}},
      "pairs.reward": "judge"}, r"treg: T-REG's DPO loss \(TokenWeightedDPOTrainer\) cannot be combined with OSP's"),
    ({"cdpo": {}, "train.dpo": {"loss_type": ["ipo"]}}, "train.dpo.loss_type: not supported with cdpo"),
    ({"cdpo": {}, "pairs.rule": "all_pairs"}, "cdpo: builds its own pairs"),
    ({"cdpo": {"reduction": "max"}}, "cdpo.reduction: 'max' is not allowed; expected one of 'sum', 'mean'"),
    ({"cdpo": {"grading": "oracle"}}, "cdpo.grading: 'oracle' is not allowed"),
    ({"cdpo": {"adapters": {"lora": {"r": 0}}}}, "cdpo.adapters.lora.r: 0 is out of range; must be >= 1"),
    ({"cdpo": {"adapters": {"learning_rate": -1}}}, "cdpo.adapters.learning_rate: -1.0 is out of range"),
    ({"cdpo": {"beta": -0.5}}, "cdpo.beta: -0.5 is out of range; must be >= 0"),
])
def test_recipe_errors(overrides, message):
    raw = tiny_recipe("unused", **overrides)
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict(raw, source="r.yaml")


def test_cdpo_needs_no_pairs_reward_and_both_may_combine():
    recipe = recipe_from_dict(tiny_recipe("unused", **{"cdpo": {}, "treg": {}, "rewards": {"verifier": {}},
                                                        "pairs.reward": "judge"}))
    assert recipe.cdpo.adapters.lora.r == 8 and recipe.cdpo.adapters.learning_rate == 3e-4
    assert recipe.cdpo.grading == "auto" and recipe.treg.alpha == 0.25
    assert "{prompt}" in recipe.treg.better_template and "concise" in recipe.treg.better_template
