"""P(IK) prompt filter (methods/pik.py): p̂, the keep interval and the drop reasons by hand, its recipe errors, the
GRPO group mask, and one DPO round on the sandbox model and one GRPO round on the tiny model through the pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_recipe

from selfalign import pipeline
from selfalign.artifacts import RunDir, read_jsonl
from selfalign.config import ConfigError
from selfalign.methods.grpo import group_filter_stats
from selfalign.methods.lastde_filter import lastde_drop
from selfalign.methods.pik import Interval, PHatFilter, drop_reason, filter_stats, grade, p_hat, parse_interval
from selfalign.recipe import recipe_from_dict
from selfalign.rewards.lastde import lastde_score
from selfalign.rewards.verifier import is_correct
from selfalign.trainers.grpo import group_keep


def test_parse_interval_and_membership():
    open_ = parse_interval("(0, 1)", "k")
    assert open_ == Interval(0.0, 1.0, False, False)
    assert [x in open_ for x in (0.0, 0.25, 1.0)] == [False, True, False]
    half = parse_interval(" [0,1) ", "k")
    assert [x in half for x in (0.0, 0.999, 1.0)] == [True, True, False]
    point = parse_interval("[0.5, 0.5]", "k")
    assert 0.5 in point and 0.4 not in point
    assert 2.0 in parse_interval("(0, inf)", "k")
    assert str(half) == "[0, 1)" and str(parse_interval("(0.25, 0.75]", "k")) == "(0.25, 0.75]"
    for bad in ("0, 1", "(0; 1)", "(a, 1)", "(nan, 1)", "(0, 1", "[0, 1, 2]"):
        with pytest.raises(ConfigError, match=r"^k: .* is not an interval; write e.g. '\(0, 1\)' or '\[0, 1\)'$"):
            parse_interval(bad, "k")
    for empty in ("(1, 0)", "(0.5, 0.5]", "[0.5, 0.5)"):
        with pytest.raises(ConfigError, match=r"^k: .* is empty$"):
            parse_interval(empty, "k")


def test_p_hat_and_drop_reasons_by_hand():
    assert p_hat([True, False, False, True]) == 0.5
    assert p_hat([True]) == 1.0 and p_hat([False, False]) == 0.0
    with pytest.raises(ValueError, match="no samples"):
        p_hat([])
    keep = parse_interval("(0, 1)", "k")
    assert [drop_reason(p, keep) for p in (0.0, 0.25, 1.0)] == ["all_wrong", None, "all_right"]
    assert drop_reason(0.9, parse_interval("[0, 0.75]", "k")) == "outside"
    records = [{"p_hat": 0.0, "keep": False, "reason": "all_wrong"}, {"p_hat": 0.5, "keep": True, "reason": None},
               *[{"p_hat": 1.0, "keep": False, "reason": "all_right"}] * 2]
    assert filter_stats(records, keep) == {
        "pik_prompts": 4, "pik_dropped": 3, "pik_p_hat_mean": 0.625, "pik_keep": "(0, 1)",
        "pik_dropped_all_right": 2, "pik_dropped_all_wrong": 1, "pik_dropped_outside": 0}


def test_grading_by_verifier_and_by_majority():
    row = {"id": "p", "prompt": "Q:12+34|S:", "answer": "46"}
    responses = ["12+34=46;A:46", "12+34=47;A:47", "A:47", "no answer"]
    assert grade(row, responses, "verifier") == ([True, False, False, False], "verifier")
    assert grade(row, responses, "auto") == ([True, False, False, False], "verifier")
    # majority: 47 is the majority answer (2 of 4); the sample without an answer is wrong
    assert grade(row, responses, "majority") == ([False, True, True, False], "majority")
    unlabelled = {"id": "q", "prompt": "Q:12+34|S:", "answer": None}
    assert grade(unlabelled, responses, "auto") == ([False, True, True, False], "majority")
    with pytest.raises(ConfigError, match=r"^pik.grading: verifier, but prompt 'q' has no answer; use majority or "
                                          r"auto$"):
        grade(unlabelled, responses, "verifier")
    assert PHatFilter("auto", parse_interval("(0, 1)", "k"))(row, responses) == {
        "p_hat": 0.25, "grading": "verifier", "keep": True, "reason": None}


def test_group_keep_masks_whole_groups_in_order():
    a, b = {"id": "a", "prompt": "Q:1+1|S:", "answer": "2"}, {"id": "b", "prompt": "Q:2+2|S:", "answer": "4"}
    rows = [a, a, b, b]
    keep, records = group_keep(rows, ["A:2", "A:3", "A:4", "A:4"], 2, [PHatFilter("verifier", Interval(0, 1))])
    assert keep == [True, True, False, False]
    assert [r["pik"]["p_hat"] for r in records] == [0.5, 1.0]
    with pytest.raises(ValueError, match="not whole groups of 3"):
        group_keep(rows, ["x"] * 4, 3, [])
    with pytest.raises(ValueError, match=r"completions 0\.\.3 are not one prompt's group"):
        group_keep(rows, ["x"] * 4, 4, [])
    rollouts = [{"filters": r} for r in records for _ in range(2)]
    assert group_filter_stats(rollouts, 2) == {"pik_groups": 2, "pik_dropped": 1, "pik_dropped_all_right": 1,
                                               "pik_p_hat_mean": 0.75}


def test_lastde_drop_reasons():
    keep = parse_interval("[-3, -1)", "k")
    assert [lastde_drop(v, keep, "keep") for v in (-3.0, -2.0, -1.0, -5.0, None)] == [None, None, "above", "below",
                                                                                        None]
    assert lastde_drop(None, keep, "drop") == "unscored"
    assert lastde_drop(-3.0, parse_interval("(-3, -1)", "k"), "keep") == "below"


def test_recipe_errors():
    with pytest.raises(ConfigError, match=r"^recipe: pik.keep: '0-1' is not an interval; write e.g. '\(0, 1\)' or "
                                          r"'\[0, 1\)'$"):
        recipe_from_dict({"pik": {"keep": "0-1"}})
    with pytest.raises(ConfigError, match=r"^recipe: pik.grading: 'oracle' is not allowed; expected one of 'auto', "
                                          r"'verifier', 'majority'$"):
        recipe_from_dict({"pik": {"grading": "oracle"}})
    from selfalign.methods import resolve

    assert [m.name for m in resolve(recipe_from_dict({"pik": {}}))] == ["dpo", "pik"]
    grpo = {"pik": {}, "train": {"algorithm": "grpo", "grpo_rewards": [{"source": "majority"}], "batch_size": 8}}
    assert [m.name for m in resolve(recipe_from_dict(grpo))] == ["grpo", "pik"]
    with pytest.raises(ConfigError, match=r"^recipe: lastde_filter.keep: '\(0, 1' is not an interval"):
        recipe_from_dict({"lastde_filter": {"keep": "(0, 1"}})
    with pytest.raises(ConfigError, match=r"^recipe: lastde_filter: a DPO method; it cannot be combined with "
                                          r"train.algorithm grpo$"):
        recipe_from_dict({**grpo, "lastde_filter": {}})


def test_dpo_round_filters_prompts_by_p_hat_and_samples_by_lastde(tmp_path):
    """The sandbox model (sampled accuracy about 0.5) gives mixed, all-right and all-wrong groups; only the mixed
    ones give pairs, and p_hat.jsonl holds every prompt's p̂ from its generations. In the kept groups, the samples
    whose Lastde (from the stored log-probs) is below -3 are never paired."""
    raw = tiny_recipe("sandbox", **{"pik": {"grading": "verifier"}, "lastde_filter": {"keep": "[-3, inf)"},
                                    "prompts.train_per_round": 12, "generation.chunk_prompts": 4,
                                    "train.dpo": {"max_steps": 1}, "generation.max_new_tokens": 30,
                                    "eval.greedy": False, "eval.sampled": False,
                                    "eval.evaluators": [], "tracking.wandb.enabled": False})
    summary = pipeline.run(recipe_from_dict(raw), tmp_path)
    rd = Path(tmp_path) / "round_1"
    gens = read_jsonl(rd / "generations.jsonl")
    by_prompt: dict = {}
    for g in gens:
        by_prompt.setdefault(g["prompt_id"], []).append(is_correct({"prompt": g["prompt"], "answer": g["answer"]},
                                                                   g["response"]))
    records = {r["prompt_id"]: r for r in read_jsonl(rd / "p_hat.jsonl")}
    assert set(records) == set(by_prompt)
    for pid, correct in by_prompt.items():
        assert records[pid]["p_hat"] == sum(correct) / 4 and records[pid]["samples"] == 4
        assert records[pid]["keep"] == (0 < sum(correct) < 4)
    kept = {pid for pid, r in records.items() if r["keep"]}
    pairs = read_jsonl(rd / "pairs.jsonl")
    assert {q["prompt_id"] for q in pairs} <= kept
    info = summary["rounds"][1]["pairs"]
    assert info["pik_prompts"] == 12 and info["pik_dropped"] == 12 - len(kept)
    assert info["pik_dropped_all_right"] == sum(sum(c) == 4 for c in by_prompt.values())
    assert info["pik_dropped_all_wrong"] == sum(sum(c) == 0 for c in by_prompt.values())
    assert 0 < len(kept) < 12  # the test means something: some prompts kept and some dropped

    lastde = {(g["prompt_id"], g["sample"]): lastde_score(g["logprobs"]) for g in gens}
    low = {key for key, v in lastde.items() if key[0] in kept and v < -3}
    assert info["lastde_filter_samples"] == 4 * len(kept) and info["lastde_filter_dropped_below"] == len(low) > 0
    assert info["lastde_filter_dropped"] == len(low) and info["lastde_filter_dropped_above"] == 0
    for q in pairs:
        assert (q["prompt_id"], q["chosen_sample"]) not in low and (q["prompt_id"], q["rejected_sample"]) not in low
    metrics = (Path(tmp_path) / "metrics.jsonl").read_text()
    assert '"pairs/pik_dropped"' in metrics and '"reward/sampled_lastde_mean"' in metrics


def test_grpo_round_with_every_group_dropped_trains_nothing(tiny_model, tmp_path):
    """The tiny random model gets every answer wrong: p̂ = 0 for every group, so with keep (0, 1) every advantage is
    0 and the weights do not move; the same round with keep [0, 1] moves them."""
    from safetensors.torch import load_file

    before = load_file(str(Path(tiny_model) / "model.safetensors"))
    moved = {}
    for keep in ("(0, 1)", "[0, 1]"):
        out = tmp_path / keep.strip("()[]").replace(", ", "_") / ("open" if keep[0] == "(" else "closed")
        raw = tiny_recipe(tiny_model, **{
            "pik": {"keep": keep, "grading": "verifier"},
            "train": {"algorithm": "grpo", "learning_rate": 1e-2, "batch_size": 8,
                      "grpo_rewards": [{"source": "self_certainty"}],
                      "grpo": {"max_steps": 1, "gradient_checkpointing": False}},
            "generation.max_new_tokens": 8, "eval.greedy": False, "eval.sampled": False, "eval.evaluators": [],
            "tracking.wandb.enabled": False})
        summary = pipeline.run(recipe_from_dict(raw), out)
        rollouts = read_jsonl(out / "round_1/rollouts.jsonl")
        assert all(r["filters"]["pik"]["p_hat"] == 0.0 for r in rollouts)
        train = summary["rounds"][1]["train"]
        assert train["pik_groups"] == 2
        assert train["pik_dropped"] == (2 if keep == "(0, 1)" else 0)
        after = load_file(str(out / "round_1/model/model.safetensors"))
        moved[keep] = any(not before[k].equal(after[k]) for k in before)
    assert moved == {"(0, 1)": False, "[0, 1]": True}


def test_probe_fits_the_constant_p_hat_without_features_and_ranks_with_one():
    import torch

    from selfalign.methods.pik import fit_probe, probe_predict

    # no information in the features: the fit is σ(b) = the mean p̂ (w stays 0 under the L2 term)
    x = torch.zeros((4, 3))
    for y, expected in (([1.0, 0.0, 0.0, 0.0], 0.25), ([0.25, 0.75, 0.5, 0.5], 0.5)):
        w, b, mean, std = fit_probe(x, torch.tensor(y))
        assert probe_predict(x, w, b, mean, std).tolist() == pytest.approx([expected] * 4, abs=1e-6)
        assert w.abs().max() < 1e-6
    # one informative feature: the prediction increases with it, and p̂ = 1/4, 3/4 are fitted closely
    x = torch.tensor([[-1.0], [-1.0], [1.0], [1.0]])
    w, b, mean, std = fit_probe(x, torch.tensor([0.25, 0.25, 0.75, 0.75]), l2=0.0)
    assert probe_predict(x, w, b, mean, std).tolist() == pytest.approx([0.25, 0.25, 0.75, 0.75], abs=1e-4)


def test_last_prompt_hidden_ignores_padding(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfalign.methods.pik import last_prompt_hidden

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompts = ["Q:12+34|S:", "Q:47+38+15|S:"]
    together = last_prompt_hidden(model, tok, prompts, batch_size=2)
    for k, p in enumerate(prompts):
        ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            alone = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        assert together[k].tolist() == pytest.approx(alone.tolist(), abs=1e-5)


def test_screen_auroc_expands_each_prompt_into_its_samples():
    from selfalign.methods.pik import screen_auroc

    p_ik = {"a": 0.9, "b": 0.5, "c": 0.1, "d": None}
    observed = {"a": (0.75, 4), "b": (0.5, 4), "c": (0.0, 4), "d": (1.0, 4)}  # d: no P(IK), left out
    # right samples: 3 of a (0.9), 2 of b (0.5); wrong: 1 of a, 2 of b, 4 of c (0.1).
    # pairs right > wrong: a-right vs b-wrong 3·2, vs c 3·4, vs a-wrong 3·1 tie; b-right vs c 2·4, vs b-wrong 2·2 tie,
    # vs a-wrong 2·1 lose → (6 + 12 + 1.5 + 8 + 2 + 0) / (5 · 7)
    a, mixed = screen_auroc(p_ik, observed)
    assert a == pytest.approx((6 + 12 + 1.5 + 8 + 2) / 35)
    assert mixed == pytest.approx(1.0)  # a and b are mixed, c is not, and c has the lowest P(IK)


def test_the_probe_screens_later_rounds_before_sampling(tmp_path):
    """Three DPO rounds on the sandbox with the probe: round 1 is not screened (nothing to fit on); rounds 2 and 3
    fit it on the earlier rounds' p̂, sample only the prompts whose P(IK) is in the screen, and score it."""
    raw = tiny_recipe("sandbox", **{"pik": {"grading": "verifier", "probe": True, "probe_min_prompts": 8,
                                            "screen": "[0.3, 1]"},
                                    "rounds": 3, "prompts.train_per_round": 12, "generation.chunk_prompts": 4,
                                    "train.dpo": {"max_steps": 1}, "generation.max_new_tokens": 30,
                                    "eval.greedy": False, "eval.sampled": False,
                                    "eval.evaluators": [], "tracking.wandb.enabled": False})
    summary = pipeline.run(recipe_from_dict(raw), tmp_path)
    first = read_jsonl(Path(tmp_path) / "round_1/pik_screen.jsonl")
    assert len(first) == 12 and all(r["p_ik"] is None and r["keep"] for r in first)
    assert summary["rounds"][1]["pik_screen"]["pik_probe_fitted"] is False
    dropped, sampled = 0, 12  # prompts with p̂ so far: the probe's training set
    for t in (2, 3):
        screen = read_jsonl(Path(tmp_path) / f"round_{t}/pik_screen.jsonl")
        assert len(screen) == 12 and all(0 < r["p_ik"] < 1 for r in screen)
        kept = {r["prompt_id"] for r in screen if r["keep"]}
        assert kept == {r["prompt_id"] for r in screen if 0.3 <= r["p_ik"] <= 1}
        gens = read_jsonl(Path(tmp_path) / f"round_{t}/generations.jsonl")
        assert {str(g["prompt_id"]) for g in gens} == kept and len(gens) == 4 * len(kept)
        info = summary["rounds"][t]["pik_screen"]
        assert info["pik_probe_fitted"] and info["pik_probe_train_prompts"] == sampled  # only sampled prompts have p̂
        sampled += len(kept)
        assert info["pik_screen_dropped"] == 12 - len(kept)
        dropped += 12 - len(kept)
        assert "pik_probe_auroc" in summary["rounds"][t]["pairs"]
    assert dropped > 0  # the screen did screen something


