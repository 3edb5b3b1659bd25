"""The recipe: the core sections (`selfalign.config`), one `rewards` entry per registered reward
(`selfalign.rewards.REWARDS`) and one section per method that has one (`selfalign.methods.METHODS`), loaded from
YAML with `--set` overrides and checked as a whole.

Every mistake is one `ConfigError` line naming the file, the key path and what is allowed, e.g.

    recipes/x.yaml: generation.temprature: unknown key; did you mean 'temperature'?
"""

from __future__ import annotations

import dataclasses
from dataclasses import field, make_dataclass
from pathlib import Path
from typing import Any

import yaml

from selfalign import evaluators, methods
from selfalign.config import (
    ConfigError,
    EvalConfig,
    GenerationConfig,
    ModelConfig,
    PairsConfig,
    PromptsConfig,
    SeedSFTConfig,
    TrackingConfig,
    TrainConfig,
    apply_override,
    build,
    did_you_mean,
    load_yaml,
    opt,
    to_dict,
)
from selfalign.rewards import REWARDS
from selfalign.rewards.judge import JudgeConfig


def _enabled(self) -> list[str]:
    """The names of the configured rewards, in registry order."""
    return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


#: `rewards:` of a recipe: each registered reward's options, or null (off)
RewardsConfig = make_dataclass(
    "RewardsConfig", [(name, spec.config | None, field(default=None)) for name, spec in REWARDS.items()],
    namespace={"enabled": _enabled, "__doc__": "Each registered reward's options (null: not scored)."})

#: a whole recipe: the core sections, the rewards, and each method's section (null: the method is off)
Recipe = make_dataclass("Recipe", [
    ("model", ModelConfig, field(default_factory=ModelConfig)),
    ("seed", int, opt(0, lo=0, hi=2**31 - 1)),  # seed + round seeds numpy (< 2**32) and torch
    ("rounds", int, opt(3, lo=0)),
    ("prompts", PromptsConfig, field(default_factory=PromptsConfig)),
    ("seed_sft", SeedSFTConfig, field(default_factory=SeedSFTConfig)),
    ("generation", GenerationConfig, field(default_factory=GenerationConfig)),
    ("rewards", RewardsConfig, field(default_factory=lambda: RewardsConfig(judge=JudgeConfig()))),
    *[(key, cfg | None, field(default=None)) for key, cfg in methods.sections()],
    ("pairs", PairsConfig, field(default_factory=PairsConfig)),
    ("train", TrainConfig, field(default_factory=TrainConfig)),
    ("eval", EvalConfig, field(default_factory=EvalConfig)),
    ("tracking", TrackingConfig, field(default_factory=TrackingConfig)),
], namespace={"__doc__": "A recipe: what one run does, round after round (README, 'Recipe keys')."})


_VLLM_MANAGED = {"model": "model.path", "tokenizer": "model.path", "tensor_parallel_size":
                 "generation.tensor_parallel_size", "seed": "seed", "dtype": "model.dtype",
                 "trust_remote_code": "model.trust_remote_code", "revision": "model.revision"}


def _vllm_checks(g: GenerationConfig) -> None:
    if g.backend != "vllm":
        if g.vllm or g.tensor_parallel_size != 1:
            key = "generation.vllm" if g.vllm else "generation.tensor_parallel_size"
            raise ConfigError(f"{key}: applies to generation.backend vllm only")
        return
    for key in g.vllm:
        if key in _VLLM_MANAGED:
            raise ConfigError(f"generation.vllm.{key}: set by {_VLLM_MANAGED[key]}; set it there")


