"""The rewards library as reward functions for TRL's `GRPOTrainer` (`train.grpo_rewards` in a recipe).

TRL calls each function once per generation batch as

    f(prompts, completions, completion_ids, *, prompt_id, user_prompt, answer, trainer_state, ...) -> list[float | None]

with one reward per completion; the num_generations completions of a prompt sit next to each other, and the
columns `prompt_id`, `user_prompt` (the user's words) and `answer` (None without ground truth) come from the
round's prompt rows. A function given by import path (`"package.module:function"`) gets the same arguments.

Sources that read the model score with the *live* policy: the trainer's weights at the moment the group is
scored, as Intuitor (Zhao et al. 2025, https://arxiv.org/abs/2505.19590) rewards GRPO with "the model's own
confidence, termed self-certainty". They hold the trainer (`bind`), not a copy of the model.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import torch

from selfalign.config import ConfigError, GRPORewardConfig, RewardsConfig
from selfalign.rewards.judge import JudgeReward
from selfalign.rewards.likelihood import sequence_score
from selfalign.rewards.majority import majority_match
from selfalign.rewards.ptrue import PTrueConfig, PTrueReward
from selfalign.rewards.repetition import repeated_ngram_fraction
from selfalign.rewards.self_certainty import response_certainty
from selfalign.rewards.verifier import extract_answer, is_correct
from selfalign.scoring import token_logprobs

#: source → what the reward of one completion is
SOURCES = {
    "self_certainty": "mean over its tokens of KL(U ‖ p) under the live policy (Intuitor)",
    "judge": "the live policy's judge score of it (rewards.judge: template and mode)",
    "ptrue": "the live policy's P(True) that it is right",
    "likelihood": "its length-normalised log-likelihood under the live policy",
    "majority": "1 if its final answer is the majority answer of its prompt's completions, else 0 (TTRL)",
    "verifier": "1 if its final answer is right (ground truth: oracle comparisons only)",
    "repetition": "−seq-rep-n of its tokens, the share of repeated n-grams (a penalty in [−1, 0])",
    "length": "−its tokens / generation.max_new_tokens (a penalty in [−1, 0])",
}


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


def check_source(source: str, where: str, rewards: RewardsConfig) -> None:
    """ConfigError unless `source` is a known source (with what it needs) or an importable function."""
    if source in SOURCES:
        if source == "judge" and rewards.judge is None:
            raise ConfigError(f"{where}: judge needs rewards.judge (its template and mode)")
        return
    if ":" in source:
        import_reward_function(source, where)
        return
    hint = difflib.get_close_matches(source, list(SOURCES), n=1)
    extra = f"; did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(f"{where}: {source!r} is neither a reward source ({', '.join(SOURCES)}) nor an import path "
                      f"'package.module:function'{extra}")


def _rows(prompts: list[str], columns: dict) -> list[dict]:
    """Prompt rows as the rewards library reads them (id, prompt = the user's words, prompt_text, answer)."""
    n = len(prompts)
    return [{"id": i, "prompt": u, "prompt_text": p, "answer": a}
            for i, u, p, a in zip(columns.get("prompt_id", [None] * n), columns.get("user_prompt", prompts), prompts,
                                  columns.get("answer", [None] * n), strict=True)]


class PolicyRewardFunction:
    """A reward function that scores with the GRPO trainer's current policy; `bind(trainer)` once it exists."""

    def __init__(self, name: str, tokenizer, batch_size: int = 32):
        self.__name__ = name  # TRL logs rewards/<__name__>/mean
        self.tokenizer, self.batch_size, self.trainer = tokenizer, batch_size, None

    def bind(self, trainer) -> None:
        self.trainer = trainer

    @contextmanager
    def policy(self) -> Iterator[torch.nn.Module]:
        """The live policy, unwrapped as TRL unwraps it to generate (ZeRO-3 gathered), in eval mode, no grad."""
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

    def token_pairs(self, prompts: list[str], completion_ids: list[list[int]]) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, completion ids) exactly as sampled: prompts tokenized as TRL tokenizes them to generate."""
        return [(self.tokenizer(p)["input_ids"], list(c)) for p, c in zip(prompts, completion_ids, strict=True)]


class SelfCertaintyFunction(PolicyRewardFunction):
    """Self-certainty of each completion's sampled tokens (EOS included when sampled) under the live policy, from its
    logits at temperature 1 (rewards/self_certainty.py), whatever temperature sampled them."""

    def __init__(self, tokenizer, batch_size: int = 32):
        super().__init__("self_certainty", tokenizer, batch_size)

    def __call__(self, prompts, completions, completion_ids, **columns) -> list[float]:
        pairs = self.token_pairs(prompts, completion_ids)
        with self.policy() as model:
            return response_certainty(model, pairs, self.batch_size, self.tokenizer.pad_token_id or 0)


class LikelihoodFunction(PolicyRewardFunction):
    """Mean log π(y_t | x, y_<t) of each completion's sampled tokens under the live policy."""

    def __init__(self, tokenizer, batch_size: int = 32):
        super().__init__("likelihood", tokenizer, batch_size)

    def __call__(self, prompts, completions, completion_ids, **columns) -> list[float]:
        pairs = self.token_pairs(prompts, completion_ids)
        with self.policy() as model:
            logps = token_logprobs(model, pairs, self.batch_size, self.tokenizer.pad_token_id or 0)
        return [sequence_score(lp, normalize=True) for lp in logps]


