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


def length_controlled(scores: Sequence[float | None], lengths: Sequence[int], rho: float,
                      min_margin: float = 0.0) -> tuple[int, int] | None:
    """Meta-Rewarding's length-controlled pair (Wu et al. 2024, https://arxiv.org/abs/2407.19594).

    chosen = the shortest response with S ≥ (1 − ρ)·S_max + ρ·S_min, rejected = the longest with
    S ≤ (1 − ρ)·S_min + ρ·S_max (equal lengths: the first sample). None when the chosen does not score more than
    min_margin above the rejected (all scores tied, or overlapping bands picked the same sample).
    """
    scored = [(s, i) for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return None
    hi, lo = max(s for s, _ in scored), min(s for s, _ in scored)
    top = [i for s, i in scored if s >= (1 - rho) * hi + rho * lo]
    bottom = [i for s, i in scored if s <= (1 - rho) * lo + rho * hi]
    w = min(top, key=lambda i: (lengths[i], i))
    r = max(bottom, key=lambda i: (lengths[i], -i))
    if scores[w] - scores[r] <= min_margin:
        return None
    return w, r


def all_pairs(scores: Sequence[float | None], min_margin: float = 0.0,
              max_pairs: int | None = None) -> list[tuple[int, int]]:
    """Every (better, worse) pair with a score gap above min_margin, largest gaps first (OSP's several pairs per
    prompt from one ranking), at most max_pairs of them."""
    scored = [(s, i) for i, s in enumerate(scores) if s is not None]
    pairs = [(i, j) for si, i in scored for sj, j in scored if si - sj > min_margin]
    pairs.sort(key=lambda ij: (-(scores[ij[0]] - scores[ij[1]]), ij))
    return pairs[:max_pairs] if max_pairs is not None else pairs


def build_pairs(groups: Sequence[dict], reward: str, min_margin: float = 0.0, rule: str = "best_vs_worst",
                length_control: float | None = None, max_pairs_per_prompt: int | None = None) -> tuple[list[dict], int]:
    """Preference pairs from each prompt group; returns (pairs, number of prompts that gave none).

    rule `best_vs_worst`: one pair per prompt, highest vs lowest score, or Meta-Rewarding's length-controlled
    choice when `length_control` (ρ) is set; rule `all_pairs`: every pair with a score gap (see `all_pairs`).
    Each group: {"row": prompt row, "samples": [{"response", "scores": {source: float|None}}, ...]}.
    """
    pairs, dropped = [], 0
    for g in groups:
        scores = [s["scores"].get(reward) for s in g["samples"]]
        if rule == "all_pairs":
            chosen = all_pairs(scores, min_margin, max_pairs_per_prompt)
        elif length_control is not None:
            lengths = [len(s["response"]) for s in g["samples"]]
            chosen = [p for p in [length_controlled(scores, lengths, length_control, min_margin)] if p]
        else:
            chosen = [p for p in [best_vs_worst(scores, min_margin)] if p]
        if not chosen:
            dropped += 1
        row = g["row"]
        for w, lo in chosen:
            pairs.append({
                "prompt_id": row["id"], "prompt": row["prompt_text"],
                "chosen": g["samples"][w]["response"], "rejected": g["samples"][lo]["response"],
                "chosen_sample": w, "rejected_sample": lo,
                "chosen_score": scores[w], "rejected_score": scores[lo],
            })
    return pairs, dropped
