"""cDPO's grading and pairs: verifier and majority grading, most frequent correct vs most frequent wrong answer."""

from __future__ import annotations

import pytest

from selfalign.config import ConfigError
from selfalign.methods.cdpo import answer_frequency_pairs, frequency_pair, grade, resolve_grading
from selfalign.sandbox.task import solve

PROMPT = "Q:47+38+15|S:"
RIGHT = solve(PROMPT)  # 47+38=85;85+15=100;A:100


def group(pid, responses, answer="100", prompt=PROMPT):
    return {"row": {"id": pid, "prompt": prompt, "prompt_text": prompt, "answer": answer},
            "samples": [{"response": y} for y in responses]}


def test_frequency_pair_most_frequent_correct_vs_most_frequent_wrong():
    answers = ["7", "9", "5", "9", "5", "5", None]
    correct = [False, True, False, True, False, False, False]
    assert frequency_pair(answers, correct) == (1, 2)  # "9" (twice, correct) vs "5" (three times, wrong)
    assert frequency_pair(["1", "1"], [True, True]) is None
    assert frequency_pair(["1", "2"], [False, False]) is None
    # equally frequent wrong answers: the one seen first; no answer is one wrong "answer" too
    assert frequency_pair([None, "3", "4", "4", "3", None, "9"], [False] * 6 + [True]) == (6, 0)


def test_verifier_grading_on_the_sandbox():
    responses = ["47+38=86;86+15=101;A:101", RIGHT, "47+38=85;85+15=90;A:90", "47+38=86;86+15=101;A:101",
                 "garbled"]
    assert grade(group("p", responses)["row"], responses, "verifier") == [False, True, False, False, False]
    pairs, info, grades = answer_frequency_pairs([group("p", responses)], "auto")
    assert info["grading"] == "verifier" and grades == {"p": [False, True, False, False, False]}
    (p,) = pairs
    assert (p["chosen_sample"], p["rejected_sample"]) == (1, 0)
    assert (p["chosen_answer"], p["rejected_answer"], p["chosen_count"], p["rejected_count"]) == ("100", "101", 1, 2)


def test_majority_grading_needs_a_strict_leader():
    row = {"id": "q", "prompt": "What is 2+2?", "prompt_text": "What is 2+2?", "answer": None}
    assert grade(row, ["4", "5", "4", "no idea"], "majority") == [True, False, True, False]
    assert grade(row, ["4", "5", "5", "4"], "majority") is None  # tied
    assert grade(row, ["no", "answer"], "majority") is None
    groups = [{"row": row, "samples": [{"response": y} for y in ["It is 4", "5", "4", "3"]]},
              {"row": {**row, "id": "tie"}, "samples": [{"response": y} for y in ["4", "5"]]},
              {"row": {**row, "id": "all"}, "samples": [{"response": y} for y in ["4", "4"]]}]
    pairs, info, grades = answer_frequency_pairs(groups, "auto")  # no answers: auto is majority
    assert info == {"grading": "majority", "kept": 1, "dropped_one_sided": 1, "ungraded_prompts": 1,
                    "graded_correct": 4 / 6}
    assert set(grades) == {"q", "all"}
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("It is 4", "5")


def test_verifier_grading_without_answers_is_a_config_error():
    with pytest.raises(ConfigError, match="cdpo.grading: verifier needs an answer for every prompt; 'x' has none"):
        resolve_grading("verifier", [{"id": "y", "answer": "1"}, {"id": "x", "answer": None}])
    assert resolve_grading("majority", [{"id": "y", "answer": "1"}]) == "majority"
