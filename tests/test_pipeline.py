"""The round loop (pipeline.py and the stages) on a tiny random model: every stage of one round, the run directory,
W&B offline, and a real run killed with SIGKILL in mid-stage, then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe

from selfalign import pipeline
from selfalign.artifacts import read_json, read_jsonl
from selfalign.recipe import recipe_from_dict


@pytest.fixture(scope="module")
def one_round(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    raw = tiny_recipe(tiny_model, **{"rewards": {"likelihood": {}, "verifier": {},
                                                 "judge": {"mode": "expected", "template": "sandbox"}}})
    summary = pipeline.run(recipe_from_dict(raw), out)
    return out, summary


def test_one_round_writes_the_run_directory(one_round):
    out, summary = one_round
    for name in ("recipe.yaml", "manifest.json", "metrics.jsonl", "summary.json", "round_0/eval.json",
                 "round_1/generations.jsonl", "round_1/rewards.jsonl", "round_1/pairs.jsonl",
                 "round_1/model/model.safetensors", "round_1/eval.json"):
        assert (out / name).exists(), name
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    for r in summary["rounds"]:
        assert set(r["eval"]) >= {"accuracy_greedy", "accuracy_sampled", "mean_response_tokens"}
        assert 0.0 <= r["eval"]["accuracy_sampled"] <= 1.0
    stages = read_json(out / "manifest.json")["stages"]
    assert set(stages) == {"round_0/eval", *(f"round_1/{s}" for s in ("generate", "reward", "pairs", "train",
                                                                        "eval"))}
    assert not (out / "round_1" / ".parts").exists() or not any((out / "round_1" / ".parts").iterdir())


def test_generations_rewards_and_pairs_line_up(one_round):
    out, _ = one_round
    gens = read_jsonl(out / "round_1/generations.jsonl")
    rewards = read_jsonl(out / "round_1/rewards.jsonl")
    pairs = read_jsonl(out / "round_1/pairs.jsonl")
    assert len(gens) == 8 * 4 == len(rewards)
    assert len({(g["prompt_id"], g["sample"]) for g in gens}) == len(gens)
    for g, r in zip(gens, rewards, strict=True):
        assert (g["prompt_id"], g["sample"]) == (r["prompt_id"], r["sample"])
        assert set(r["scores"]) == {"likelihood", "verifier", "judge"}
        assert 1.0 <= r["scores"]["judge"] <= 5.0
        # log-probs are kept per generated token (+ the EOS when the sample ended with it)
        assert len(g["logprobs"]) == len(g["token_ids"]) + (g["finish_reason"] == "eos")
        assert all(lp <= 0 for lp in g["logprobs"])
    by_key = {(r["prompt_id"], r["sample"]): r["scores"]["likelihood"] for r in rewards}
    for p in pairs:
        assert by_key[(p["prompt_id"], p["chosen_sample"])] > by_key[(p["prompt_id"], p["rejected_sample"])]


def test_training_changed_the_model(one_round, tiny_model):
    from safetensors.torch import load_file

    out, summary = one_round
    before = load_file(str(Path(tiny_model) / "model.safetensors"))
    after = load_file(str(out / "round_1/model/model.safetensors"))
    assert any(not before[k].equal(after[k]) for k in before)
    assert summary["rounds"][1]["train"]["steps"] >= 1


def test_metrics_and_offline_wandb_run(one_round):
    out, _ = one_round
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [0, 1]
    assert "eval/accuracy_sampled" in lines[1] and "train/loss" in lines[1] and "time/generate" in lines[1]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb")), "no W&B run file written"
    (table,) = runs[0].glob("files/media/table/samples/round_1_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"][:2] == ["prompt", "response"] and "score/likelihood" in data["columns"]
    assert len(data["data"]) == 4  # tracking.log_samples


def test_rerun_recomputes_nothing(one_round):
    out, _ = one_round
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("round_*/*.jsonl")}
    raw = yaml.safe_load((out / "recipe.yaml").read_text())
    pipeline.run(recipe_from_dict(raw), out)
    assert {p: p.stat().st_mtime_ns for p in out.glob("round_*/*.jsonl")} == mtimes


def test_resume_with_a_different_recipe_is_refused(one_round):
    from selfalign.config import ConfigError

    out, _ = one_round
    raw = yaml.safe_load((out / "recipe.yaml").read_text())
    raw["generation"]["temperature"] = 0.5
    with pytest.raises(ConfigError, match="different recipe"):
        pipeline.run(recipe_from_dict(raw), out)


def _cli(recipe: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "selfalign", "run", str(recipe), "--output-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_sigkill_in_mid_stage_then_resume(tiny_model, tmp_path):
    raw = tiny_recipe(tiny_model, **{"prompts.train_per_round": 24, "prompts.eval_prompts": 4,
                                     "generation.max_new_tokens": 48, "tracking.wandb.enabled": False})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))

    killed = tmp_path / "killed"
    proc = _cli(recipe, killed)
    parts = killed / "round_1" / ".parts" / "generate"
    deadline = time.time() + 240
    while not (parts.exists() and len(list(parts.glob("*.jsonl"))) >= 2):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline, "generation never started"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_parts = {p.name: p.read_bytes() for p in parts.glob("*.jsonl")}
    assert 2 <= len(done_parts) < 12, "the kill should land inside the generate stage"
    assert "round_1/generate" not in read_json(killed / "manifest.json")["stages"]
    assert not list(killed.rglob("*.tmp")) or all(p.name.startswith(".") for p in killed.rglob("*.tmp"))

    proc = _cli(recipe, killed)
    assert proc.wait(timeout=600) == 0, proc.stdout.read().decode()
    fresh = tmp_path / "fresh"
    proc = _cli(recipe, fresh)
    assert proc.wait(timeout=600) == 0, proc.stdout.read().decode()

    gens = read_jsonl(killed / "round_1/generations.jsonl")
    assert len(gens) == 24 * 4
    assert len({(g["prompt_id"], g["sample"]) for g in gens}) == len(gens)
    # Chunks finished before the kill were kept as they were, and the resumed run equals an uninterrupted one.
    first = read_jsonl(fresh / "round_1/generations.jsonl")
    assert [g["response"] for g in gens] == [g["response"] for g in first]
    for name, content in done_parts.items():
        index = int(name.split(".")[0])
        rows = [json.loads(line) for line in content.decode().splitlines()]
        assert gens[index * 8 : index * 8 + len(rows)] == rows
    assert read_jsonl(killed / "round_1/pairs.jsonl") == read_jsonl(fresh / "round_1/pairs.jsonl")
    evals = [[r["eval"] for r in read_json(d / "summary.json")["rounds"]] for d in (killed, fresh)]
    assert evals[0] == evals[1]


def test_seed_sft_then_lora_rounds(tiny_model, tmp_path):
    """Seed SFT (TRL SFTTrainer) writes round_0/model; LoRA rounds save adapters that chain by merging."""
    raw = tiny_recipe(tiny_model, **{
        "rounds": 2, "prompts.train_per_round": 4, "prompts.eval_prompts": 4,
        "seed_sft": {"enabled": True, "data": "sandbox://arith", "judge_data": "sandbox://arith-judge",
                     "max_examples": 16, "learning_rate": 1e-3, "batch_size": 8},
        "train.lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "tracking.wandb.enabled": False,
    })
    summary = pipeline.run(recipe_from_dict(raw), tmp_path)
    assert (tmp_path / "round_0/model/model.safetensors").exists()
    assert summary["rounds"][0]["seed_sft"]["examples"] == 32
    for t in (1, 2):
        assert (tmp_path / f"round_{t}/adapter/adapter_config.json").exists()
        assert not (tmp_path / f"round_{t}/model").exists()
    from safetensors.torch import load_file

    from selfalign import models

    sft = load_file(str(tmp_path / "round_0/model/model.safetensors"))
    base = load_file(str(Path(tiny_model) / "model.safetensors"))
    assert any(not sft[k].equal(base[k]) for k in base)
    m1 = models.load_round_model(recipe_from_dict(raw).model, tmp_path, 1)
    m2 = models.load_round_model(recipe_from_dict(raw).model, tmp_path, 2)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not m1.state_dict()[q].equal(sft[q]) and not m2.state_dict()[q].equal(m1.state_dict()[q])
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]


@pytest.mark.slow
def test_accelerate_launch_single_process(tiny_model, tmp_path):
    raw = tiny_recipe(tiny_model, **{"prompts.train_per_round": 4, "prompts.eval_prompts": 4,
                                     "tracking.wandb.enabled": False})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    launcher = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run([str(launcher), "launch", "--num_processes", "1", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", "-m", "selfalign", "run",
                           str(recipe), "--output-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = read_json(tmp_path / "run/summary.json")
    assert [r["round"] for r in summary["rounds"]] == [0, 1]


@pytest.mark.parametrize("variant", ["avg", "dyn"])
def test_cream_round_uses_consistency_as_the_soft_label(tiny_model, tmp_path, variant):
    """CREAM: implicit reward vs the pre-SFT base, the previous model's ranking (round 1: the base's
    length-normalised likelihood), Kendall consistency as the soft-label of DPO."""
    from selfalign.rewards.consistency import kendall_consistency

    raw = tiny_recipe(tiny_model, **{
        "rounds": 2, "prompts.train_per_round": 6, "prompts.eval_prompts": 4,
        "seed_sft": {"enabled": True, "data": "sandbox://arith", "max_examples": 16, "learning_rate": 1e-3},
        "rewards": {"implicit": {"reference": "base"}}, "pairs.reward": "implicit",
        "consistency": {"method": "kendall", "variant": variant}, "tracking.wandb.enabled": False,
    })
    summary = pipeline.run(recipe_from_dict(raw), tmp_path)
    for t in (1, 2):
        rewards = read_jsonl(tmp_path / f"round_{t}/rewards.jsonl")
        pairs = read_jsonl(tmp_path / f"round_{t}/pairs.jsonl")
        assert pairs and all(r["scores"]["previous"] is not None for r in rewards)
        by_prompt: dict = {}
        for r in rewards:
            by_prompt.setdefault(r["prompt_id"], []).append((r["scores"]["implicit"], r["scores"]["previous"]))
        c = {pid: kendall_consistency([a for a, _ in v], [b for _, b in v]) for pid, v in by_prompt.items()}
        mean_c = sum(c.values()) / len(c)
        assert summary["rounds"][t]["pairs"]["consistency"] == pytest.approx(mean_c)
        for p in pairs:
            assert p["consistency"] == pytest.approx(c[p["prompt_id"]])
            assert p["label"] == pytest.approx(mean_c if variant == "avg" else c[p["prompt_id"]])
        assert summary["rounds"][t]["train"]["steps"] >= 1


@pytest.mark.parametrize("judge_format", ["pointwise", "pairwise"])
def test_scir_round_keeps_agreed_pairs_for_dpo(tiny_model, tmp_path, judge_format):
    """SCIR: candidate pairs, P_J (judge) and P_I = σ(r1 − r2) (implicit vs the pre-SFT base), DPO weight 1
    exactly where they agree; the trainer logs the SCIR terms."""
    from selfalign.methods.scir import agreement, implicit_preference

    raw = tiny_recipe(tiny_model, **{
        "prompts.train_per_round": 4, "prompts.eval_prompts": 4, "generation.samples_per_prompt": 3,
        "seed_sft": {"enabled": True, "data": "sandbox://arith", "max_examples": 16, "learning_rate": 1e-3},
        "rewards": {"implicit": {"reference": "base", "beta": 0.1},
                    "judge": {"mode": "expected", "template": "sandbox"}},
        "pairs.reward": "implicit", "scir": {"judge_format": judge_format, "options": ["A", "B"],
                                             "pairwise_template": "{prompt}|{response_a}|{response_b}|Better:"},
        "tracking.wandb.enabled": False,
    })
    summary = pipeline.run(recipe_from_dict(raw), tmp_path)
    pairs = read_jsonl(tmp_path / "round_1/pairs.jsonl")
    info = summary["rounds"][1]["pairs"]
    assert info["candidates"] == 4 * 3 == len(pairs)  # C(3, 2) per prompt, regularize: all
    for p in pairs:
        assert 0.0 <= p["p_judge"] <= 1.0
        assert p["weight"] == float(agreement(p["p_judge"], p["p_implicit"]) != 0)
        assert p["p_implicit"] == pytest.approx(implicit_preference(p["reward0_chosen"], p["reward0_rejected"]))
        if p["weight"]:
            assert p["p_judge"] > 0.5 and p["p_implicit"] > 0.5  # oriented to the side both prefer
    assert info["agreed"] == sum(p["weight"] for p in pairs)
    assert 0 < info["agreed"] < len(pairs)
    train = summary["rounds"][1]["train"]
    assert train["steps"] >= 1


def test_osp_labels_and_length_control(tiny_model, tmp_path):
    """OSP: the pair label is the judge's P(chosen ≻ rejected) from the two score distributions; pairs come from
    every scored pair (all_pairs) or from Meta-Rewarding's length-controlled choice."""
    import torch

    from selfalign.rewards.preference import preference_strength

    for rule, extra in (("all_pairs", {"pairs.max_pairs_per_prompt": 2}),
                        ("best_vs_worst", {"pairs.length_control": 0.3})):
        raw = tiny_recipe(tiny_model, **{
            "prompts.train_per_round": 4, "rewards": {"judge": {"mode": "expected", "template": "sandbox"}},
            "pairs.reward": "judge", "pairs.rule": rule, "pairs.label": "judge_strength",
            "tracking.wandb.enabled": False, **extra})
        out = tmp_path / rule
        pipeline.run(recipe_from_dict(raw), out)
        rewards = read_jsonl(out / "round_1/rewards.jsonl")
        probs = {(r["prompt_id"], r["sample"]): torch.tensor(r["details"]["judge"]["score_probs"]) for r in rewards}
        pairs = read_jsonl(out / "round_1/pairs.jsonl")
        assert pairs
        for p in pairs:
            expected = preference_strength(probs[p["prompt_id"], p["chosen_sample"]],
                                           probs[p["prompt_id"], p["rejected_sample"]])
            assert p["label"] == pytest.approx(float(expected), abs=1e-6)
        per_prompt = {}
        for p in pairs:
            per_prompt[p["prompt_id"]] = per_prompt.get(p["prompt_id"], 0) + 1
        assert max(per_prompt.values()) <= (2 if rule == "all_pairs" else 1)


