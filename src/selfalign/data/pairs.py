"""Pair builders: from K scored samples of one prompt to (chosen, rejected) preference pairs."""

from __future__ import annotations

from collections.abc import Sequence


def best_vs_worst(scores: Sequence[float | None], min_margin: float = 0.0) -> tuple[int, int] | None:
    """(index of the highest score, index of the lowest), or None on a tie (best − worst ≤ min_margin).

    Unscored samples (None) are ignored; among equal scores the first sample wins (ordinal ranking).
    """
    scored = [(s, i) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return None
    best = max(scored, key=lambda si: (si[0], -si[1]))
    worst = min(scored, key=lambda si: (si[0], si[1]))
    if best[0] - worst[0] <= min_margin:
        return None
    return best[1], worst[1]


def build_pairs(groups: Sequence[dict], reward: str, min_margin: float = 0.0) -> tuple[list[dict], int]:
    """One best-vs-worst pair per prompt group; returns (pairs, number of prompts dropped).

    Each group: {"row": prompt row, "samples": [{"response", "scores": {source: float|None}}, ...]}.
    """
    pairs, dropped = [], 0
    for g in groups:
        scores = [s["scores"].get(reward) for s in g["samples"]]
        chosen = best_vs_worst(scores, min_margin)
        if chosen is None:
            dropped += 1
            continue
        w, lo = chosen
        row = g["row"]
        pairs.append({
            "prompt_id": row["id"], "prompt": row["prompt_text"],
            "chosen": g["samples"][w]["response"], "rejected": g["samples"][lo]["response"],
            "chosen_sample": w, "rejected_sample": lo,
            "chosen_score": scores[w], "rejected_score": scores[lo],
        })
    return pairs, dropped
