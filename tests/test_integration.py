"""Integration: one self-rewarding round of the quickstart recipe on the real sandbox model.

The sandbox model is built on first use (a few minutes on 2 CPU cores) and cached under
$SELFALIGN_CACHE (default ~/.cache/selfalign), so later runs of the suite reuse it.
"""

from __future__ import annotations

import pytest

from selfalign.artifacts import read_jsonl
from selfalign.config import load_recipe
from selfalign.engine import Engine


@pytest.mark.slow
def test_quickstart_round_on_the_sandbox_model(tmp_path):
    recipe = load_recipe("recipes/quickstart.yaml", [
        "rounds=1", "prompts.train_per_round=128", "prompts.eval_prompts=128", "tracking.wandb.enabled=false",
        "tracking.console=false",
    ])
    summary = Engine(recipe, tmp_path).run_all()
    r0, r1 = summary["rounds"]
    # The base model has room to improve, and is far from random.
    assert 0.2 <= r0["eval"]["accuracy_sampled"] <= 0.95
    rewards = r1["rewards"]
    # Its written judgments parse, and separate right from wrong samples better than chance.
    assert rewards["judge_parse_failures"] <= 0.1 * 128 * 4 * 3
    assert rewards["judge_pairwise_accuracy"] > 0.55
    assert r1["pairs"]["kept"] > 0
    # Chosen samples are right more often than rejected ones: the judge is a real reward signal.
    assert r1["pairs"]["chosen_correct"] > r1["pairs"]["rejected_correct"]
    assert r1["train"]["steps"] >= 1
    judgments = [r["details"]["judge"]["judgments"] for r in read_jsonl(tmp_path / "round_1/rewards.jsonl")]
    assert all(len(j) == 3 for j in judgments)
