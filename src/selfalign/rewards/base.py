"""The one protocol every internal reward model implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class RewardOutput:
    """One score per sample (None: the reward model could not score it), plus per-sample details."""

    scores: list[float | None]
    details: list[dict] = field(default_factory=list)


class RewardModel(Protocol):
    name: str

    def score(self, rows: list[dict], responses: list[str]) -> RewardOutput:
        """Score `responses[i]` to prompt row `rows[i]` (keys: prompt, prompt_text, answer?)."""
        ...
