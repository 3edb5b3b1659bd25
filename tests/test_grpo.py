"""GRPO with internal rewards (methods/grpo.py, trainers/grpo.py, trainers/reward_functions.py,
rewards/repetition.py): the pure measures, one TRL GRPO step on the tiny random model per registered reward, the live
policy behind self-certainty, a reward given by import path, the penalties, and GRPO rounds with their resume."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe

from selfalign import models, pipeline
from selfalign.artifacts import read_json, read_jsonl
from selfalign.data.prompts import load_prompts
from selfalign.recipe import recipe_from_dict
from selfalign.rewards import REWARDS
from selfalign.rewards.majority import MajorityConfig, majority_match
from selfalign.rewards.repetition import (
    LengthPenalty,
    RepetitionPenalty,
    completion_stats,
    distinct_n,
    repeated_ngram_fraction,
    unique_share,
)
from selfalign.rewards.self_certainty import response_certainty
from selfalign.sandbox.tokenizer import build_char_tokenizer
from selfalign.trainers.reward_functions import RegistryRewardFunction

#: every registered reward GRPO can use (the others need a second model)
# rewards that need a second model or a round's inputs (infalign: tests/test_infalign.py) are tested elsewhere
SOURCES = [name for name, spec in REWARDS.items() if not {"reference", "inputs"} & set(spec.needs)]

# ---------------------------------------------------------------------------------------------
# pure measures


def test_repeated_ngram_fraction_and_distinct_n_by_hand():
    # bigrams of 1 2 1 2 1 2: (1,2) (2,1) (1,2) (2,1) (1,2): 5 n-grams, 2 unique
    assert repeated_ngram_fraction([1, 2, 1, 2, 1, 2], 2) == pytest.approx(1 - 2 / 5)
    assert repeated_ngram_fraction([1, 2, 3, 4, 5], 2) == 0.0
    assert repeated_ngram_fraction([1, 2], 4) == 0.0  # no 4-gram at all
    assert repeated_ngram_fraction([7] * 10, 4) == pytest.approx(1 - 1 / 7)
    # over a set: bigrams (1,2) (2,3) | (1,2) (2,4) → 3 unique of 4
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)
    assert distinct_n([[1], [2]], 2) is None
    assert unique_share(["a", "a", "b", "a"]) == 0.5


def test_completion_stats_by_hand():
    stats = completion_stats([[1, 2, 1, 2], [3, 4, 5], [3, 4, 5]], ["x", "y", "y"], ["p", "q", "q"],
                             [False, True, False], n=2)
    assert stats["completions"] == 3
    assert stats["tokens_mean"] == pytest.approx(10 / 3)
    assert stats["truncated"] == pytest.approx(1 / 3)
    assert stats["seq_rep_2"] == pytest.approx((1 - 2 / 3 + 0 + 0) / 3)  # (1,2) (2,1) (1,2): 2 unique of 3
    assert stats["distinct_2"] == pytest.approx(4 / 7)  # (1,2) (2,1) (3,4) (4,5) unique among 7
    assert stats["unique_per_group"] == pytest.approx((1.0 + 0.5) / 2)
    assert completion_stats([], [], [], []) == {"completions": 0}


def test_majority_match_and_the_grouped_reward():
    assert majority_match(["5", "6", "5", None]) == [1.0, 0.0, 1.0, 0.0]
    assert majority_match(["6", "5", "5", "6"]) == [1.0, 0.0, 0.0, 1.0]  # tie: the answer seen first
    assert majority_match([None, None]) == [0.0, 0.0]
    completions = ["1+2=3;A:3", "A:3", "A:4", "no answer", "A:9", "A:9"]
    ids = ["a", "a", "a", "b", "b", "b"]
    tokenizer = build_char_tokenizer()
    match = RegistryRewardFunction(REWARDS["majority"], MajorityConfig(score="match"), tokenizer)
    completion_ids = [tokenizer(c)["input_ids"] for c in completions]
    assert match(["p"] * 6, completions, completion_ids, prompt_id=ids) == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    share = RegistryRewardFunction(REWARDS["majority"], MajorityConfig(), tokenizer)
    assert share(["p"] * 6, completions, completion_ids, prompt_id=ids) == pytest.approx(
        [2 / 3, 2 / 3, 1 / 3, 0.0, 2 / 3, 2 / 3])


def test_penalties_by_hand():
    tok = build_char_tokenizer()
    rows = [{"prompt": "p", "prompt_text": "p"}] * 2

    def scores(reward, token_ids):
        return reward.score(rows[: len(token_ids)], ["c"] * len(token_ids), [([], y) for y in token_ids]).scores

    assert scores(RepetitionPenalty(tok, 2), [[1, 2, 1, 2, 1, 2]]) == [pytest.approx(-0.6)]
    assert scores(RepetitionPenalty(tok, 4), [[1, 2, 3]]) == [0.0]
    assert scores(LengthPenalty(tok, 10), [[1, 2, 3], list(range(10))]) == [-0.3, -1.0]
    # without sampled tokens, the response text's tokens (6 characters)
    assert LengthPenalty(tok, 10).score(rows[:1], ["abcabc"]).scores == [pytest.approx(-0.6)]


# ---------------------------------------------------------------------------------------------
# one TRL GRPO step on the tiny model


def _recipe(tiny_model: str, rewards: list[dict], grpo: dict | None = None, **overrides):
    raw = tiny_recipe(tiny_model, **{
        "train": {"algorithm": "grpo", "learning_rate": 1e-3, "batch_size": 8, "grpo_rewards": rewards,
                  "grpo": {"max_steps": 1, "gradient_checkpointing": False, **(grpo or {})}},
        "generation.max_new_tokens": 12, "rewards": {"judge": {"mode": "expected", "template": "sandbox"}},
        "tracking.wandb.enabled": False, **overrides})
    return recipe_from_dict(raw)


def _train(tiny_model: str, tmp_path: Path, rewards: list[dict], grpo: dict | None = None):
    from selfalign.trainers.grpo import train_grpo

    recipe = _recipe(tiny_model, rewards, grpo)
    tokenizer = models.load_tokenizer(tiny_model, recipe.model)
    model = models.load_model(tiny_model, recipe.model)
    rows = [{**r, "prompt_text": r["prompt"]} for r in load_prompts("sandbox://arith?terms=3&digits=2", limit=4).rows]
    return train_grpo(model, tokenizer, rows, recipe, tmp_path / "trainer", seed=0), tokenizer


#: rewards that cannot score the tiny model's completions (Lastde needs a log-prob sequence that varies: the random
#: model's ≤ 12 near-uniform log-probs fall in one histogram bin at every scale, so every score is None)
UNSCORED_HERE = {"lastde"}


@pytest.mark.parametrize("source", list(SOURCES))
def test_one_grpo_step_with_each_source(tiny_model, tmp_path, source):
    trainer, _ = _train(tiny_model, tmp_path, [{"source": source}])
    assert trainer.state.global_step == 1
    (logged,) = [h for h in trainer.state.log_history if "loss" in h]
    assert f"rewards/{source}/mean" in logged
    assert len(trainer.rollouts) == 8  # 2 prompts × 4 completions
    for r in trainer.rollouts:
        if source in UNSCORED_HERE:
            assert r["scores"][source] is None  # None, not 0: the reward protocol's "could not score it"
        else:
            assert isinstance(r["scores"][source], float)
        assert r["prompt"].startswith("Q:") and isinstance(r["correct"], bool)
        assert r["finish_reason"] in ("eos", "length") and len(r["token_ids"]) <= 12
    if source not in UNSCORED_HERE:
        assert logged[f"rewards/{source}/mean"] == pytest.approx(
            sum(r["scores"][source] for r in trainer.rollouts) / 8, abs=1e-5)
    by_prompt: dict = {}
    for r in trainer.rollouts:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    assert sorted(len(v) for v in by_prompt.values()) == [4, 4]  # whole groups


def test_self_certainty_scores_with_the_live_policy(tiny_model, tmp_path):
    """Step-0 rewards are the starting policy's certainty of the sampled tokens; after training, the same function
    reads the trained weights (it holds the trainer, not a copy of the model)."""
    trainer, tokenizer = _train(tiny_model, tmp_path, [{"source": "self_certainty"}],
                                {"max_steps": 2, "loss_type": "grpo"})
    fn = trainer.reward_funcs[0]
    first = [r for r in trainer.rollouts if r["step"] == 0]
    pairs = [(tokenizer(r["prompt"])["input_ids"], r["token_ids"]) for r in first]
    initial = models.load_model(tiny_model, recipe_from_dict({}).model).eval()
    assert [r["scores"]["self_certainty"] for r in first] == pytest.approx(response_certainty(initial, pairs),
                                                                            abs=1e-5)
    trainer.model.train()
    now = fn([r["prompt"] for r in first], [r["response"] for r in first], [r["token_ids"] for r in first])
    assert trainer.model.training  # the function restores the mode it found
    assert now == pytest.approx(response_certainty(trainer.model.eval(), pairs), abs=1e-5)
    assert max(abs(a - b) for a, b in zip(now, response_certainty(initial, pairs), strict=True)) > 1e-6


def test_weighted_sum_with_the_penalties(tiny_model, tmp_path):
    rewards = [{"source": "self_certainty", "weight": 1.0}, {"source": "repetition", "weight": 0.5, "ngram": 2},
               {"source": "length", "weight": 0.25}]
    trainer, _ = _train(tiny_model, tmp_path, rewards)
    (logged,) = [h for h in trainer.state.log_history if "loss" in h]
    expected = (logged["rewards/self_certainty/mean"] + 0.5 * logged["rewards/repetition/mean"]
                + 0.25 * logged["rewards/length/mean"])
    assert logged["reward"] == pytest.approx(expected, abs=1e-5)
    for r in trainer.rollouts:
        assert r["scores"]["repetition"] == pytest.approx(-repeated_ngram_fraction(r["token_ids"], 2))
        assert r["scores"]["length"] == pytest.approx(-len(r["token_ids"]) / 12)


def test_reward_given_by_import_path(tiny_model, tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        seen = []

        def shortness(prompts, completions, completion_ids, prompt_id, user_prompt, answer, trainer_state, **kwargs):
            seen.append({"prompt_id": prompt_id, "user_prompt": user_prompt, "answer": answer})
            return [-float(len(ids)) for ids in completion_ids]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    trainer, _ = _train(tiny_model, tmp_path, [{"source": "my_rewards:shortness", "weight": 2.0}])
    import my_rewards

    (call,) = my_rewards.seen
    assert len(call["prompt_id"]) == 8 and all(u.startswith("Q:") for u in call["user_prompt"])
    assert all(a is not None for a in call["answer"])
    for r in trainer.rollouts:
        assert r["scores"]["shortness"] == -len(r["token_ids"])


# ---------------------------------------------------------------------------------------------
# GRPO rounds of the engine


@pytest.fixture(scope="module")
def grpo_round(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo_run")
    raw = tiny_recipe(tiny_model, **{
        "train": {"algorithm": "grpo", "learning_rate": 1e-3, "batch_size": 8,
                  "grpo_rewards": [{"source": "self_certainty"}, {"source": "majority", "weight": 0.5},
                                   {"source": "repetition", "weight": 0.1}],
                  "grpo": {"gradient_checkpointing": False}},
        "generation.max_new_tokens": 16, "tracking.wandb.enabled": False})
    summary = pipeline.run(recipe_from_dict(raw), out)
    return out, summary


def test_grpo_round_writes_the_model_rollouts_and_stats(grpo_round, tiny_model):
    from safetensors.torch import load_file

    out, summary = grpo_round
    for name in ("round_1/model/model.safetensors", "round_1/rollouts.jsonl", "round_1/eval.json"):
        assert (out / name).exists(), name
    for name in ("generations.jsonl", "rewards.jsonl", "pairs.jsonl"):
        assert not (out / "round_1" / name).exists()
    assert set(read_json(out / "manifest.json")["stages"]) == {"round_0/eval", "round_1/train", "round_1/eval"}
    before = load_file(str(Path(tiny_model) / "model.safetensors"))
    after = load_file(str(out / "round_1/model/model.safetensors"))
    assert any(not before[k].equal(after[k]) for k in before)

    rollouts = read_jsonl(out / "round_1/rollouts.jsonl")
    assert len(rollouts) == 8 * 4  # every prompt of the round, once per epoch, G = 4 completions each
    train = summary["rounds"][1]["train"]
    assert train["steps"] == 4
    expected = completion_stats([r["token_ids"] for r in rollouts], [r["response"] for r in rollouts],
                                [r["prompt_id"] for r in rollouts], [r["finish_reason"] == "length" for r in rollouts])
    for key in ("tokens_mean", "truncated", "seq_rep_4", "distinct_4", "unique_per_group"):
        assert train[f"rollout_{key}"] == pytest.approx(expected[key]), key
    last = [r for r in rollouts if r["step"] == 3]
    assert train["rollout_completions_last"] == len(last) == 8
    assert train["rollout_seq_rep_4_last"] == pytest.approx(
        sum(repeated_ngram_fraction(r["token_ids"]) for r in last) / 8)
    assert train["rollout_accuracy"] == pytest.approx(sum(r["correct"] for r in rollouts) / 32)
    for key in ("loss", "reward", "reward_self_certainty", "reward_majority", "reward_repetition"):
        assert f"{key}_first" in train and f"{key}_last" in train, key

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [0, 1]
    for key in ("train/rollout_seq_rep_4", "train/rollout_tokens_mean", "train/reward_self_certainty",
                "eval/accuracy_sampled", "time/train"):
        assert key in metrics[1], key


def test_grpo_rerun_recomputes_nothing(grpo_round):
    out, _ = grpo_round
    files = [*out.glob("round_*/*.jsonl"), *out.glob("round_*/model/*")]
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    raw = yaml.safe_load((out / "recipe.yaml").read_text())
    pipeline.run(recipe_from_dict(raw), out)
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes


def test_grpo_lora_rounds_chain_and_start_from_the_previous_model(tiny_model, tmp_path):
    """Round 2 samples its first group from M_1 (base + round 1's adapter, merged): the recorded step-0
    self-certainty of round 2 equals M_1's."""
    raw = tiny_recipe(tiny_model, **{
        "rounds": 2, "prompts.train_per_round": 4, "prompts.eval_prompts": 4, "generation.max_new_tokens": 12,
        "train": {"algorithm": "grpo", "learning_rate": 1e-2, "batch_size": 8,
                  "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                  "grpo_rewards": [{"source": "self_certainty"}], "grpo": {"gradient_checkpointing": False}},
        "tracking.wandb.enabled": False})
    recipe = recipe_from_dict(raw)
    pipeline.run(recipe, tmp_path)
    for t in (1, 2):
        assert (tmp_path / f"round_{t}/adapter/adapter_config.json").exists()
        assert not (tmp_path / f"round_{t}/model").exists()
    tokenizer = models.load_tokenizer(tiny_model, recipe.model)
    m1 = models.load_round_model(recipe.model, tmp_path, 1).eval()
    base = models.load_round_model(recipe.model, tmp_path, 0).eval()
    first = [r for r in read_jsonl(tmp_path / "round_2/rollouts.jsonl") if r["step"] == 0]
    pairs = [(tokenizer(r["prompt"])["input_ids"], r["token_ids"]) for r in first]
    recorded = [r["scores"]["self_certainty"] for r in first]
    assert recorded == pytest.approx(response_certainty(m1, pairs), abs=1e-5)
    assert recorded != pytest.approx(response_certainty(base, pairs), abs=1e-5)


def test_grpo_kl_reference_is_the_previous_model(tiny_model, tmp_path):
    """With train.grpo.beta > 0 and full fine-tuning, TRL's reference is M_{t-1}: the KL at each round's first
    step, before any update, is 0."""
    raw = tiny_recipe(tiny_model, **{
        "rounds": 2, "prompts.train_per_round": 4, "prompts.eval_prompts": 4, "generation.max_new_tokens": 12,
        "train": {"algorithm": "grpo", "learning_rate": 1e-2, "batch_size": 8,
                  "grpo_rewards": [{"source": "self_certainty"}],
                  "grpo": {"beta": 0.1, "gradient_checkpointing": False}},
        "tracking.wandb.enabled": False})
    summary = pipeline.run(recipe_from_dict(raw), tmp_path)
    for t in (1, 2):
        train = summary["rounds"][t]["train"]
        assert train["kl_first"] == pytest.approx(0.0, abs=1e-6)
        assert train["kl_last"] > 1e-6  # the policy moved away from it within the round
