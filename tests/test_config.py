"""Tests of the recipe schema: YAML loading, defaults, one-line errors, `--set` overrides and the CLI end."""

from __future__ import annotations

import math

import pytest

from selfalign.config import ConfigError, LoraOptions
from selfalign.recipe import Recipe, load_recipe, migrate_saved, recipe_differences, recipe_from_dict
from selfalign.rewards.judge import JudgeConfig
from selfalign.rewards.likelihood import LikelihoodConfig
from selfalign.sandbox.config import SandboxModelConfig


def write(tmp_path, text: str, name: str = "recipe.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(fn, *args, **kwargs) -> str:
    """The message of the ConfigError `fn(*args)` raises; also checks it is one line."""
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.strip() == msg and msg
    return msg


# ---------------------------------------------------------------------------------------------
# loading and defaults


def test_empty_file_gives_all_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, ""))
    assert recipe == Recipe()
    assert recipe.model.path == "sandbox"
    assert recipe.model.dtype == "float32"
    assert recipe.rounds == 3
    assert recipe.generation.samples_per_prompt == 4
    assert recipe.generation.temperature == 0.7
    assert recipe.generation.top_p == 0.9
    assert recipe.generation.stop == []
    assert recipe.rewards.enabled() == ["judge"]  # the default reward is the LLM judge
    assert recipe.rewards.judge == JudgeConfig()
    assert recipe.pairs.reward == "judge"
    assert recipe.train.lora is None and recipe.train.dpo == {}
    assert recipe.tracking.wandb.mode == "auto"


def test_values_from_the_file_override_defaults_and_keep_the_rest(tmp_path):
    text = """
model:
  path: /models/x
  dtype: bfloat16
rounds: 2
generation:
  temperature: 1.0
  stop: ["###", "\\n\\n"]
rewards:
  likelihood: {normalize: false}
  implicit: {}
pairs:
  reward: implicit
  min_margin: 0.25
train:
  learning_rate: 1e-6
  lora: {r: 8}
"""
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.model.path == "/models/x" and recipe.model.dtype == "bfloat16"
    assert recipe.rounds == 2
    assert recipe.generation.temperature == 1.0
    assert recipe.generation.top_p == 0.9  # untouched default
    assert recipe.generation.stop == ["###", "\n\n"]
    # Giving `rewards` replaces the default (judge) with exactly the configured ones.
    assert recipe.rewards.enabled() == ["likelihood", "implicit"]
    assert recipe.rewards.likelihood == LikelihoodConfig(normalize=False)
    assert recipe.rewards.implicit.beta == 1.0 and recipe.rewards.implicit.reference == "base"
    assert recipe.pairs.min_margin == 0.25
    # YAML 1.1 reads 1e-6 (no dot) as a string; the float field converts it.
    assert recipe.train.learning_rate == 1e-6 and isinstance(recipe.train.learning_rate, float)
    assert recipe.train.lora == LoraOptions(r=8, alpha=32, dropout=0.0, target_modules="all-linear")


def test_int_is_accepted_for_a_float_field_and_converted():
    recipe = recipe_from_dict({"generation": {"temperature": 1}})
    assert recipe.generation.temperature == 1.0 and isinstance(recipe.generation.temperature, float)


def test_missing_file_is_a_config_error(tmp_path):
    msg = config_error(load_recipe, tmp_path / "nope.yaml")
    assert "nope.yaml" in msg and "cannot read recipe" in msg


def test_recipe_must_be_a_mapping(tmp_path):
    msg = config_error(load_recipe, write(tmp_path, "- 1\n- 2\n"))
    assert msg == f"{tmp_path / 'recipe.yaml'}: a recipe must be a mapping of keys, got list"


def test_invalid_yaml_gives_one_line_with_the_line_number(tmp_path):
    path = write(tmp_path, "rounds: 1\ngeneration:\n  temperature: 0.5\n   top_p: 1\n")
    msg = config_error(load_recipe, path)
    assert msg.startswith(f"{path}: line 4 invalid YAML (")
    assert "Traceback" not in msg


