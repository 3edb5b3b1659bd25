"""`selfalign critical-tokens` on a hand-made run directory: wrong sandbox solutions whose first wrong token is known,
token scores built to hit at top-1, at top-3 only, and not at all; the random baseline's exact expectation; the
rollout check with a stand-in sampler that can continue exactly the prefixes of the correct solution."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_recipe
from transformers import AutoTokenizer

from selfalign import generation
from selfalign.artifacts import write_jsonl
from selfalign.cli import main
from selfalign.critical_tokens import critical_token_index, lowest, rollout_critical_index
from selfalign.generation import Sample
from selfalign.recipe import dump_recipe, recipe_from_dict
from selfalign.sandbox.task import first_error_position, solve

# (prompt, rejected, index of its first wrong token, number of tokens with the EOS)
HIT = ("Q:47+38+15|S:", "47+38=86;86+15=101;A:101", 7, 25)  # "47+38=8|6": 85 → 86
TOP3 = ("Q:12+30+9|S:", "12+30=42;42+9=50;A:50", 15, 22)
MISS = ("Q:20+20+20|S:", "20+20=40;40+20=6", 16, 17)  # stops early: its EOS is the critical token


def scores(n: int, low: dict[int, float]) -> list[float]:
    return [low.get(i, 0.5) for i in range(n)]


@pytest.fixture
def run_dir(tiny_model, tmp_path):
    raw = tiny_recipe(tiny_model, **{"cdpo": {}, "rewards": {"verifier": {}}})
    (tmp_path / "recipe.yaml").write_text(dump_recipe(recipe_from_dict(raw)))
    cases = [(HIT, {7: 0.01}), (TOP3, {2: 0.01, 15: 0.02, 3: 0.03}), (MISS, {0: 0.01, 1: 0.02, 2: 0.03})]
    pairs = [{"prompt_id": f"p{i}", "prompt": prompt, "chosen": solve(prompt), "rejected": rejected,
              "rejected_token_scores": scores(n, low)} for i, ((prompt, rejected, _, n), low) in enumerate(cases)]
    right = "Q:11+11+11|S:"
    pairs.append({"prompt_id": "right", "prompt": right, "chosen": solve(right), "rejected": solve(right),
                  "rejected_token_scores": [0.5] * 19})  # majority grading can reject a right answer: left out
    pairs.append({"prompt_id": "chat", "prompt": "hello", "chosen": "hi", "rejected": "go away",
                  "rejected_token_scores": [0.5] * 8})
    write_jsonl(tmp_path / "round_1/pairs.jsonl", pairs)
    write_jsonl(tmp_path / "round_1/generations.jsonl", [{"prompt_id": p["prompt_id"], "prompt": p["prompt"]}
                                                         for p in pairs])
    return tmp_path


def solution_continuer(model, tokenizer, prompts, *, num_samples=1, **kwargs):
    """Continues a prefix of the correct solution correctly, anything else with junk."""
    out = []
    for text in prompts:
        question, prefix = text.split("|S:", 1)
        target = solve(question + "|S:")
        continuation = target[len(prefix):] if target.startswith(prefix) else "?"
        out.append([Sample(continuation, [], [], "eos")] * num_samples)
    return out


def test_critical_token_index_and_ranking(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    for prompt, rejected, critical, n in (HIT, TOP3, MISS):
        ids = tok(rejected)["input_ids"] + [tok.eos_token_id]
        assert len(ids) == n
        assert critical_token_index(tok, ids, first_error_position(prompt, rejected)) == critical
    assert critical_token_index(tok, tok("12+3")["input_ids"] + [tok.eos_token_id], 4) == 4  # past the text: EOS
    assert lowest([0.3, 0.1, 0.2, 0.1], 3) == [1, 3, 2]


def test_rollout_critical_token(tiny_model, monkeypatch):
    from selfalign.critical_tokens import wrong_solutions

    monkeypatch.setattr(generation, "generate", solution_continuer)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    pairs = [{"prompt_id": "x", "prompt": p, "chosen": solve(p), "rejected": r} for p, r, _, _ in (HIT, MISS)]
    solutions, _ = wrong_solutions(pairs, {}, tok)
    found = [rollout_critical_index(None, tok, s, 2, 1.0, 1.0, 8, 8) for s in solutions]
    assert found == [HIT[2], MISS[2]] == [s["critical"] for s in solutions]
    monkeypatch.setattr(generation, "generate", lambda m, t, prompts, *, num_samples=1, **k: [
        [Sample("?", [], [], "eos")] * num_samples for _ in prompts])
    assert rollout_critical_index(None, tok, solutions[0], 2, 1.0, 1.0, 8, 8) is None  # never solved


def test_critical_tokens_command(run_dir, monkeypatch, capsys):
    monkeypatch.setattr(generation, "generate", solution_continuer)
    assert main(["critical-tokens", str(run_dir), "--rollouts", "2", "--rollout-solutions", "3"]) == 0
    report = json.loads((run_dir / "critical_tokens.json").read_text())
    (entry,) = report["rounds"]
    assert entry["solutions"] == 3 and entry["skipped"] == {"correct": 1, "not_sandbox": 1}
    assert entry["precision"]["cdpo"] == {"top1": pytest.approx(1 / 3), "top3": pytest.approx(2 / 3)}
    sizes = [HIT[3], TOP3[3], MISS[3]]
    assert entry["precision"]["random"] == {"top1": pytest.approx(sum(1 / n for n in sizes) / 3),
                                            "top3": pytest.approx(sum(3 / n for n in sizes) / 3)}
    assert 0 <= entry["precision"]["lowest_likelihood"]["top1"] <= entry["precision"]["lowest_likelihood"]["top3"]
    rollout = entry["rollout"]
    assert (rollout["solutions"], rollout["unsolvable"]) == (3, 0)
    assert rollout["agreement"]["first_error"] == 1.0 and rollout["agreement"]["cdpo"] == pytest.approx(1 / 3)
    records = [json.loads(line) for line in (run_dir / "critical_tokens.jsonl").read_text().splitlines()]
    assert [r["critical"] for r in records] == [HIT[2], TOP3[2], MISS[2]]
    assert "| cdpo | 0.333 | 0.667 |" in (run_dir / "critical_tokens.md").read_text()
    assert "cdpo 0.333 / 0.667" in capsys.readouterr().out


def test_a_run_without_token_scores_is_a_user_error(tiny_model, tmp_path, capsys):
    raw = tiny_recipe(tiny_model)
    (tmp_path / "recipe.yaml").write_text(dump_recipe(recipe_from_dict(raw)))
    write_jsonl(tmp_path / "round_1/pairs.jsonl", [{"prompt_id": "a", "prompt": "Q:1+2|S:", "chosen": "x",
                                                    "rejected": "y"}])
    assert main(["critical-tokens", str(tmp_path)]) == 2
    assert "no round has pairs with token scores" in capsys.readouterr().err
    assert main(["critical-tokens", str(tmp_path / "nowhere")]) == 2
