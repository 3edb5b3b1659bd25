"""Borda and majority voting against hand-counted votes."""

from __future__ import annotations

import math
import random

import pytest

from selfalign.rewards.voting import borda_vote, borda_votes, majority_vote, rank_order


def test_rank_order_ties_by_sample_order_and_missing_last():
    assert rank_order([0.2, 0.9, 0.5]) == [1, 2, 0]
    assert rank_order([0.5, 0.9, 0.5, 0.9]) == [1, 3, 0, 2]  # equal scores keep sample order
    assert rank_order([None, 0.1, float("nan"), -5.0]) == [1, 3, 0, 2]
    assert rank_order([]) == []


def test_borda_votes_hand_counted():
    # N = 3, ranks by score: sample 0 (r=1), 1 (r=2), 2 (r=3) → votes 3^p, 2^p, 1^p
    answers, scores = ["a", "b", "b"], [0.9, 0.5, 0.4]
    assert borda_votes(answers, scores, power=0.5) == pytest.approx({"a": math.sqrt(3), "b": math.sqrt(2) + 1})
    assert borda_votes(answers, scores, power=0.0) == {"a": 1.0, "b": 2.0}
    assert borda_votes(answers, scores, power=2.0) == {"a": 9.0, "b": 5.0}


def test_power_decides_between_agreement_and_confidence():
    # One confident sample says "a", two less confident ones say "b".
    answers, scores = ["a", "b", "b"], [0.9, 0.5, 0.4]
    assert borda_vote(answers, scores, power=0.0) == "b"  # majority: 2 votes vs 1
    assert borda_vote(answers, scores, power=0.5) == "b"  # √2 + 1 ≈ 2.414 vs √3 ≈ 1.732
    assert borda_vote(answers, scores, power=1.0) == "a"  # 2 + 1 = 3 vs 3: a tie, "a" holds the top sample
    assert borda_vote(answers, scores, power=2.0) == "a"  # 4 + 1 = 5 vs 9


def test_ranks_come_from_the_scores_not_the_order():
    # Same answers, but now the lone "a" is the least confident: it loses at every power.
    answers, scores = ["a", "b", "b"], [0.1, 0.5, 0.4]
    for power in (0.0, 0.5, 1.0, 2.0):
        assert borda_vote(answers, scores, power) == "b"


def test_power_zero_is_majority_voting():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 9)
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        scores = [rng.random() for _ in range(n)]
        counts = {a: answers.count(a) for a in answers if a is not None}
        best = {a: max(s for x, s in zip(answers, scores, strict=True) if x == a) for a in counts}
        # most samples wins; among equals, the highest single score (borda) or the first seen (majority)
        assert borda_vote(answers, scores, power=0.0) == (max(counts, key=lambda a: (counts[a], best[a]))
                                                          if counts else None)
        assert majority_vote(answers) == (max(counts, key=lambda a: (counts[a], -answers.index(a)))
                                          if counts else None)


def test_tie_breaking():
    # equal votes: the answer with the highest single score wins
    assert borda_vote(["a", "b"], [0.1, 0.9], power=0.0) == "b"
    assert borda_vote(["a", "b", "b", "a"], [0.9, 0.8, 0.7, 0.1], power=1.0) == "a"  # 4 + 1 vs 3 + 2
    # equal votes and equal scores: the earlier sample wins
    assert borda_vote(["a", "b"], [0.5, 0.5], power=0.5) == "a"
    assert borda_vote(["b", "a"], [0.5, 0.5], power=0.5) == "b"
    # majority: the answer seen first
    assert majority_vote(["b", "a", "a", "b"]) == "b"
    assert majority_vote(["x", "y", "y"]) == "y"


def test_unparseable_answers_never_win():
    # The two most confident samples have no answer: their votes are lost, "a" wins alone.
    assert borda_vote([None, None, "a"], [0.9, 0.8, 0.1], power=1.0) == "a"
    assert majority_vote([None, None, "7"]) == "7"
    assert borda_vote([None, None], [0.3, 0.2]) is None
    assert majority_vote([None]) is None
    assert borda_vote([], []) is None