def test_any_registered_reward_ranks_the_samples(tiny_model, tmp_path):
    """A reward GRPO and best-of-N use (self-certainty) ranks DPO's samples: pairs.reward names it, every sample is
    scored by it and by the other configured rewards, and the pairs are its best vs worst."""
    raw = tiny_recipe(tiny_model, **{"prompts.train_per_round": 4, "prompts.eval_prompts": 4,
                                     "rewards": {"self_certainty": {}, "ptrue": {}, "repetition": {"ngram": 2},
                                                 "length": {}},
                                     "pairs.reward": "self_certainty", "tracking.wandb.enabled": False})
    summary = pipeline.run(recipe_from_dict(raw), tmp_path)
    rewards = read_jsonl(tmp_path / "round_1/rewards.jsonl")
    assert all(set(r["scores"]) == {"self_certainty", "ptrue", "repetition", "length"} for r in rewards)
    assert all(0 < r["scores"]["ptrue"] < 1 and -1 <= r["scores"]["length"] < 0 for r in rewards)
    by_key = {(r["prompt_id"], r["sample"]): r["scores"]["self_certainty"] for r in rewards}
    pairs = read_jsonl(tmp_path / "round_1/pairs.jsonl")
    assert pairs
    for p in pairs:
        group = [v for (pid, _), v in by_key.items() if pid == p["prompt_id"]]
        assert by_key[p["prompt_id"], p["chosen_sample"]] == max(group)
        assert by_key[p["prompt_id"], p["rejected_sample"]] == min(group)
    assert "self_certainty_pairwise_accuracy" in summary["rounds"][1]["rewards"]  # None: no right sample here
    assert summary["rounds"][1]["train"]["steps"] >= 1


def test_a_run_started_before_new_recipe_keys_resumes(one_round, tmp_path):
    """recipe.yaml of a run written before a reward or option was added lacks those keys: it still resumes (the
    saved recipe is read with today's defaults), and a real difference is still refused."""
    import shutil

    from selfalign.config import ConfigError

    out = tmp_path / "run"
    shutil.copytree(one_round[0], out)
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    for name in ("self_certainty", "ptrue", "repetition", "length"):
        saved["rewards"].pop(name)
    (out / "recipe.yaml").write_text(yaml.safe_dump(saved))
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("round_*/*.jsonl")}
    pipeline.run(recipe_from_dict(saved), out)
    assert {p: p.stat().st_mtime_ns for p in out.glob("round_*/*.jsonl")} == mtimes
    saved["rewards"]["majority"] = {}
    with pytest.raises(ConfigError, match=r"different recipe \(differs in: rewards\)"):
        pipeline.run(recipe_from_dict(yaml.safe_load((out / "recipe.yaml").read_text())
                                      | {"rewards": saved["rewards"]}), out)
