"""Integration: self-rewarding rounds on the real sandbox model.

The sandbox model is built on first use (a few minutes on 2 CPU cores) and cached under
$SELFALIGN_CACHE (default ~/.cache/selfalign), so later runs of the suite reuse it.
"""

from __future__ import annotations

import pytest

from selfalign import pipeline
from selfalign.artifacts import read_jsonl
from selfalign.recipe import load_recipe

SMALL = ["rounds=1", "prompts.train_per_round=128", "prompts.eval_prompts=128", "tracking.wandb.enabled=false",
         "tracking.console=false"]


@pytest.mark.slow
def test_quickstart_round_on_the_sandbox_model(tmp_path):
    summary = pipeline.run(load_recipe("recipes/quickstart.yaml", SMALL), tmp_path)
    r0, r1 = summary["rounds"]
    # The base model has room to improve, and is far from random.
    assert 0.2 <= r0["eval"]["accuracy_sampled"] <= 0.95
    assert r1["pairs"]["kept"] > 0 and r1["train"]["steps"] >= 1
    # The model's own likelihood is a real reward signal: chosen samples are right more often.
    assert r1["pairs"]["chosen_correct"] > r1["pairs"]["rejected_correct"]
    # The judge (expected mode) scored every sample in [1, 5]; its agreement with the truth is logged.
    scores = [r["scores"]["judge"] for r in read_jsonl(tmp_path / "round_1/rewards.jsonl")]
    assert len(scores) == 128 * 8 and all(1.0 <= s <= 5.0 for s in scores)  # the quickstart samples 8 per prompt
    assert 0.0 <= r1["rewards"]["judge_pairwise_accuracy"] <= 1.0


@pytest.mark.slow
def test_srlm_round_on_the_sandbox_model(tmp_path):
    """SRLM's written judgments, sampled 3 times per response, parse and are averaged."""
    summary = pipeline.run(load_recipe("recipes/sandbox/srlm.yaml", SMALL), tmp_path)
    rewards = summary["rounds"][1]["rewards"]
    assert rewards["judge_parse_failures"] <= 0.05 * 128 * 4 * 3
    rows = read_jsonl(tmp_path / "round_1/rewards.jsonl")
    for r in rows:
        parsed = [p for p in r["details"]["judge"]["parsed"] if p is not None]
        assert len(r["details"]["judge"]["judgments"]) == 3
        if parsed:
            assert r["scores"]["judge"] == pytest.approx(sum(parsed) / len(parsed))
    assert summary["rounds"][1]["pairs"]["kept"] > 0
