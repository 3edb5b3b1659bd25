"""The one protocol every internal reward model implements, and what the registry knows about each.

A reward model scores responses to prompt rows, one float per response (None when it cannot score one):

    score(rows, responses, token_ids=None) -> RewardOutput

`rows[i]` is response i's prompt row (`selfalign.rows.PromptRow`: id, prompt, prompt_text, answer). `token_ids`,
when the caller has them (GRPO), are each response's (prompt ids, response ids) exactly as sampled; a reward that
reads tokens scores those, and otherwise tokenizes as TRL's DPO does (EOS appended). Whoever builds a reward model
(a round's reward stage, GRPO's reward functions, best-of-N) hands it a `RewardContext`: the model whose rewards
they are, and the other models a round can offer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from selfalign.config import ConfigError

TokenIds = Sequence[tuple[list[int], list[int]]]


@dataclass
class RewardOutput:
    """One score per sample (None: the reward model could not score it), plus per-sample details."""

    scores: list[float | None]
    details: list[dict] = field(default_factory=list)


class RewardModel(Protocol):
    name: str

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        """Score `responses[i]` to prompt row `rows[i]` (keys: id, prompt, prompt_text, answer)."""
        ...


@dataclass
class RewardContext:
    """What a reward model may read.

    policy: the model whose own rewards these are (M_{t-1} in round t's reward stage, the live policy in GRPO, the
    evaluated model in best-of-N). models: the other models of a round by role (`base`: the weights before seed
    SFT; `initial`: the round-0 model; `previous`: the model before the policy), None where there are none.
    """

    tokenizer: Any
    policy: Any = None
    models: Callable[[str], Any] | None = None
    seed: int = 0
    max_new_tokens: int | None = None  # the sampler's length limit (the length penalty's scale)
    where: str = "rewards"  # what builds the reward models, for error messages
    inputs: dict[str, Any] = field(default_factory=dict)  # what a round's methods hand its rewards, by name

    def input(self, name: str, reward: str):
        """`inputs[name]`; a one-line ConfigError where this context has none (outside a round)."""
        if name not in self.inputs:
            raise ConfigError(f"{self.where}: {reward} needs its round's {name} inputs (the reference set), which "
                              "only a round's reward stage or GRPO training has")
        return self.inputs[name]

    def model(self, role: str, reward: str):
        if self.models is None:
            raise ConfigError(f"{self.where}: {reward} needs the {role} model, which is not available here "
                              "(only in a round's reward stage)")
        return self.models(role)


@dataclass(frozen=True)
class RewardSpec:
    """A registered reward model: its name in recipes, its options (a dataclass; `{}` = the defaults), how to build
    it, and what it reads.

    needs: `policy` (forward passes of the context's policy), `reference` (another model of the round, named by its
    options), `answers` (ground truth in the prompt rows), `inputs` (what a round's methods hand it,
    `RewardContext.inputs`: InfAlign's reference set). grouped: its score of a sample depends on the other
    samples of the same prompt, so every sample of a prompt must be in one `score` call.
    """

    name: str
    config: type
    build: Callable[[Any, RewardContext], RewardModel]
    summary: str
    needs: tuple[str, ...] = ("policy",)
    grouped: bool | Callable[[Any], bool] = False  # or a function of its options (P(True) with brainstorming)
    check: Callable[[Any, str], None] | None = None  # recipe check of its options: check(cfg, where)

    def is_grouped(self, cfg: Any = None) -> bool:
        """Whether the reward with options `cfg` (None: its defaults) scores a sample against its prompt's others."""
        if callable(self.grouped):
            return bool(self.grouped(cfg if cfg is not None else self.config()))
        return self.grouped
