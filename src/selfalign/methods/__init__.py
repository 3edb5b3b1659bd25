"""Self-improvement methods, one module each, and the one place that decides which of them a recipe runs.

A recipe turns a method on with its section (`consistency:`, `scir:`, `treg:`, `cdpo:`) or its key
(`pairs.length_control`, `pairs.label: judge_strength`, `train.algorithm: grpo`); DPO (SRLM's loop) is the default.
`resolve(recipe)` returns the active methods and rejects combinations that cannot work, with one line: two methods
that build the pairs, two that set the labels, a method of the other algorithm, or DPO losses that are not one
trainer class. Adding a method: a module with a `Method` subclass, one line in `METHODS`, a recipe, tests (README,
"How to add a method").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from selfalign.config import ConfigError
from selfalign.methods.base import Method
from selfalign.methods.cdpo import CDPO
from selfalign.methods.cream import CREAM
from selfalign.methods.dpo import DPO, import_class
from selfalign.methods.gencls import GenCLS
from selfalign.methods.grpo import GRPO
from selfalign.methods.infalign import InfAlign
from selfalign.methods.lastde_filter import LastdeFilter
from selfalign.methods.meta_rewarding import MetaRewarding
from selfalign.methods.osp import OSP
from selfalign.methods.pik import PIK
from selfalign.methods.scir import SCIR
from selfalign.methods.treg import TREG

__all__ = ["METHODS", "Method", "Methods", "resolve"]

#: every method, in the order the stages call their hooks
METHODS: tuple[type[Method], ...] = (DPO, GRPO, MetaRewarding, OSP, CREAM, SCIR, CDPO, TREG, PIK, LastdeFilter,
                                     InfAlign, GenCLS)


@dataclass
class Methods:
    """The methods a recipe runs: `algorithm` trains, `pairs` builds the pairs (DPO), `trainer` is the DPO trainer
    class ("module:Class", None for TRL's own)."""

    active: list[Method]
    algorithm: Method
    pairs: Method | None
    trainer: str | None

    def __iter__(self) -> Iterator[Method]:
        return iter(self.active)

    @property
    def stages(self) -> tuple[str, ...]:
        """A round's stages: the methods' own (`before_stages`), then the algorithm's."""
        return (*[s for m in self.active for s in m.before_stages], *self.algorithm.stages)

    @property
    def seed_stages(self) -> tuple[str, ...]:
        """The methods' stages run once before round 0's evaluation, after seed SFT (`seed_stages`)."""
        return tuple(s for m in self.active for s in m.seed_stages)

    def stage(self, name: str) -> Callable:
        """`run(ctx, t)` of the method stage `name`."""
        (owner,) = [m for m in self.active if name in (*m.before_stages, *m.seed_stages)]
        return lambda ctx, t: owner.run_stage(ctx, t, name)

    def train_prompts(self, ctx, t: int) -> list[dict]:
        """Round t's training prompts, after every method's `screen_prompts` (the P(IK) probe's screen)."""
        from selfalign.data.prompts import train_rows

        rows = train_rows(ctx.recipe.prompts, t, ctx.store.tokenizer)
        for m in self.active:
            rows = m.screen_prompts(ctx, t, rows)
        return rows

    def reward_inputs(self, ctx, t: int) -> dict:
        """What the methods hand round t's rewards (`RewardContext.inputs`)."""
        return {k: v for m in self.active for k, v in m.reward_inputs(ctx, t).items()}


def _trainer(active: list[Method], recipe) -> str | None:
    """The most derived of the trainer classes the methods need; ConfigError when two are not one line of
    subclasses, or when train.dpo sets what that class refuses."""
    chosen: tuple[Method, str] | None = None
    for m in active:
        path = m.trainer()
        if path is None or chosen is not None and path == chosen[1]:
            continue
        if chosen is None:
            chosen = (m, path)
            continue
        a, b = import_class(chosen[1]), import_class(path)
        if issubclass(b, a):
            chosen = (m, path)
        elif not issubclass(a, b):
            raise ConfigError(f"{m.where}: {m.title}'s DPO loss ({b.__name__}) cannot be combined with "
                              f"{chosen[0].title}'s ({a.__name__}, {chosen[0].where}); choose one")
    if chosen is None:
        return None
    if recipe.train.dpo:
        cls = import_class(chosen[1])
        for key in recipe.train.dpo:
            if key in getattr(cls, "refused_dpo_args", ()):
                raise ConfigError(f"train.dpo.{key}: not supported with {chosen[0].where} ({cls.refused_reason})")
    return chosen[1]


def resolve(recipe) -> Methods:
    """The recipe's methods, each checked, and their combination checked; ConfigError (one line) otherwise."""
    active = [cls(recipe) for cls in METHODS if cls.active(recipe)]
    algorithm = recipe.train.algorithm
    for m in active:
        if m.algorithm is not None and m.algorithm != algorithm:
            raise ConfigError(f"{m.where}: a {m.algorithm.upper()} method; it cannot be combined with "
                              f"train.algorithm {algorithm}")
    for m in active:
        m.check()
    builders = [m for m in active if "pairs" in m.roles()]
    if len(builders) > 1:
        a, b = builders[0], builders[1]
        other = ("leave pairs.rule and pairs.length_control unset" if isinstance(a, DPO | MetaRewarding)
                 else f"so does {a.where}; choose one")
        raise ConfigError(f"{b.where}: builds its own {b.pairs_what}; {other}")
    labels = [m for m in active if "label" in m.roles()]
    if len(labels) > 1:
        a, b = labels[0], labels[1]
        raise ConfigError(f"{a.where}: {a.label_what} and {b.label_what} both set the pair label; choose one"
                          f"{a.label_hint or b.label_hint}")
    (trains,) = [m for m in active if "algorithm" in m.roles()]
    pairs = next(iter(builders), trains if algorithm == "dpo" else None)
    return Methods(active, trains, pairs, _trainer(active, recipe) if algorithm == "dpo" else None)


def sections() -> list[tuple[str, type]]:
    """(recipe key, config dataclass) of every method that has a section."""
    return [(cls.section, cls.config) for cls in METHODS if cls.section is not None and cls.config is not None]
