"""The rows a round passes between its stages, typed: a prompt row, a generated sample, a scored group.

They stay plain dicts (TypedDicts), since they are read from and written to JSONL as they are; each is built in
one place, by the functions below.
"""

from __future__ import annotations

from typing import Any, TypedDict


class PromptRow(TypedDict, total=False):
    """A prompt: `prompt` the user's words, `prompt_text` the model's input (chat template applied), `answer` the
    ground truth when the source has one (a verifier reads it; no reward trains on it unless a recipe says so)."""

    id: str
    prompt: str
    prompt_text: str
    answer: str | None
    messages: list[dict]


class Generation(TypedDict):
    """One sample of generations.jsonl."""

    prompt_id: str
    prompt: str
    prompt_text: str
    answer: str | None
    sample: int
    response: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str


class ScoredSample(TypedDict):
    """One sample of a group: its response and every reward's score and details (rewards.jsonl)."""

    response: str
    scores: dict[str, float | None]
    details: dict[str, Any]


class Group(TypedDict):
    """A prompt and its scored samples, in sample order."""

    row: PromptRow
    samples: list[ScoredSample]


def prompt_row(id: Any, prompt: str, prompt_text: str, answer: Any = None) -> PromptRow:
    return {"id": id, "prompt": prompt, "prompt_text": prompt_text, "answer": answer}


def row_of(g: Generation) -> PromptRow:
    """The prompt row a generated sample answers."""
    return prompt_row(g["prompt_id"], g["prompt"], g["prompt_text"], g.get("answer"))


def generation(row: PromptRow, k: int, sample: Any) -> Generation:
    """Sample `k` of `row` (a `generation.Sample`), as generations.jsonl stores it."""
    return {"prompt_id": row["id"], "prompt": row["prompt"], "prompt_text": row["prompt_text"],
            "answer": row.get("answer"), "sample": k, "response": sample.text, "token_ids": sample.token_ids,
            "logprobs": [round(x, 5) for x in sample.logprobs], "finish_reason": sample.finish_reason}


def groups(generations: list[Generation], rewards: list[dict]) -> dict[str, Group]:
    """Prompt id → its group, from generations.jsonl and the rewards.jsonl lines of the same samples."""
    out: dict[str, Group] = {}
    for g, r in zip(generations, rewards, strict=True):
        grp = out.setdefault(g["prompt_id"], {"row": row_of(g), "samples": []})
        grp["samples"].append({"response": g["response"], "scores": r["scores"], "details": r["details"]})
    return out