def test_invalid_yaml_unclosed_flow_sequence(tmp_path):
    path = write(tmp_path, "a: 1\nb: [1, 2\nc: 3\n")
    msg = config_error(load_recipe, path)
    assert msg.startswith(f"{path}: line 3 invalid YAML")


# ---------------------------------------------------------------------------------------------
# unknown keys


def test_unknown_key_in_file_suggests_the_close_match(tmp_path):
    path = write(tmp_path, "generation:\n  temprature: 0.5\n", name="my_recipe.yaml")
    msg = config_error(load_recipe, path)
    assert msg == f"{path}: generation.temprature: unknown key; did you mean 'temperature'?"
    assert "my_recipe.yaml" in msg


def test_unknown_top_level_key_with_and_without_a_close_match():
    msg = config_error(recipe_from_dict, {"generaton": {}})
    assert msg == "recipe: generaton: unknown key; did you mean 'generation'?"
    msg = config_error(recipe_from_dict, {"zzzz": 1})
    assert msg.startswith("recipe: zzzz: unknown key; allowed: model, seed, rounds, prompts,")
    assert "tracking" in msg


def test_unknown_key_in_nested_dataclasses():
    msg = config_error(recipe_from_dict, {"train": {"lora": {"rr": 4}}})
    assert msg == "recipe: train.lora.rr: unknown key; did you mean 'r'?"
    msg = config_error(recipe_from_dict, {"model": {"sandbox": {"layerz": 2}}})
    assert msg == "recipe: model.sandbox.layerz: unknown key; did you mean 'layers'?"