def check(recipe: Any) -> methods.Methods:
    """Everything about the recipe as a whole; returns its resolved methods."""
    _vllm_checks(recipe.generation)
    for name in recipe.rewards.enabled():
        spec = REWARDS[name]
        if spec.check is not None:
            spec.check(getattr(recipe.rewards, name), f"rewards.{name}")
    resolved = methods.resolve(recipe)
    evaluators.configured(recipe.eval)
    dpo = recipe.train.algorithm == "dpo"
    enabled = recipe.rewards.enabled()
    if dpo and recipe.rounds > 0 and resolved.pairs.uses_pairs_reward and recipe.pairs.reward not in enabled:
        name, allowed = recipe.pairs.reward, ", ".join(enabled) or "none configured"
        if name in REWARDS:
            raise ConfigError(f"pairs.reward: {name!r} is not a configured reward; configured: {allowed} (add "
                              f"`{name}: {{}}` under rewards: to rank by it)")
        hint = did_you_mean(name, enabled) or did_you_mean(name, REWARDS)
        raise ConfigError(f"pairs.reward: {name!r} is not a registered reward{hint} (configured: {allowed})")
    if dpo and recipe.generation.samples_per_prompt < 2 and recipe.rounds > 0:
        raise ConfigError("generation.samples_per_prompt: must be >= 2 to build preference pairs")
    if recipe.seed_sft.enabled and not (recipe.seed_sft.data or recipe.seed_sft.judge_data):
        raise ConfigError("seed_sft: enabled but neither seed_sft.data nor seed_sft.judge_data is set")
    return resolved


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Read, override and validate a recipe; raises ConfigError with a one-line message."""
    return recipe_from_dict(load_yaml(path), overrides, source=str(path))


def recipe_from_dict(raw: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "recipe") -> Any:
    raw = yaml.safe_load(yaml.safe_dump(raw, sort_keys=False))  # deep copy, in the order written
    for assignment in overrides:
        try:
            apply_override(raw, assignment)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    try:
        recipe = build(Recipe, raw)
        check(recipe)
    except ConfigError as e:
        failed = str(e).split(":", 1)[0]
        set_keys = [a.split("=", 1)[0].strip() for a in overrides]
        from_set = any(failed == k or failed.startswith(k + ".") or k.startswith(failed + ".") for k in set_keys)
        origin = " (from --set)" if from_set else ""
        raise ConfigError(f"{source}: {e}{origin}") from None
    return recipe


def dump_recipe(recipe: Any) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False)


def migrate_saved(saved: dict) -> dict:
    """A run directory's recipe.yaml, written by an older selfalign, as today's loader reads it with the meaning it
    had. Before the methods-as-plugins redesign every GRPO reward term was saved with `ngram` and `batch_size`,
    whatever its source, and `rewards.<source>` did not apply to GRPO: `batch_size` (speed only) is dropped, `ngram`
    where it is what the term gets without it (repetition's `rewards.repetition.ngram`, else 4), and a term of
    source `majority` was TTRL's 0/1 label, today `score: match`."""
    train = saved.get("train")
    terms = train.get("grpo_rewards") if isinstance(train, dict) else None
    if not isinstance(terms, list) or not any(isinstance(t, dict) and "ngram" in t for t in terms):
        return saved
    saved = yaml.safe_load(yaml.safe_dump(saved))  # deep copy
    rewards = saved.get("rewards") if isinstance(saved.get("rewards"), dict) else {}
    for term in saved["train"]["grpo_rewards"]:
        if not isinstance(term, dict) or term.get("source") not in REWARDS:
            continue
        term.pop("batch_size", None)
        section = rewards.get(term["source"]) if isinstance(rewards.get(term["source"]), dict) else {}
        fields = REWARDS[term["source"]].config.__dataclass_fields__
        if "ngram" not in fields or term.get("ngram") == section.get("ngram", fields["ngram"].default):
            term.pop("ngram", None)
        if term["source"] == "majority":
            term.setdefault("score", "match")
    return saved


#: what a resumed run may change (besides `rounds` and `tracking`): the optimiser's step settings, so that a run whose
#: loss diverged continues with a lower learning rate (finished rounds keep theirs), and how often it checkpoints
RESUMABLE = ("rounds", "tracking", "train.learning_rate", "train.warmup_steps", "train.lr_scheduler_type",
             "train.checkpoint_steps", "train.dpo.max_grad_norm", "train.grpo.max_grad_norm", "seed_sft.learning_rate")


def _without(data: dict, paths: tuple[str, ...]) -> dict:
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy
    for path in paths:
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return data


def recipe_differences(recipe: Any, saved: dict, source: str, ignore: tuple[str, ...] = RESUMABLE) -> list[str]:
    """The top-level keys in which `recipe` differs from a saved one (read with today's defaults, so keys added
    since it was written do not count; an older selfalign's recipe.yaml migrated, `migrate_saved`), other than the
    key paths in `ignore`."""
    old = _without(to_dict(recipe_from_dict(migrate_saved(saved), source=source)), ignore)
    new = _without(to_dict(recipe), ignore)
    return [k for k in new if new[k] != old.get(k)]


def resumable_changes(recipe: Any, saved: dict, source: str) -> dict[str, tuple[Any, Any]]:
    """{key path: (saved value, new value)} of the `RESUMABLE` settings other than rounds and tracking that differ."""
    old, new = to_dict(recipe_from_dict(migrate_saved(saved), source=source)), to_dict(recipe)
    changes = {}
    for path in (p for p in RESUMABLE if p not in ("rounds", "tracking")):
        a, b = old, new
        for p in path.split("."):
            a = a.get(p) if isinstance(a, dict) else None
            b = b.get(p) if isinstance(b, dict) else None
        if a != b:
            changes[path] = (a, b)
    return changes
