"""GenCLS++ as the model's own judge: the classifier prompt under each option, label parsing and the rule reward,
label values, perplexity-based scores against a hand computation, the labelled seed data, the pairwise measure, and
the judge-training stage in a real run (SFT warm-up, GRPO, round 0's model replaced, resumable)."""

from __future__ import annotations

import math

import pytest
import torch

from selfalign import sandbox
from selfalign.config import ConfigError
from selfalign.rewards.gencls import (
    GenCLSConfig,
    GenCLSReward,
    check,
    label_logprobs,
    label_reward,
    label_values,
    parse_label,
    render,
    shown_label,
    shown_labels,
)

P, Y = "Q:1+2+3|S:", "1+2=3;3+3=6;A:6"


def test_render_plain_and_with_every_option():
    cfg = GenCLSConfig()
    assert render(cfg, P, Y) == "Q:1+2+3|S:1+2=3;3+3=6;A:6|Score:"
    cfg = GenCLSConfig(template="J {prompt} / {response} ->", labels=["wrong", "right"], numeric_labels=True,
                       uncertain=True, definitions={"right": "the answer is correct", "uncertain": "cannot tell"})
    ex = [{"prompt": "a", "response": "b", "label": "right"}, {"prompt": "c", "response": "d", "label": "wrong"}]
    assert render(cfg, P, Y, ex).split("\n") == [
        "1: the answer is correct", "uncertain: cannot tell", "J a / b ->1", "J c / d ->0", f"J {P} / {Y} ->"]
    assert shown_labels(cfg) == ["0", "1", "uncertain"]
    assert shown_label(cfg, "right") == "1" and shown_label(cfg, "uncertain") == "uncertain"
    with pytest.raises(ValueError):
        shown_label(cfg, "maybe")


