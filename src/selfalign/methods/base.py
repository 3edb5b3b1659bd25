"""What a method is to the round loop: a class whose hooks the stages call, and the roles it takes.

A method is active when its recipe section is set (`section`), or by its own test (`active`). The stages call the
hooks of every active method in registry order; a hook a method does not override does nothing. Roles say what a
method takes over, so that two methods cannot both do it (checked once, in `selfalign.methods.resolve`):

- `algorithm`: who trains (DPO or GRPO) and which stages a round has;
- `pairs`: who builds the round's preference pairs (otherwise the DPO method's best-vs-worst / all-pairs rule);
- `label`: who sets each pair's soft label.

A DPO method whose loss needs a `trainers/` subclass names it in `trainer`; with several, one must subclass the
other (the most derived is used), or the methods cannot be combined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from selfalign.context import RoundContext
    from selfalign.rows import Group, PromptRow


class Method:
    name: ClassVar[str]
    title: ClassVar[str]  # how errors name it, e.g. "CREAM (consistency)"
    section: ClassVar[str | None] = None  # its top-level recipe key (absent or null: the method is off)
    config: ClassVar[type | None] = None  # that section's dataclass
    algorithm: ClassVar[str | None] = "dpo"  # the train.algorithm it works with (None: any)
    stages: ClassVar[tuple[str, ...]] = ()  # an algorithm's round stages
    before_stages: ClassVar[tuple[str, ...]] = ()  # its own stages, run first in every round (`run_stage`)
    seed_stages: ClassVar[tuple[str, ...]] = ()  # its own stages, run once in round 0 after seed SFT (`run_stage`)
    uses_pairs_reward: ClassVar[bool] = True  # a pair builder that ranks samples by pairs.reward
    pairs_what: ClassVar[str] = "pairs"  # what a pair builder builds, for errors
    label_what: ClassVar[str] = ""  # what a label setter is called in the recipe, for errors
    label_hint: ClassVar[str] = ""  # how to keep it without setting labels, for errors

    def __init__(self, recipe: Any):
        self.recipe = recipe
        self.cfg = getattr(recipe, self.section) if self.section else None

    @classmethod
    def active(cls, recipe: Any) -> bool:
        return cls.section is not None and getattr(recipe, cls.section) is not None

    @property
    def where(self) -> str:
        """The recipe key errors about this method name (a subclass may set it as a class attribute)."""
        return self.section or self.name

    def roles(self) -> set[str]:
        return set()

    def trainer(self) -> str | None:
        """The DPO trainer class its loss needs, as "module:Class" (imported only when training)."""
        return None

    # ----------------------------------------------------------------------------- checks

    def check(self) -> None:
        """Its recipe checks: ConfigError naming the key."""

    def check_launch(self, world_size: int, zero_stage: int | None) -> None:
        """What it cannot do under this launch, before any stage runs."""

    # ----------------------------------------------------------------------------- hooks of the stages

    def run_stage(self, ctx: RoundContext, t: int, name: str):
        """One of its `before_stages` in round t (or `seed_stages`, t = 0); returns (artifact path or None,
        statistics)."""
        raise NotImplementedError(f"{self.name} has no stage {name!r}")

    def screen_prompts(self, ctx: RoundContext, t: int, rows: list[PromptRow]) -> list[PromptRow]:
        """Generate stage and online training, before any sample is drawn: the round's prompts it keeps."""
        return rows

    def reward_inputs(self, ctx: RoundContext, t: int) -> dict[str, Any]:
        """Reward stage and GRPO's reward functions: what it hands round t's rewards (`RewardContext.inputs`)."""
        return {}

    def extra_scores(self, ctx: RoundContext, t: int, rows: list[PromptRow],
                     responses: list[str]) -> dict[str, list[float | None]]:
        """Reward stage: more score columns of a chunk of samples (rewards.jsonl `scores`)."""
        return {}

    def filter_groups(self, ctx: RoundContext, t: int, groups: dict[str, Group]) -> dict:
        """Pairs stage, first: drop prompts (delete them from `groups`) or samples (clear their scores) before any
        pair is built; returns statistics."""
        return {}

    def group_filter(self, ctx: RoundContext, t: int) -> Callable[[PromptRow, list[str]], dict] | None:
        """Online training (GRPO): a function of each sampled group, (prompt row, its responses) -> a record with
        `keep` (False: the group adds no policy gradient) and `reason`; its `name` prefixes the statistics."""
        return None

    def build_pairs(self, ctx: RoundContext, t: int, groups: dict[str, Group]) -> tuple[list[dict], dict]:
        """Pairs stage, `pairs` role: the round's pairs and statistics."""
        raise NotImplementedError(f"{self.name} builds no pairs")

    def label_pairs(self, ctx: RoundContext, t: int, groups: dict[str, Group], pairs: list[dict]) -> dict:
        """Pairs stage: set (`label` role) or measure labels of the built pairs; returns statistics."""
        return {}

    def annotate_pairs(self, ctx: RoundContext, t: int, groups: dict[str, Group], pairs: list[dict]) -> dict:
        """Pairs stage, last: add columns to the pairs (per-token weights or rewards); returns statistics."""
        return {}

    def trainer_kwargs(self, ctx: RoundContext, pairs: list[dict]) -> dict:
        """Train stage: arguments of the DPO trainer class for this method."""
        return {}

    def train(self, ctx: RoundContext, t: int):
        """Train stage, `algorithm` role: train M_t from M_{t-1}; returns (trainer, statistics), or (None, statistics)
        when there is nothing to train on."""
        raise NotImplementedError(f"{self.name} does not train")
