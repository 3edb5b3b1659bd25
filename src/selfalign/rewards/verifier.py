"""Ground truth for verifiable tasks (the sandbox): 1.0 if the final answer is right, else 0.0.

An oracle: it is for evaluation and for comparison runs, never a default training reward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from selfalign import sandbox
from selfalign.rewards.base import RewardOutput, RewardSpec, TokenIds


@dataclass
class VerifierConfig:
    """Ground truth (sandbox, or the prompt rows' answers): an oracle for comparison runs, never a default reward."""


def extract_answer(response: str) -> str | None:
    """The final answer: after the last `A:` (sandbox), else after `####` (GSM8K), else the last number."""
    for marker in ("A:", "####"):
        if marker in response:
            return response.rsplit(marker, 1)[1].strip().replace(",", "") or None
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", response)
    return numbers[-1].replace(",", "") if numbers else None


def is_correct(row: dict, response: str) -> bool:
    if row.get("task") == "sandbox" or row["prompt"].startswith("Q:") and row["prompt"].endswith("|S:"):
        return sandbox.verify(row["prompt"], response)
    if row.get("answer") is None:
        raise ValueError(f"prompt row {row.get('id')!r} has no answer to verify against")
    return extract_answer(response) == str(row["answer"]).strip()


class VerifierReward:
    name = "verifier"

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        return RewardOutput([float(is_correct(r, y)) for r, y in zip(rows, responses, strict=True)])


SPEC = RewardSpec(
    "verifier", VerifierConfig, lambda cfg, ctx: VerifierReward(),
    "1 if its final answer is right (ground truth: an oracle for comparison runs)", needs=("answers",))