def test_label_values():
    assert label_values(GenCLSConfig()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert label_values(GenCLSConfig(labels=["bad", "ok", "good"])) == [0.0, 0.5, 1.0]
    assert label_values(GenCLSConfig(labels=["no", "yes"], uncertain=True)) == [0.0, 1.0, 0.5]
    assert label_values(GenCLSConfig(labels=["no", "yes"], values=[-1, 3])) == [-1.0, 3.0]


def test_parse_label_and_the_rule_reward():
    labels = ["1", "12", "uncertain"]
    assert parse_label(" 12 because", labels) == 1  # the longest label it starts with
    assert parse_label("1", labels) == 0 and parse_label("x1", labels) is None and parse_label("", labels) is None
    assert label_reward("12", "12", labels) == 1.0
    assert label_reward("1", "12", labels) == 0.0
    assert label_reward("uncertain", "12", labels, uncertain_reward=0.3) == 0.3
    assert label_reward("no label", "12", labels, uncertain_reward=0.3) == 0.0


@pytest.mark.parametrize("values, message", [
    ({"template": "{prompt} only"}, "template"),
    ({"labels": ["a"]}, "labels"),
    ({"labels": ["a", "a"]}, "labels"),
    ({"labels": ["a", "uncertain"], "uncertain": True}, "labels"),
    ({"values": [1.0]}, "values"),
    ({"definitions": {"7": "no such label"}}, "definitions"),
    ({"decoding": "beam"}, "decoding"),
])
def test_check_names_the_key(values, message):
    with pytest.raises(ConfigError, match=f"rewards.gencls.{message}"):
        check(GenCLSConfig(**values))


class _Table(torch.nn.Module):
    """A 'model' whose next-token logits depend only on the last input token: logits = table[last token]."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))

    def forward(self, input_ids, attention_mask=None, **kwargs):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.table[input_ids])


def test_perplexity_scores_are_the_labels_log_likelihoods_and_the_reward_their_expected_value(tiny_model):
    from selfalign import models
    from selfalign.config import ModelConfig

    tok = models.load_tokenizer(tiny_model, ModelConfig(path=tiny_model))
    model = _Table(len(tok))
    cfg = GenCLSConfig(labels=["1", "23"], batch_size=1)
    prompt = render(cfg, P, Y)
    got = label_logprobs(model, tok, [prompt], ["1", "23"])
    last = tok(prompt)["input_ids"][-1]
    t1, t2, t3 = (tok(c, add_special_tokens=False)["input_ids"][0] for c in "123")
    logp = torch.log_softmax(model.table.detach(), dim=-1)
    want = [logp[last, t1], logp[last, t2] + logp[t2, t3]]  # "23": p(2 | ...) · p(3 | ...2)
    assert got[0].tolist() == pytest.approx([float(w) for w in want], abs=1e-5)
    out = GenCLSReward(model, tok, cfg).score([{"prompt": P}], [Y])
    p = torch.softmax(torch.tensor([float(w) for w in want]), 0)
    assert out.scores[0] == pytest.approx(float(p[0] * 1 + p[1] * 23), abs=1e-4)
    assert out.details[0]["label"] == ("1" if p[0] > p[1] else "23")


def test_labelled_sandbox_judge_data_are_the_seed_judge_examples():
    from selfalign.data.seed import load_judge_labels, load_seed_examples

    rows = load_judge_labels("sandbox://arith-judge", 64, 0)
    seed = load_seed_examples("sandbox://arith-judge", 64, 0)
    assert len(rows) == 64
    for r, e in zip(rows, seed, strict=True):
        assert e["prompt"] == sandbox.JUDGE_TEMPLATE.format(prompt=r["prompt"], response=r["response"])
        assert r["label"] == str(sandbox.score(r["prompt"], r["response"]))
    assert {r["label"] for r in rows} >= {"5", "2"}  # correct ones and planted errors
    with pytest.raises(ConfigError, match="arith-judge"):
        load_judge_labels("sandbox://arith", 4, 0)


def test_labelled_judgments_from_a_file_name_the_bad_row(tmp_path):
    from selfalign.data.seed import load_judge_labels

    f = tmp_path / "labels.jsonl"
    f.write_text('{"prompt": "a", "response": "b", "label": 1}\n{"prompt": "a", "response": "c"}\n')
    with pytest.raises(ConfigError, match="labels.jsonl: row 2.*label"):
        load_judge_labels(str(f), 10, 0)
    assert load_judge_labels(str(f), 1, 0) == [{"prompt": "a", "response": "b", "label": "1"}]


def test_pairwise_counts_ties_half():
    from selfalign.methods.gencls import pairwise

    groups = {"a": [(0.9, 5.0), (0.1, 2.0), (0.1, 3.0)], "b": [(0.5, 5.0), (0.5, 1.0)]}
    # any better label: a: 5>2 win, 5>3 win, 3>2 tie (0.5); b: tie (0.5) → 3/4
    assert pairwise(groups, lambda x, y: x > y) == pytest.approx(3 / 4)
    # top (5) vs the rest: a: 2 wins; b: a tie → 2.5 / 3
    assert pairwise(groups, lambda x, y: x == 5.0 and y < 5.0) == pytest.approx(2.5 / 3)
    assert pairwise({"a": [(1.0, 1.0)]}, lambda x, y: x > y) is None


def _recipe(tiny_model, **over):
    from tests.conftest import tiny_recipe

    return tiny_recipe(tiny_model, **{
        "rewards": {"gencls": {"batch_size": 16}}, "pairs.reward": "gencls",
        "gencls": {"max_examples": 12, "eval_examples": 4, "responses": "own", "own_samples": 2,
                   "policy_data": "sandbox://arith", "policy_examples": 8, "sft_epochs": 1, "sft_batch_size": 8,
                   "rl_max_examples": 8, "rl_batch_size": 8, "rl_num_generations": 4, "rl_learning_rate": 1e-3},
        **over})


def test_the_judge_training_stage_trains_round_0s_model_and_the_rounds_rank_by_it(tiny_model, tmp_path):
    from safetensors.torch import load_file

    from selfalign import pipeline
    from selfalign.artifacts import read_json, read_jsonl
    from selfalign.recipe import recipe_from_dict

    summary = pipeline.run(recipe_from_dict(_recipe(tiny_model)), tmp_path)
    info = read_json(tmp_path / "manifest.json")["stages"]["round_0/judge_train"]
    assert info["artifact"] == "round_0/judge_model"
    assert info["examples"] == 12 * 2 and info["held_out"] == 4 * 2  # 12 + 4 held-out prompts, 2 samples each
    assert set(info["before"]) == {"accuracy", "pairwise", "top_pairwise"} and info["after_rl"] is not None
    trained = load_file(str(tmp_path / "round_0/judge_model/model.safetensors"))
    base = load_file(str(next(__import__("pathlib").Path(tiny_model).glob("*.safetensors"))))
    assert any(not torch.equal(trained[k], base[k]) for k in base)  # the judge stage moved the weights
    assert not (tmp_path / "round_0/.parts/judge_train").exists()  # its scratch (SFT model, checkpoints) is gone
    rewards = read_jsonl(tmp_path / "round_1/rewards.jsonl")
    assert rewards and all(1.0 <= r["scores"]["gencls"] <= 5.0 for r in rewards)
    assert summary["rounds"][1]["train"]["steps"] >= 1


def test_a_killed_judge_stage_resumes_from_its_sft_model(tiny_model, tmp_path, monkeypatch):
    """Killed in GRPO (after the SFT model was saved): the rerun does not train SFT again, and finishes."""
    from selfalign import pipeline
    from selfalign.recipe import recipe_from_dict
    from selfalign.trainers import gencls as trainers_gencls
    from selfalign.trainers import sft

    recipe = recipe_from_dict(_recipe(tiny_model, rounds=0))

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainers_gencls, "train_label_grpo", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(recipe, tmp_path)
    assert (tmp_path / "round_0/.parts/judge_train/sft_model").is_dir()
    assert not (tmp_path / "round_0/judge_model").exists()
    monkeypatch.undo()
    calls = []
    real = sft.train_sft
    monkeypatch.setattr(sft, "train_sft", lambda *a, **k: calls.append(1) or real(*a, **k))
    pipeline.run(recipe, tmp_path)
    assert calls == [] and (tmp_path / "round_0/judge_model").is_dir()


def test_judge_training_checks_name_the_key(tiny_model):
    from selfalign.recipe import recipe_from_dict

    with pytest.raises(ConfigError, match="gencls.responses: own .*sandbox data"):
        recipe_from_dict(_recipe(tiny_model, **{"gencls.data": "labels.jsonl"}))
    with pytest.raises(ConfigError, match="rl_batch_size"):
        recipe_from_dict(_recipe(tiny_model, **{"gencls.rl_batch_size": 6}))
    with pytest.raises(ConfigError, match=r"arith-judge: label '\d' is not one of rewards.gencls.labels"):
        recipe_from_dict(_recipe(tiny_model, **{"gencls.responses": "data", "rewards.gencls.labels": ["1", "2"]}))


def test_example_mean_nll_weighs_every_example_the_same():
    from selfalign.trainers.losses import example_mean_nll

    logits = torch.zeros(2, 4, 3)  # uniform: every labelled token costs ln 3 ...
    logits[0, 0, 1] = math.log(2.0)  # ... but example 0's first target (token 1) has p = 2/4 = 1/2
    labels = torch.tensor([[-100, 1, 2, -100], [-100, -100, -100, 0]])  # example 0: 2 tokens, example 1: 1 token
    want_0 = (math.log(2.0) + math.log(3.0)) / 2
    want = (want_0 + math.log(3.0)) / 2  # the mean of the two examples' means, not of the three tokens
    assert float(example_mean_nll(logits, labels)) == pytest.approx(want, abs=1e-6)
    none = torch.full((1, 4), -100)
    assert float(example_mean_nll(logits[:1], none)) == 0.0  # no labelled token: a finite zero


def test_the_sandbox_recipe_trains_its_judge_and_one_round(tmp_path):
    """recipes/sandbox/gencls_judge.yaml itself at a small size: seed SFT, the judge-training stage (SFT warm-up and
    GRPO, measured before and after on held-out labelled samples), then one SRLM round ranked by the trained judge."""
    from selfalign import pipeline
    from selfalign.artifacts import read_json
    from selfalign.recipe import load_recipe

    recipe = load_recipe("recipes/sandbox/gencls_judge.yaml", [
        "rounds=1", "prompts.train_per_round=16", "prompts.eval_prompts=16", "seed_sft.max_examples=64",
        "gencls.max_examples=32", "gencls.eval_examples=8", "gencls.policy_examples=32", "gencls.sft_epochs=1",
        "gencls.rl_max_examples=16", "gencls.rl_batch_size=16", "tracking.wandb.enabled=false",
        "tracking.console=false"])
    summary = pipeline.run(recipe, tmp_path)
    stages = read_json(tmp_path / "manifest.json")["stages"]
    judge = stages["round_0/judge_train"]
    assert judge["examples"] == 32 * 4 and judge["held_out"] == 8 * 4
    assert all(judge[k]["top_pairwise"] is not None for k in ("before", "after_sft", "after_rl"))
    assert list(stages)[:3] == ["round_0/seed_sft", "round_0/judge_train", "round_0/eval"]
    assert summary["rounds"][1]["train"]["steps"] >= 1
    assert "gencls_pairwise_accuracy" in summary["rounds"][1]["rewards"]
