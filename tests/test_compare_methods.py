"""scripts/compare_methods.py: per-round rows from a run summary, mean ± std across seeds, the markdown table."""

from __future__ import annotations

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def cm():
    return load_script("compare_methods")


def summary(acc0: float, acc1: float, consistency: float | None) -> dict:
    return {"rounds": [
        {"round": 0, "eval": {"accuracy_sampled": acc0, "accuracy_greedy": 0.9, "mean_response_tokens": 25.0}},
        {"round": 1, "eval": {"accuracy_sampled": acc1, "accuracy_greedy": 0.8, "mean_response_tokens": 26.0},
         "pairs": {"kept": 10, "consistency": consistency, "chosen_correct": 0.7, "rejected_correct": 0.2},
         "rewards": {"judge_pairwise_accuracy": 0.55}},
    ]}


def test_aggregate_and_markdown(cm):
    runs = {"cream": [cm.per_round(summary(0.5, 0.6, 0.8)), cm.per_round(summary(0.7, 0.8, None))],
            "oracle": [cm.per_round(summary(0.5, 0.9, None))]}
    agg = cm.aggregate(runs, rounds=1)
    assert agg["cream"][0]["accuracy_sampled"] == pytest.approx((0.6, 0.1))
    assert agg["cream"][1]["consistency"] == (0.8, 0.0)  # one seed measured it
    assert agg["oracle"][1]["consistency"] is None and agg["oracle"][0]["judge_pairwise_accuracy"] is None
    md = cm.markdown(agg, rounds=1, seeds=[0, 1], command="python scripts/compare_methods.py")
    assert "| CREAM | 0.600 ± 0.100 | 0.700 ± 0.100 |" in md
    assert "| oracle (verifier) | – | – |" in md  # no consistency for the oracle
    assert "| CREAM | 25.0 ± 0.0 | 26.0 ± 0.0 |" in md


def test_unknown_method_is_one_line(cm, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["compare_methods.py", "--methods", "srlm,nope"])
    with pytest.raises(SystemExit) as e:
        cm.main()
    assert str(e.value) == "--methods: no recipe recipes/sandbox/<name>.yaml for nope"