def test_a_grpo_round_trains_on_the_screened_prompts_only(tiny_model, tmp_path):
    """Two GRPO rounds on the tiny model (every answer wrong, p̂ = 0): round 2's probe, fitted on round 1's p̂ (read
    from the rollouts), predicts a low P(IK); with screen [0, 0.5] GRPO samples round 2's prompts, with (0.5, 1] it
    screens them all out and the round does not train (one warning), the model carried over."""
    from selfalign.methods.pik import observed_p_hats

    for screen, trains in (("[0, 0.5]", True), ("(0.5, 1]", False)):
        out = tmp_path / ("low" if trains else "high")
        raw = tiny_recipe(tiny_model, **{
            "pik": {"keep": "[0, 1]", "grading": "verifier", "probe": True, "probe_min_prompts": 2, "screen": screen},
            "rounds": 2, "train": {"algorithm": "grpo", "learning_rate": 1e-2, "batch_size": 8,
                                   "grpo_rewards": [{"source": "self_certainty"}],
                                   "grpo": {"max_steps": 1, "gradient_checkpointing": False}},
            "generation.max_new_tokens": 8, "eval.greedy": False, "eval.sampled": False, "eval.evaluators": [],
            "tracking.wandb.enabled": False})
        summary = pipeline.run(recipe_from_dict(raw), out)
        assert set(observed_p_hats(RunDir(out), 1).values()) == {(0.0, 4)}
        screen2 = read_jsonl(out / "round_2/pik_screen.jsonl")
        assert all(r["p_ik"] < 0.5 for r in screen2) and all(r["keep"] == trains for r in screen2)
        if trains:
            rollouts = read_jsonl(out / "round_2/rollouts.jsonl")
            assert rollouts and {r["prompt_id"] for r in rollouts} <= {r["prompt_id"] for r in screen2}
        else:
            assert summary["rounds"][2]["train"]["skipped"] and not (out / "round_2/rollouts.jsonl").exists()