def test_nested_dataclasses_are_built():
    recipe = recipe_from_dict({"train": {"lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
                               "model": {"sandbox": {"layers": 2, "hidden": 64, "lr": 1e-3}}})
    assert recipe.train.lora == LoraOptions(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    assert recipe.model.sandbox.layers == 2 and recipe.model.sandbox.hidden == 64
    assert recipe.model.sandbox.lr == 1e-3
    assert recipe.model.sandbox.heads == SandboxModelConfig().heads  # default kept


# ---------------------------------------------------------------------------------------------
# wrong types


@pytest.mark.parametrize(("raw", "expected"), [
    ({"generation": {"samples_per_prompt": "four"}},
     "recipe: generation.samples_per_prompt: expected an integer, got 'four'"),
    ({"generation": {"samples_per_prompt": 4.0}},
     "recipe: generation.samples_per_prompt: expected an integer, got 4.0"),
    ({"seed": True}, "recipe: seed: expected an integer, got True"),
    ({"eval": {"greedy": 1}}, "recipe: eval.greedy: expected true/false, got 1"),
    ({"eval": {"greedy": "yes"}}, "recipe: eval.greedy: expected true/false, got 'yes'"),
    ({"generation": {"stop": "###"}}, "recipe: generation.stop: expected a list of a string, got '###'"),
    ({"generation": {"stop": ["ok", 3]}}, "recipe: generation.stop[1]: expected a string, got 3"),
    ({"generation": {"temperature": "hot"}}, "recipe: generation.temperature: expected a number, got 'hot'"),
    ({"generation": {"temperature": False}}, "recipe: generation.temperature: expected a number, got False"),
    ({"model": {"path": 3}}, "recipe: model.path: expected a string, got 3"),
    ({"generation": 5}, "recipe: generation: expected a mapping, got 5"),
    ({"rewards": {"judge": 5}}, "recipe: rewards.judge: expected a mapping or null, got 5"),
    ({"train": {"dpo": [1]}}, "recipe: train.dpo: expected a mapping, got [1]"),
    ({"train": {"max_length": "long"}}, "recipe: train.max_length: expected an integer or null, got 'long'"),
])
def test_wrong_types(raw, expected):
    assert config_error(recipe_from_dict, raw) == expected


def test_union_with_a_dataclass_reports_the_member_error():
    # `rewards.judge` is JudgeConfig | None: a mapping gets the JudgeConfig field's own error.
    msg = config_error(recipe_from_dict, {"rewards": {"judge": {"num_judgments": "3"}}})
    assert msg == "recipe: rewards.judge.num_judgments: expected an integer, got '3'"


def test_null_disables_an_optional_section():
    recipe = recipe_from_dict({"rewards": {"judge": None, "likelihood": {}}, "pairs": {"reward": "likelihood"}})
    assert recipe.rewards.enabled() == ["likelihood"]


# ---------------------------------------------------------------------------------------------
# ranges and Literal values


@pytest.mark.parametrize(("raw", "expected"), [
    ({"generation": {"top_p": 1.5}}, "recipe: generation.top_p: 1.5 is out of range; must be <= 1"),
    ({"generation": {"top_p": 0}}, "recipe: generation.top_p: 0.0 is out of range; must be > 0"),
    ({"generation": {"samples_per_prompt": 0}},
     "recipe: generation.samples_per_prompt: 0 is out of range; must be >= 1"),
    ({"generation": {"temperature": -0.1}}, "recipe: generation.temperature: -0.1 is out of range; must be >= 0"),
    ({"train": {"learning_rate": 0}}, "recipe: train.learning_rate: 0.0 is out of range; must be > 0"),
    ({"train": {"lora": {"r": 0}}}, "recipe: train.lora.r: 0 is out of range; must be >= 1"),
    ({"train": {"lora": {"dropout": 1.01}}}, "recipe: train.lora.dropout: 1.01 is out of range; must be <= 1"),
    ({"rounds": -1}, "recipe: rounds: -1 is out of range; must be >= 0"),
])
def test_out_of_range(raw, expected):
    assert config_error(recipe_from_dict, raw) == expected


def test_range_boundaries_are_accepted():
    recipe = recipe_from_dict({"generation": {"top_p": 1.0, "temperature": 0.0, "samples_per_prompt": 2},
                               "train": {"lora": {"dropout": 0.0}}, "rounds": 0})
    assert recipe.generation.top_p == 1.0 and recipe.generation.temperature == 0.0
    assert recipe.rounds == 0


def test_nan_is_out_of_range():
    msg = config_error(recipe_from_dict, {"generation": {"top_p": math.nan}})
    assert "generation.top_p" in msg


def test_literal_with_suggestion():
    msg = config_error(recipe_from_dict, {"generation": {"backend": "vlm"}})
    assert msg == ("recipe: generation.backend: 'vlm' is not allowed; expected one of 'transformers', 'vllm'; "
                   "did you mean 'vllm'?")
    msg = config_error(recipe_from_dict, {"rewards": {"judge": {"mode": "expectd"}}})
    assert msg.endswith("did you mean 'expected'?")


def test_literal_without_a_close_match_has_no_suggestion():
    msg = config_error(recipe_from_dict, {"model": {"dtype": "int4"}})
    assert msg == ("recipe: model.dtype: 'int4' is not allowed; expected one of 'float32', 'bfloat16', "
                   "'float16', 'auto'")


# ---------------------------------------------------------------------------------------------
# cross checks


def test_pairs_reward_must_name_a_configured_reward():
    msg = config_error(recipe_from_dict, {"pairs": {"reward": "likelihood"}})
    assert msg == ("recipe: pairs.reward: 'likelihood' is not a configured reward; configured: judge (add "
                   "`likelihood: {}` under rewards: to rank by it)")
    msg = config_error(recipe_from_dict, {"rewards": {"judge": None}, "pairs": {"reward": "judge"}})
    assert "configured: none configured" in msg
    msg = config_error(recipe_from_dict, {"pairs": {"reward": "jugde"}})
    assert msg == "recipe: pairs.reward: 'jugde' is not a registered reward; did you mean 'judge'? (configured: judge)"
    msg = config_error(recipe_from_dict, {"pairs": {"reward": "self_certainy"}})
    assert "did you mean 'self_certainty'?" in msg
    # With no rounds there are no pairs, so the check does not apply.
    assert recipe_from_dict({"rounds": 0, "pairs": {"reward": "likelihood"}}).pairs.reward == "likelihood"


def test_one_sample_per_prompt_cannot_make_pairs():
    msg = config_error(recipe_from_dict, {"generation": {"samples_per_prompt": 1}})
    assert msg == "recipe: generation.samples_per_prompt: must be >= 2 to build preference pairs"


def test_seed_sft_enabled_needs_data():
    msg = config_error(recipe_from_dict, {"seed_sft": {"enabled": True}})
    assert "seed_sft" in msg and "seed_sft.data" in msg
    assert recipe_from_dict({"seed_sft": {"enabled": True, "data": "sandbox://arith"}}).seed_sft.enabled


SCIR_OK = {"rewards": {"judge": {"mode": "expected"}, "implicit": {}}, "pairs": {"reward": "implicit"}, "scir": {}}


@pytest.mark.parametrize(("raw", "expected"), [
    ({"pairs": {"rule": "all_pairs", "length_control": 0.3}},
     "recipe: pairs.length_control: applies to rule best_vs_worst only"),
    ({"pairs": {"length_control": 0.6}}, "recipe: pairs.length_control: 0.6 is out of range; must be <= 0.5"),
    ({"rewards": {"likelihood": {}}, "pairs": {"reward": "likelihood", "label": "judge_strength"}},
     "recipe: pairs.label: judge_strength needs rewards.judge"),
    ({"rewards": {"judge": {}, "implicit": {}}, "pairs": {"reward": "implicit", "label": "judge_strength"},
      "consistency": {}},
     "recipe: pairs.label: judge_strength and consistency both set the pair label; choose one "
     "(consistency.label: false only measures it)"),
    ({**SCIR_OK, "rewards": {"implicit": {}}},
     "recipe: scir: needs rewards.judge and rewards.implicit (the two internal reward models)"),
    ({**SCIR_OK, "rewards": {"judge": {}, "implicit": {}}},
     "recipe: scir.judge_format: pointwise reads score-token logits; set rewards.judge.mode: expected"),
    ({**SCIR_OK, "pairs": {"reward": "implicit", "length_control": 0.2}},
     "recipe: scir: builds its own candidate pairs; leave pairs.rule and pairs.length_control unset"),
    ({"cdpo": {}, "scir": {}, "rewards": {"judge": {"mode": "expected"}, "implicit": {}}},
     "recipe: cdpo: builds its own pairs (most frequent correct vs most frequent wrong answer); so does scir; "
     "choose one"),
    ({**SCIR_OK, "pairs": {"reward": "ptrue"}}, "recipe: pairs.reward: 'ptrue' is not a configured reward; "
     "configured: judge, implicit (add `ptrue: {}` under rewards: to rank by it)"),
    ({**SCIR_OK, "scir": {"judge_format": "pairwise", "options": ["A", "A"]}},
     "recipe: scir.options: give two different answer strings (first-shown, second-shown)"),
    ({**SCIR_OK, "scir": {"judge_format": "pairwise", "pairwise_template": "{prompt} {response_a}"}},
     "recipe: scir.pairwise_template: missing {response_b}"),
    ({**SCIR_OK, "pairs": {"reward": "implicit", "rule": "all_pairs"}},
     "recipe: scir: builds its own candidate pairs; leave pairs.rule and pairs.length_control unset"),
    ({**SCIR_OK, "scir": {"margin": 0.7}}, "recipe: scir.margin: 0.7 is out of range; must be <= 0.5"),
])
def test_pair_rule_and_scir_cross_checks(raw, expected):
    assert config_error(recipe_from_dict, raw) == expected


def test_valid_scir_and_osp_recipes():
    assert recipe_from_dict({**SCIR_OK, "consistency": {"label": False}}).consistency.label is False
    # SCIR's pairs may take CREAM's consistency or OSP's judge strength as their soft label (SCIRTrainer is a
    # SoftLabelDPOTrainer), but not both
    assert recipe_from_dict({**SCIR_OK, "consistency": {}}).consistency.label is True
    assert recipe_from_dict({**SCIR_OK, "pairs": {"reward": "implicit", "label": "judge_strength"}}).scir
    assert config_error(recipe_from_dict, {**SCIR_OK, "consistency": {},
                                           "pairs": {"reward": "implicit", "label": "judge_strength"}}).startswith(
        "recipe: pairs.label: judge_strength and consistency both set the pair label")
    recipe = recipe_from_dict(SCIR_OK)
    assert recipe.scir.judge_format == "pointwise" and recipe.scir.lambda_cons == 1.0
    recipe = recipe_from_dict({"pairs": {"rule": "all_pairs", "label": "judge_strength", "max_pairs_per_prompt": 3}})
    assert recipe.pairs.label == "judge_strength" and recipe.pairs.max_pairs_per_prompt == 3


def test_train_dpo_passthrough_keys_are_validated_against_trl():
    recipe = recipe_from_dict({"train": {"dpo": {"loss_type": ["sigmoid"], "precompute_ref_log_probs": True}}})
    assert recipe.train.dpo == {"loss_type": ["sigmoid"], "precompute_ref_log_probs": True}
    msg = config_error(recipe_from_dict, {"train": {"dpo": {"los_type": "sigmoid"}}})
    assert msg == "recipe: train.dpo.los_type: not a trl.DPOConfig field; did you mean 'loss_type'?"
    msg = config_error(recipe_from_dict, {"train": {"dpo": {"qqqqqqq": 1}}})
    assert msg == "recipe: train.dpo.qqqqqqq: not a trl.DPOConfig field"


# ---------------------------------------------------------------------------------------------
# GRPO: reward terms, passthrough keys, generation batches


def grpo(terms=({"source": "self_certainty"},), train=None, **sections) -> dict:
    return {"train": {"algorithm": "grpo", "grpo_rewards": list(terms), **(train or {})}, **sections}


def test_valid_grpo_recipe():
    recipe = recipe_from_dict(grpo([{"source": "self_certainty"}, {"source": "majority", "weight": 0.5},
                                    {"source": "repetition", "weight": 0.2, "ngram": 3}, {"source": "json:dumps"}],
                                   {"grpo": {"beta": 0.04, "loss_type": "dr_grpo"}}))
    assert [(r.source, r.weight) for r in recipe.train.grpo_rewards] == [
        ("self_certainty", 1.0), ("majority", 0.5), ("repetition", 0.2), ("json:dumps", 1.0)]
    assert recipe.train.grpo_rewards[2].options == {"ngram": 3}
    assert recipe.train.grpo == {"beta": 0.04, "loss_type": "dr_grpo"}
    # GRPO builds no pairs: pairs.reward need not name a configured reward
    assert recipe_from_dict({**grpo(), "rewards": {"likelihood": {}}}).pairs.reward == "judge"


@pytest.mark.parametrize(("raw", "expected"), [
    (grpo([{"source": "selfcertainty"}]),
     "train.grpo_rewards[0].source: 'selfcertainty' is neither a registered reward (judge, likelihood, implicit, "
     "majority, verifier, self_certainty, ptrue, repetition, length, lastde, infalign, gencls) nor an import path "
     "'package.module:function'; "
     "did you mean 'self_certainty'?"),
    (grpo([{"source": "no_such_pkg.mod:fn"}]),
     "train.grpo_rewards[0].source: cannot import 'no_such_pkg.mod' (ModuleNotFoundError: No module named "
     "'no_such_pkg')"),
    (grpo([{"source": "majority"}, {"source": "json:no_such_fn"}]),
     "train.grpo_rewards[1].source: module 'json' has no attribute 'no_such_fn'"),
    (grpo([{"source": "json:__doc__"}]), "train.grpo_rewards[0].source: 'json:__doc__' is not callable"),
    (grpo([{"source": ":fn"}]),
     "train.grpo_rewards[0].source: ':fn' is not an import path; expected 'package.module:function'"),
    (grpo([{"weight": 1.0}]), "train.grpo_rewards[0].source: missing; this key is required"),
    (grpo([{"source": "majority", "wieght": 1.0}]),
     "train.grpo_rewards[0].wieght: unknown key; did you mean 'weight'?"),
    (grpo([{"source": "repetition", "ngram": 0}]), "train.grpo_rewards[0].ngram: 0 is out of range; must be >= 1"),
    (grpo(["majority"]), "train.grpo_rewards[0]: expected a mapping, got 'majority'"),
    (grpo([{"source": "majority"}, {"source": "majority", "weight": 2}]),
     "train.grpo_rewards[1].source: 'majority' is listed twice"),
    (grpo([{"source": "implicit"}]),
     "train.grpo_rewards[0].source: implicit needs a reference model, which GRPO's reward functions do not have "
     "(they score with the live policy)"),
    (grpo([{"source": "majority", "score": "vote"}]),
     "train.grpo_rewards[0].score: 'vote' is not allowed; expected one of 'share', 'match'"),
    (grpo([{"source": "majority", "ngram": 2}]),
     "train.grpo_rewards[0].ngram: unknown key; majority has the options score"),
    (grpo([{"source": "json:dumps", "ngram": 2}]),
     "train.grpo_rewards[0].ngram: options apply to registered rewards only, not to the function 'json:dumps'"),
    (grpo([]), "train.grpo_rewards: GRPO needs at least one reward, e.g. [{source: self_certainty}]"),
    ({"train": {"grpo_rewards": [{"source": "majority"}]}}, "train.grpo_rewards: applies to train.algorithm grpo only"),
    ({"train": {"grpo": {"beta": 0.1}}}, "train.grpo: applies to train.algorithm grpo only"),
    (grpo(train={"grpo": {"los_type": "grpo"}}), "train.grpo.los_type: not a trl.GRPOConfig field; did you mean "
                                                 "'loss_type'?"),
    (grpo(train={"grpo": {"num_generations": 8}}),
     "train.grpo.num_generations: set by generation.samples_per_prompt; set it there"),
    (grpo(train={"grpo": {"learning_rate": 1e-5}}),
     "train.grpo.learning_rate: set by train.learning_rate; set it there"),
    (grpo(train={"dpo": {"loss_type": "sigmoid"}}),
     "train.dpo: DPOConfig settings; with train.algorithm grpo use train.grpo"),
    (grpo(train={"max_length": 64}),
     "train.max_length: DPO only; GRPO's completions end at generation.max_new_tokens"),
    (grpo(consistency={}), "consistency: a DPO method; it cannot be combined with train.algorithm grpo"),
    (grpo(generation={"stop": [";"]}),
     "generation.stop: not supported with train.algorithm grpo (TRL's sampler stops at EOS)"),
    (grpo(generation={"temperature": 0}),
     "generation.temperature: GRPO samples its groups; 0 (greedy) is not allowed"),
    (grpo(generation={"samples_per_prompt": 1}),
     "generation.samples_per_prompt: GRPO needs >= 2 completions per prompt (one group)"),
    (grpo(train={"batch_size": 6}),
     "train.batch_size: train.batch_size × train.gradient_accumulation_steps = 6 completions per generation batch "
     "is not a multiple of generation.samples_per_prompt = 4"),
    (grpo(train={"batch_size": 2, "grpo": {"steps_per_generation": 3}}),
     "train.batch_size: train.batch_size × train.grpo.steps_per_generation = 6 completions per generation batch is "
     "not a multiple of generation.samples_per_prompt = 4"),
    (grpo(train={"grpo": {"generation_batch_size": 10}}),
     "train.grpo.generation_batch_size: train.grpo.generation_batch_size = 10 completions per generation batch is "
     "not a multiple of generation.samples_per_prompt = 4"),
    (grpo(train={"grpo": {"generation_batch_size": 16, "steps_per_generation": 2}}),
     "train.grpo.steps_per_generation: set it or train.grpo.generation_batch_size, not both"),
    (grpo(train={"batch_size": 64}, prompts={"train_per_round": 8}),
     "prompts.train_per_round: 8 prompts cannot fill one GRPO generation batch of 16 prompts (train.batch_size × "
     "train.gradient_accumulation_steps = 64 completions / 4); raise it or lower train.batch_size"),
])
def test_grpo_errors(raw, expected):
    assert config_error(recipe_from_dict, raw) == f"recipe: {expected}"


# ---------------------------------------------------------------------------------------------
# --set overrides


def test_set_overrides_a_value_and_parses_it_as_yaml():
    recipe = recipe_from_dict({}, ["generation.temperature=0.5", "generation.stop=[a, b]", "eval.greedy=false",
                                   "model.path=/m"])
    assert recipe.generation.temperature == 0.5
    assert recipe.generation.stop == ["a", "b"]
    assert recipe.eval.greedy is False
    assert recipe.model.path == "/m"


def test_set_creates_nested_new_keys():
    recipe = recipe_from_dict({}, ["rewards.implicit.beta=0.5", "pairs.reward=implicit", "train.lora.r=4"])
    assert recipe.rewards.implicit.beta == 0.5
    assert "implicit" in recipe.rewards.enabled()
    assert recipe.pairs.reward == "implicit"
    assert recipe.train.lora.r == 4 and recipe.train.lora.alpha == 32


def test_set_does_not_modify_the_input_dict():
    raw = {"generation": {"temperature": 0.9}}
    recipe_from_dict(raw, ["generation.temperature=0.1"])
    assert raw == {"generation": {"temperature": 0.9}}


def test_set_last_assignment_wins():
    assert recipe_from_dict({}, ["seed=1", "seed=7"]).seed == 7


def test_invalid_override_mentions_from_set():
    msg = config_error(recipe_from_dict, {}, ["generation.temperature=-1"])
    assert msg == "recipe: generation.temperature: -1.0 is out of range; must be >= 0 (from --set)"
    msg = config_error(recipe_from_dict, {}, ["generation.temprature=0.5"])
    assert msg == "recipe: generation.temprature: unknown key; did you mean 'temperature'? (from --set)"
    msg = config_error(recipe_from_dict, {}, ["pairs.reward=implicit"])
    assert msg.endswith("(from --set)") and "pairs.reward" in msg


def test_error_in_the_file_is_not_blamed_on_set(tmp_path):
    path = write(tmp_path, "generation:\n  top_p: 2\n")
    msg = config_error(load_recipe, path, ["generation.temperature=0.5"])
    assert msg == f"{path}: generation.top_p: 2.0 is out of range; must be <= 1"


def test_set_seed_is_not_blamed_for_a_seed_sft_error():
    msg = config_error(recipe_from_dict, {"seed_sft": {"enabled": True}}, ["seed=1"])
    assert not msg.endswith("(from --set)")


def test_set_without_equals_sign():
    msg = config_error(recipe_from_dict, {}, ["generation.temperature"])
    assert msg == "recipe: --set generation.temperature: expected KEY.PATH=VALUE"


def test_set_through_a_scalar_is_an_error():
    msg = config_error(recipe_from_dict, {"generation": {"temperature": 0.7}}, ["generation.temperature.x=1"])
    assert msg == "recipe: --set generation.temperature.x: generation.temperature is not a mapping"


def test_set_with_the_file_name_as_source(tmp_path):
    path = write(tmp_path, "rounds: 1\n")
    assert load_recipe(path, ["rounds=5"]).rounds == 5
    msg = config_error(load_recipe, path, ["rounds=x"])
    assert msg == f"{path}: rounds: expected an integer, got 'x' (from --set)"


# ---------------------------------------------------------------------------------------------
# every error is one line


BAD_RECIPES = [
    "generation: {temprature: 1}",
    "generation: {top_p: 1.5}",
    "generation: {stop: '###'}",
    "generation: {backend: vlm}",
    "model: {sandbox: {layers: x}}",
    "train: {dpo: {los_type: x}}",
    "pairs: {reward: nope}",
    "prompts: {on_bad_row: skipp}",
    "model: {path: [1, 2]}",
    "tracking: {wandb: {mode: onlin}}",
    "generation: {stop: ['a\\nb', 3]}",
    "a: [1, 2\nb: 3\n",
    "a: b: c\n",
    "key: 'unterminated\n",
    "\t a: 1\n",
    "just a string",
]


@pytest.mark.parametrize("text", BAD_RECIPES)
def test_every_config_error_is_one_line(tmp_path, text):
    msg = config_error(load_recipe, write(tmp_path, text))
    assert msg.startswith(str(tmp_path / "recipe.yaml") + ":")


def test_unknown_key_with_a_newline_is_still_one_line(tmp_path):
    config_error(load_recipe, write(tmp_path, '"gen\\neration": 1\n'))


# ---------------------------------------------------------------------------------------------
# the CLI end


def test_cli_prints_one_error_line_and_returns_2(tmp_path, capsys):
    from selfalign.cli import main

    bad = write(tmp_path, "generation:\n  temprature: 0.5\n", name="bad.yaml")
    assert main(["run", str(bad), "--output-dir", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines == [f"selfalign: error: {bad}: generation.temprature: unknown key; did you mean 'temperature'?"]
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert not (tmp_path / "out").exists()


def test_cli_bad_set_override(tmp_path, capsys):
    from selfalign.cli import main

    ok = write(tmp_path, "rounds: 1\n")
    assert main(["run", str(ok), "--set", "generation.top_p=2", "--output-dir", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0] == f"selfalign: error: {ok}: generation.top_p: 2.0 is out of range; must be <= 1 (from --set)"


def test_cli_invalid_yaml(tmp_path, capsys):
    from selfalign.cli import main

    bad = write(tmp_path, "a: [1, 2\nb: 3\n")
    assert main(["run", str(bad)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"selfalign: error: {bad}: line 2 invalid YAML")


@pytest.mark.parametrize("path", sorted(str(p) for p in __import__("pathlib").Path("recipes").rglob("*.yaml")
                                        if "accelerate" not in p.parts))
def test_shipped_recipes_validate(path):
    from selfalign.recipe import load_recipe

    recipe = load_recipe(path)
    assert recipe.rounds >= 1


@pytest.mark.parametrize("raw, expected", [
    ({"generation": {"tensor_parallel_size": 2}}, "generation.tensor_parallel_size: applies to generation.backend "
                                                  "vllm only"),
    ({"generation": {"vllm": {"gpu_memory_utilization": 0.5}}}, "generation.vllm: applies to generation.backend "
                                                                "vllm only"),
    ({"generation": {"backend": "vllm", "vllm": {"model": "x"}}}, "generation.vllm.model: set by model.path"),
    ({"generation": {"backend": "vllm", "vllm": {"tensor_parallel_size": 2}}},
     "generation.vllm.tensor_parallel_size: set by generation.tensor_parallel_size"),
    ({"generation": {"backend": "vllm", "tensor_parallel_size": 0}}, "generation.tensor_parallel_size: 0 is out"),
])
def test_vllm_errors(raw, expected):
    with pytest.raises(ConfigError, match="^recipe: " + expected.replace(".", r"\.")):
        recipe_from_dict(raw)


def test_vllm_settings_parse():
    r = recipe_from_dict({"generation": {"backend": "vllm", "tensor_parallel_size": 4,
                                         "vllm": {"gpu_memory_utilization": 0.6, "max_model_len": 4096}}})
    assert r.generation.tensor_parallel_size == 4 and r.generation.vllm["max_model_len"] == 4096


def _grpo(terms: list[dict], **rewards) -> dict:
    return {"rewards": rewards, "train": {"algorithm": "grpo", "batch_size": 8, "grpo_rewards": terms},
            "generation": {"samples_per_prompt": 4}}


def test_a_run_directory_of_the_old_grpo_format_resumes_with_its_meaning():
    """Before the methods-as-plugins redesign recipe.yaml held `ngram` and `batch_size` on every GRPO term (which
    today's loader rejects where the reward has no such option), and the `majority` term was the 0/1 match."""
    old = _grpo([{"source": "majority", "weight": 1.0, "ngram": 4, "batch_size": 32},
                 {"source": "repetition", "weight": 0.5, "ngram": 4, "batch_size": 32}])
    with pytest.raises(ConfigError, match=r"grpo_rewards\[0\]\.(ngram|batch_size): unknown key"):
        recipe_from_dict(old)
    same = recipe_from_dict(_grpo([{"source": "majority", "score": "match"}, {"source": "repetition", "weight": 0.5}]))
    assert recipe_differences(same, old, "run/recipe.yaml") == []
    share = recipe_from_dict(_grpo([{"source": "majority"}, {"source": "repetition", "weight": 0.5}]))
    assert recipe_differences(share, old, "run/recipe.yaml") == ["train"]  # today's default is another reward
    # an n-gram size that differs from what the term would get without it is kept
    kept = migrate_saved(_grpo([{"source": "repetition", "ngram": 2, "batch_size": 32}], repetition={"ngram": 3}))
    assert kept["train"]["grpo_rewards"] == [{"source": "repetition", "ngram": 2}]
    new = _grpo([{"source": "repetition"}])
    assert migrate_saved(new) is new  # today's format is left alone
