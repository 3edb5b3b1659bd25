"""What every stage of a run is given: the recipe, the run directory, the models, the resolved methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfalign.artifacts import RunDir
from selfalign.model_store import ModelStore


@dataclass
class RoundContext:
    recipe: Any  # selfalign.recipe.Recipe
    run: RunDir
    store: ModelStore
    methods: Any  # selfalign.methods.Methods: the recipe's methods, resolved
    main: bool = True  # under `accelerate launch`, only the main process writes the run directory
    tracker: Any = None  # selfalign.tracking.Tracker, once the run has started


def chunk_seed(seed: int, t: int, stage: str, chunk: int) -> int:
    """The seed of one chunk of a stage, so a chunk's rows depend on (seed, round, stage, chunk) alone."""
    return (seed * 1_000_003 + t * 10_007 + sum(map(ord, stage)) * 101 + chunk) % (2**31)