class ModelRewardFunction(PolicyRewardFunction):
    """A text-reading reward model of the rewards library (judge, P(True)) built on the live policy per call."""

    def __init__(self, name: str, tokenizer, make: Callable):
        super().__init__(name, tokenizer)
        self.make = make  # live policy → RewardModel

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float | None]:
        with self.policy() as model:
            return self.make(model).score(_rows(prompts, columns), list(completions)).scores


def majority(prompts, completions, prompt_id, **columns) -> list[float]:
    """1.0 where the completion's answer is its prompt's majority answer. The prompt's completions may be spread
    over processes, so answers are gathered from all of them (TRL gathers rewards the same way) and grouped by id."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    answers = [extract_answer(c) for c in completions]
    all_ids, all_answers = gather_object(list(prompt_id)), gather_object(answers)
    groups: dict = {}
    for i, g in enumerate(all_ids):
        groups.setdefault(g, []).append(i)
    scores = [0.0] * len(all_ids)
    for idx in groups.values():
        for i, s in zip(idx, majority_match([all_answers[i] for i in idx]), strict=True):
            scores[i] = s
    start = PartialState().process_index * len(completions)
    return scores[start : start + len(completions)]


def verifier(prompts, completions, user_prompt, answer, **columns) -> list[float]:
    return [float(is_correct({"prompt": u, "answer": a}, c))
            for u, a, c in zip(user_prompt, answer, completions, strict=True)]


class RepetitionPenalty:
    """−seq-rep-n of each completion's tokens: 0 without repeated n-grams, → −1 for a loop."""

    __name__ = "repetition"

    def __init__(self, n: int = 4):
        self.n = n

    def __call__(self, prompts, completions, completion_ids, **columns) -> list[float]:
        return [0.0 - repeated_ngram_fraction(ids, self.n) for ids in completion_ids]  # 0.0, not -0.0


class LengthPenalty:
    """−tokens / max_completion_length of each completion: 0 for empty, −1 at the length limit."""

    __name__ = "length"

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens

    def __call__(self, prompts, completions, completion_ids, **columns) -> list[float]:
        return [-len(ids) / self.max_tokens for ids in completion_ids]


def build_reward_functions(specs: list[GRPORewardConfig], rewards: RewardsConfig, tokenizer, max_tokens: int,
                           seed: int = 0) -> tuple[list[Callable], list[float]]:
    """TRL's (reward_funcs, reward_weights) for `train.grpo_rewards`; policy sources still need `bind(trainer)`."""
    funcs: list[Callable] = []
    for k, spec in enumerate(specs):
        where = f"train.grpo_rewards[{k}].source"
        check_source(spec.source, where, rewards)
        fn: Callable
        if spec.source == "self_certainty":
            fn = SelfCertaintyFunction(tokenizer, spec.batch_size)
        elif spec.source == "likelihood":
            fn = LikelihoodFunction(tokenizer, spec.batch_size)
        elif spec.source == "judge":
            fn = ModelRewardFunction("judge", tokenizer, partial(JudgeReward, tokenizer=tokenizer, cfg=rewards.judge,
                                                                 seed=seed))
        elif spec.source == "ptrue":
            fn = ModelRewardFunction("ptrue", tokenizer, partial(PTrueReward, tokenizer=tokenizer,
                                                                 cfg=PTrueConfig(batch_size=spec.batch_size)))
        elif spec.source == "majority":
            fn = majority
        elif spec.source == "verifier":
            fn = verifier
        elif spec.source == "repetition":
            fn = RepetitionPenalty(spec.ngram)
        elif spec.source == "length":
            fn = LengthPenalty(max_tokens)
        else:
            fn = import_reward_function(spec.source, where)
        funcs.append(fn)
    names = [reward_name(f) for f in funcs]
    for k, name in enumerate(names):
        if name in names[:k]:
            raise ConfigError(f"train.grpo_rewards[{k}].source: a second reward named {name!r}; TRL logs rewards by "
                              "name, so each must be unique")
    return funcs, [spec.weight for spec in specs]


def reward_name(fn: Callable) -> str:
    """The name TRL logs a reward function under (its __name__, or its class name)."""
    return getattr(fn, "__name__", type(fn).__name__)


def bind_reward_functions(funcs: list[Callable], trainer) -> None:
    for fn in funcs:
        if isinstance(fn, PolicyRewardFunction):
            fn.bind(trainer)