def test_missing_scores_rank_last():
    # sample 1 has no score: it ranks 3rd (1 vote at p = 1); "b" gets 3 + 2 from samples 0 and 2
    assert borda_votes(["b", "a", "b"], [0.2, None, 0.1], power=1.0) == {"b": 5.0, "a": 1.0}


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 answers but 1 scores"):
        borda_vote(["a", "b"], [0.1])


def released_borda(answers, confidences, power):
    """backprop07/Self-Certainty, src/voting_from_list.py, confidence_with_file, lines 38–71 (exact-match answers)."""
    sorted_indices = sorted(range(len(confidences)), key=lambda k: confidences[k], reverse=True)
    votes_per_output = [(len(confidences) - rank) ** power for rank in range(len(confidences))]
    votes_map = {sorted_indices[i]: votes_per_output[i] for i in range(len(sorted_indices))}
    votes = [0 for _ in range(len(confidences))]
    for i in range(len(confidences)):
        if answers[i] is None:
            continue
        j = next((j for j in range(i) if answers[j] is not None and answers[j] == answers[i]), None)
        votes[i if j is None else j] += votes_map[i]
    best = votes.index(max(votes))
    return answers[best], votes


def test_released_borda_ties_go_to_the_first_seen_answer_ours_to_the_best_ranked():
    # p = 0: one vote each. Released: "a" (seen first); selfalign: "b" (holds the highest score)
    assert released_borda(["a", "b"], [0.1, 0.9], 0.0)[0] == "a"
    assert borda_vote(["a", "b"], [0.1, 0.9], power=0.0) == "b"
    # p = 1, N = 4, ranks by score: samples 1, 3, 2, 0 get 4, 3, 2, 1 votes; "a" = 1 + 4 = 5 (samples 0, 1),
    # "b" = 2 + 3 = 5 (samples 2, 3): a tie. Released: "a" (seen first); selfalign: "a" too (holds sample 1, r = 1)
    answers, scores = ["a", "a", "b", "b"], [0.1, 0.9, 0.3, 0.5]
    assert released_borda(answers, scores, 1.0) == ("a", [5, 0, 5, 0])
    assert borda_vote(answers, scores, power=1.0) == "a"
    # the same with the answers' first appearance swapped: released "b", selfalign still "a"
    answers, scores = ["b", "a", "b", "a"], [0.3, 0.9, 0.5, 0.1]  # ranks: 1, 2, 0, 3 → 4, 3, 2, 1 votes
    assert released_borda(answers, scores, 1.0) == ("b", [5, 5, 0, 0])  # b: 2 + 3, a: 4 + 1
    assert borda_vote(answers, scores, power=1.0) == "a"
    # equal scores: both rank the earlier sample better (stable sort): x gets 3, y 2 + 1; the tie goes to x in both
    # (released: x is seen first; selfalign: x holds rank 1)
    assert released_borda(["x", "y", "y"], [0.5, 0.5, 0.5], 1.0) == ("x", [3, 3, 0])
    assert borda_vote(["x", "y", "y"], [0.5, 0.5, 0.5], power=1.0) == "x"


def test_same_votes_and_winner_as_released_code_without_ties():
    rng = random.Random(1)
    checked = 0
    for _ in range(500):
        n = rng.randint(1, 8)
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(n)]
        scores = [rng.choice([0.1, 0.2, 0.3, 0.4]) for _ in range(n)]  # few values: many equal scores
        power = rng.choice([0.0, 0.5, 1.0, 2.0])
        winner, released_votes = released_borda(answers, scores, power)
        votes = borda_votes(answers, scores, power)
        # the same totals per answer (released: on each answer's first sample)
        assert {answers[i]: v for i, v in enumerate(released_votes) if v} == pytest.approx(
            {a: v for a, v in votes.items() if v})
        totals = sorted(votes.values(), reverse=True)
        if totals and (len(totals) == 1 or totals[0] - totals[1] > 1e-6):
            assert borda_vote(answers, scores, power) == winner
            checked += 1
    assert checked > 200
