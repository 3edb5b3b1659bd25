"""Tests of DPO's pair rules (best vs worst, all pairs), Meta-Rewarding's length control and the pair builder."""

from __future__ import annotations

import pytest

from selfalign.methods.dpo import all_pairs, best_vs_worst, build_pairs
from selfalign.methods.meta_rewarding import length_controlled


def bvw(min_margin: float = 0.0):
    """The best-vs-worst chooser of one group, as DPO's `choose` applies it."""
    return lambda scores, samples: [p for p in [best_vs_worst(scores, min_margin)] if p]


@pytest.mark.parametrize(("scores", "expected"), [
    ([1.0, 3.0, 2.0], (1, 0)),
    ([2.0, 1.0], (0, 1)),
    ([-0.5, -2.0, -1.0], (0, 1)),
    ([5, 5, 1, 1], (0, 2)),  # equal best and equal worst: the first index wins for both
    ([1, 5, 1, 5], (1, 0)),
    ([None, 2.0, None, 1.0], (1, 3)),  # unscored samples are ignored
    ([3.0, None, 3.0, 4.0], (3, 0)),
])
def test_best_vs_worst(scores, expected):
    assert best_vs_worst(scores) == expected


@pytest.mark.parametrize("scores", [
    [],
    [4.0],
    [None, None, None],
    [None, 3.0, None],  # fewer than 2 scored samples
    [2.0, 2.0, 2.0],  # a tie
    [0.0, None, 0.0],
])
def test_best_vs_worst_none(scores):
    assert best_vs_worst(scores) is None


def test_min_margin():
    # best − worst = 1.5 − 1.0 = 0.5: dropped when the margin is ≤ min_margin
    assert best_vs_worst([1.0, 1.5], min_margin=0.5) is None
    assert best_vs_worst([1.0, 1.5], min_margin=0.6) is None
    assert best_vs_worst([1.0, 1.5], min_margin=0.4) == (1, 0)
    # 4 − 2 = 2 > 1.9
    assert best_vs_worst([2, 3, 4], min_margin=1.9) == (2, 0)
    assert best_vs_worst([2, 3, 4], min_margin=2.0) is None


def group(pid, scores, reward="judge"):
    return {"row": {"id": pid, "prompt": f"raw {pid}", "prompt_text": f"rendered {pid}"},
            "samples": [{"response": f"{pid}-r{k}", "scores": {} if s is ... else {reward: s, "other": -k}}
                        for k, s in enumerate(scores)]}


def test_build_pairs_picks_best_and_worst_and_counts_drops():
    groups = [
        group("a", [2.0, 5.0, 1.0]),  # best: sample 1 (5.0), worst: sample 2 (1.0)
        group("b", [3.0, 3.0]),  # tie: dropped
        group("c", [None, 4.0]),  # one scored: dropped
        group("d", [..., 1.0, 2.0]),  # sample 0 has no score for this reward: ignored
    ]
    pairs, dropped = build_pairs(groups, "judge", bvw())
    assert dropped == 2
    assert pairs == [
        {"prompt_id": "a", "prompt": "rendered a", "chosen": "a-r1", "rejected": "a-r2",
         "chosen_sample": 1, "rejected_sample": 2, "chosen_score": 5.0, "rejected_score": 1.0},
        {"prompt_id": "d", "prompt": "rendered d", "chosen": "d-r2", "rejected": "d-r1",
         "chosen_sample": 2, "rejected_sample": 1, "chosen_score": 2.0, "rejected_score": 1.0},
    ]


def test_build_pairs_uses_the_named_reward():
    # "other" is −k for sample k, so by "other" the first sample is best and the last is worst.
    pairs, dropped = build_pairs([group("a", [1.0, 2.0, 3.0])], "other", bvw())
    assert dropped == 0
    assert (pairs[0]["chosen_sample"], pairs[0]["rejected_sample"]) == (0, 2)
    assert (pairs[0]["chosen_score"], pairs[0]["rejected_score"]) == (0, -2)


def test_build_pairs_with_min_margin_and_unknown_reward():
    groups = [group("a", [1.0, 1.3]), group("b", [1.0, 2.0])]
    # margins: a: 0.3, b: 1.0; with min_margin 0.5 only b survives
    pairs, dropped = build_pairs(groups, "judge", bvw(0.5))
    assert [p["prompt_id"] for p in pairs] == ["b"] and dropped == 1
    pairs, dropped = build_pairs(groups, "missing", bvw())
    assert pairs == [] and dropped == 2


def test_build_pairs_empty():
    assert build_pairs([], "judge", bvw()) == ([], 0)


def test_length_control_by_hand():
    scores = [5.0, 4.8, 4.0, 1.0, 1.4]
    lengths = [100, 40, 10, 30, 80]
    # ρ = 0: the shortest top-scored sample vs the longest bottom-scored one
    assert length_controlled(scores, lengths, 0.0) == (0, 3)
    # ρ = 0.1: top band S ≥ 4.6 → {0, 1}, shortest 1; bottom band S ≤ 1.4 → {3, 4}, longest 4
    assert length_controlled(scores, lengths, 0.1) == (1, 4)
    # ρ = 0.5: both bands are S ≥ 3 and S ≤ 3; shortest top = 2 (len 10), longest bottom = 4
    assert length_controlled(scores, lengths, 0.5) == (2, 4)
    assert length_controlled([2.0, 2.0], [5, 9], 0.3) is None
    assert length_controlled([3.0, None], [5, 9], 0.3) is None


def test_all_pairs_and_build_pairs_rules():
    assert all_pairs([1.0, 3.0, 2.0]) == [(1, 0), (1, 2), (2, 0)]
    assert all_pairs([1.0, 3.0, 2.0], min_margin=1.5) == [(1, 0)]
    assert all_pairs([1.0, 3.0, 2.0], max_pairs=2) == [(1, 0), (1, 2)]
    group = {"row": {"id": "p", "prompt_text": "Q"},
             "samples": [{"response": r, "scores": {"s": s}} for r, s in (("aaaa", 3.0), ("b", 2.9), ("cc", 0.0))]}
    pairs, dropped = build_pairs([group], "s", lambda scores, _: all_pairs(scores))
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("aaaa", "cc"), ("b", "cc"), ("aaaa", "b")]
    lengths = [len(x["response"]) for x in group["samples"]]
    pairs, _ = build_pairs([group], "s", lambda scores, _: [length_controlled(scores, lengths, 0.1)])
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("b", "cc")]
    pairs, _ = build_pairs([group], "s", bvw())
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("aaaa", "cc")]
