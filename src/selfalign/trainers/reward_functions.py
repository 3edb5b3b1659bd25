"""Registered rewards (`selfalign.rewards`) as reward functions of TRL's `GRPOTrainer` (`train.grpo_rewards`).

TRL calls each function once per generation batch as

    f(prompts, completions, completion_ids, *, prompt_id, user_prompt, answer, trainer_state, ...) -> list[float | None]

with one reward per completion; the num_generations completions of a prompt sit next to each other, and the
columns `prompt_id`, `user_prompt` (the user's words) and `answer` (None without ground truth) come from the
round's prompt rows. A term is a registered reward, built through the registry with its options (`rewards.<name>`,
overridden by the term's own keys), or a function given by import path ("package.module:function", called with
the same arguments).

Rewards that read the model score with the *live* policy: the trainer's weights at the moment the group is scored,
as Intuitor (Zhao et al. 2025, https://arxiv.org/abs/2505.19590) rewards GRPO with "the model's own confidence,
termed self-certainty"; they hold the trainer (`bind`), not a copy of the model. Rewards that read tokens score the
sampled ones. A grouped reward (majority) sees every completion of its prompt, gathered from all processes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from selfalign.config import ConfigError, RewardTerm, build, did_you_mean, to_dict
from selfalign.rewards import REWARDS, RewardContext, RewardSpec, build_reward
from selfalign.rows import prompt_row

#: what GRPO's reward functions can give a reward model (no other model of the round; answers in the rows; what the
#: round's methods hand the rewards)
GRPO_PROVIDES = ("policy", "answers", "inputs")


def import_reward_function(path: str, where: str) -> Callable:
    """The callable at "package.module:function"; a one-line ConfigError naming `where` if it cannot be had."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{where}: {path!r} is not an import path; expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # a user module can fail in any way while it is imported
        reason = (str(e).splitlines() or [""])[0]
        raise ConfigError(f"{where}: cannot import {module_name!r} ({type(e).__name__}: {reason})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"{where}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ConfigError(f"{where}: {path!r} is not callable")
    return fn


def term_config(term: RewardTerm, rewards: Any, where: str) -> Any:
    """The options of a registered reward term: `rewards.<source>` (or the reward's defaults) updated with the term's
    own keys; ConfigError naming the term's key when one is wrong, or when the reward needs a model GRPO lacks."""
    spec = REWARDS[term.source]
    missing = [n for n in spec.needs if n not in GRPO_PROVIDES]
    if missing:
        raise ConfigError(f"{where}.source: {term.source} needs a {missing[0]} model, which GRPO's reward functions "
                          "do not have (they score with the live policy)")
    fields = list(spec.config.__dataclass_fields__)
    for key in term.options:
        if key not in fields:
            hint = did_you_mean(key, ["source", "weight", *fields]) or (
                f"; {term.source} has the options {', '.join(fields)}" if fields else f"; {term.source} has no options")
            raise ConfigError(f"{where}.{key}: unknown key{hint}")
    section = getattr(rewards, term.source, None)
    cfg = build(spec.config, {**(to_dict(section) if section is not None else {}), **term.options}, where)
    if spec.check is not None:
        spec.check(cfg, where)
    return cfg


def check_term(term: RewardTerm, rewards: Any, where: str) -> None:
    """ConfigError unless the term is a registered reward with valid options, or an importable function."""
    if term.source in REWARDS:
        term_config(term, rewards, where)
    elif ":" in term.source:
        if term.options:
            raise ConfigError(f"{where}.{next(iter(term.options))}: options apply to registered rewards only, not to "
                              f"the function {term.source!r}")
        import_reward_function(term.source, f"{where}.source")
    else:
        raise ConfigError(f"{where}.source: {term.source!r} is neither a registered reward ({', '.join(REWARDS)}) "
                          f"nor an import path 'package.module:function'{did_you_mean(term.source, REWARDS)}")


class RegistryRewardFunction:
    """A registered reward as a TRL reward function; one that reads the policy needs `bind(trainer)` first."""

    def __init__(self, spec: RewardSpec, cfg: Any, tokenizer, seed: int = 0, max_new_tokens: int | None = None,
                 inputs: dict | None = None):
        self.__name__ = spec.name  # TRL logs rewards/<__name__>/mean
        self.spec, self.cfg, self.tokenizer, self.trainer = spec, cfg, tokenizer, None
        self.seed, self.max_new_tokens, self.inputs = seed, max_new_tokens, inputs or {}

    def bind(self, trainer) -> None:
        self.trainer = trainer

    @contextmanager
    def policy(self) -> Iterator[torch.nn.Module | None]:
        """The live policy, unwrapped as TRL unwraps it to generate (ZeRO-3 gathered), in eval mode, no grad; None
        for a reward that reads no model."""
        if "policy" not in self.spec.needs:
            yield None
            return
        from trl.models.utils import unwrap_model_for_generation

        if self.trainer is None:
            raise RuntimeError(f"reward {self.__name__}: bind() it to the GRPO trainer before it is called")
        t = self.trainer
        with unwrap_model_for_generation(t.model_wrapped, t.accelerator,
                                         gather_deepspeed3_params=t.args.ds3_gather_for_generation,
                                         gradient_checkpointing_kwargs=t.args.gradient_checkpointing_kwargs) as model:
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    yield model
            finally:
                model.train(was_training)

    def __call__(self, prompts, completions, completion_ids, **columns) -> list[float | None]:
        n = len(prompts)
        rows = [prompt_row(i, u, p, a) for i, u, p, a in zip(
            columns.get("prompt_id", [None] * n), columns.get("user_prompt", prompts), prompts,
            columns.get("answer", [None] * n), strict=True)]
        # (prompt ids, completion ids) exactly as sampled: prompts tokenized as TRL tokenizes them to generate
        token_ids = [(self.tokenizer(p)["input_ids"], list(c)) for p, c in zip(prompts, completion_ids, strict=True)]
        completions = list(completions)
        if not self.spec.is_grouped(self.cfg):
            return self._score(rows, completions, token_ids)
        # a prompt's completions may be spread over processes: score them all together, keep this process's part
        from accelerate import PartialState
        from accelerate.utils import gather_object

        scores = self._score(gather_object(rows), gather_object(completions), gather_object(token_ids))
        start = PartialState().process_index * n
        return scores[start : start + n]

    def _score(self, rows, completions, token_ids) -> list[float | None]:
        with self.policy() as model:
            ctx = RewardContext(self.tokenizer, policy=model, seed=self.seed, max_new_tokens=self.max_new_tokens,
                                where="train.grpo_rewards", inputs=self.inputs)
            return build_reward(self.spec.name, self.cfg, ctx).score(rows, completions, token_ids).scores


def reward_name(fn: Callable) -> str:
    """The name TRL logs a reward function under (its __name__, or its class name)."""
    return getattr(fn, "__name__", type(fn).__name__)


def build_reward_functions(terms: list[RewardTerm], rewards: Any, tokenizer, max_new_tokens: int,
                           seed: int = 0, inputs: dict | None = None) -> tuple[list[Callable], list[float]]:
    """TRL's (reward_funcs, reward_weights) for `train.grpo_rewards` (`inputs`: what the round's methods hand the
    rewards); call `bind_reward_functions` once the trainer exists."""
    funcs: list[Callable] = []
    for k, term in enumerate(terms):
        where = f"train.grpo_rewards[{k}]"
        check_term(term, rewards, where)
        if term.source in REWARDS:
            funcs.append(RegistryRewardFunction(REWARDS[term.source], term_config(term, rewards, where), tokenizer,
                                                seed, max_new_tokens, inputs))
        else:
            funcs.append(import_reward_function(term.source, f"{where}.source"))
    names = [reward_name(f) for f in funcs]
    for k, name in enumerate(names):
        if name in names[:k]:
            raise ConfigError(f"train.grpo_rewards[{k}].source: a second reward named {name!r}; TRL logs rewards by "
                              "name, so each must be unique")
    return funcs, [term.weight for term in terms]


def bind_reward_functions(funcs: list[Callable], trainer) -> None:
    for fn in funcs:
        if isinstance(fn, RegistryRewardFunction):
            fn.bind(trainer)
