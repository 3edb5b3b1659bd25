"""Stages under `accelerate launch`: chunk sharding by rank, and real 2-process sandbox rounds under DDP (gloo),
DeepSpeed ZeRO-2 and ZeRO-3 on CPU, compared with the same round in one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfalign import distributed, pipeline
from selfalign.artifacts import read_json, read_jsonl, run_in_chunks, write_jsonl
from selfalign.recipe import load_recipe

# A quickstart round on the sandbox model, small enough for CI: 4 generation chunks and 4 eval chunks, so each of
# two processes computes two of each.
SMALL = ["rounds=1", "prompts.train_per_round=64", "prompts.eval_prompts=64", "generation.chunk_prompts=16",
         "generation.samples_per_prompt=4",
         "generation.batch_size=64", "eval.batch_size=16", "train.batch_size=8", "tracking.wandb.enabled=false",
         "tracking.console=false"]
CONFIGS = Path("recipes/accelerate")


def test_run_in_chunks_computes_only_this_ranks_chunks(monkeypatch, tmp_path):
    """Process 1 of 2 computes chunks 1 and 3; chunks 0 and 2 come from process 0's part files; rows in order."""
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    monkeypatch.setattr(distributed, "barrier", lambda: None)
    parts = tmp_path / "parts"
    for i in (0, 2):  # what process 0 wrote
        write_jsonl(parts / f"{i:05d}.jsonl", [{"x": 10 * i + k, "by": 0} for k in range(2)])
    computed = []

    def compute(i, chunk):
        computed.append(i)
        return [{"x": x, "by": 1} for x in chunk]

    rows = run_in_chunks([0, 1, 10, 11, 20, 21, 30, 31], 2, parts, compute)
    assert computed == [1, 3]
    assert [r["x"] for r in rows] == [0, 1, 10, 11, 20, 21, 30, 31]
    assert [r["by"] for r in rows] == [0, 0, 1, 1, 0, 0, 1, 1]


def test_one_process_owns_every_chunk():
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert all(distributed.owns(i) for i in range(5))


# ------------------------------------------------------------------------------------------ real launches


def launch(config: str, output_dir: Path, *overrides: str, precision: str = "no",
           recipe: str = "recipes/quickstart.yaml") -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(CONFIGS / config), "--num_processes", "2",
           "--mixed_precision", precision, "-m", "selfalign", "run", recipe, "--output-dir", str(output_dir)]
    for o in [*SMALL, *overrides]:
        cmd += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_process")
    pipeline.run(load_recipe("recipes/quickstart.yaml", SMALL), out)
    return out


def same_rows(a, b, tol: float = 1e-4) -> bool:
    """Equal rows, floats within `tol`: the launched processes run one thread each (OMP_NUM_THREADS=1) and the
    reference run the test process's threads, so log-probs and scores may differ in their last digits (the sampled
    tokens, texts, ids and pairs must not)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_rows(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_rows(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b


def test_same_rows_tolerates_float_digits_only():
    assert same_rows([{"t": [1, 2], "lp": [-0.6148]}], [{"t": [1, 2], "lp": [-0.61481]}])
    assert not same_rows([{"t": [1, 2], "lp": [-0.6148]}], [{"t": [1, 3], "lp": [-0.6148]}])
    assert not same_rows([{"lp": [-0.6148]}], [{"lp": [-0.6158]}])
    assert not same_rows([{"r": "A:1"}], [{"r": "A:2"}])


def assert_matches_one_process(run: Path, reference: Path) -> dict:
    """Same prompts, samples, rewards and pairs as the 1-process run (chunks are seeded by index, not by rank);
    round 0's eval identical; round 1's eval within noise (the trained models differ: the global batch doubles)."""
    for name in ("generations.jsonl", "rewards.jsonl", "pairs.jsonl"):
        assert same_rows(read_jsonl(run / "round_1" / name), read_jsonl(reference / "round_1" / name)), name
    assert same_rows(read_jsonl(run / "round_0/eval_samples.jsonl"),
                     read_jsonl(reference / "round_0/eval_samples.jsonl"))
    ours, theirs = (read_json(r / "summary.json")["rounds"] for r in (run, reference))
    assert ours[1]["eval"]["prompts"] == theirs[1]["eval"]["prompts"] == 64
    assert abs(ours[1]["eval"]["accuracy_sampled"] - theirs[1]["eval"]["accuracy_sampled"]) < 0.2
    train = ours[1]["train"]
    assert train["processes"] == 2 and train["steps"] >= 1
    manifest = read_json(run / "manifest.json")["stages"]
    assert all(len(entry["peak_rss_mb"]) == 2 for entry in manifest.values())  # one figure per process
    assert not [p for p in run.rglob("*.jsonl") if ".parts" in p.parts]  # every stage finished and cleaned up
    return train


@pytest.mark.slow
def test_ddp_two_processes_match_one_and_resume(one_process, tmp_path):
    launch("cpu_ddp.yaml", tmp_path / "ddp")
    train = assert_matches_one_process(tmp_path / "ddp", one_process)
    assert train["distributed_type"] == "MULTI_CPU"

    # Resume with a different number of processes, mid-stage: the 1-process run with its round-1 eval undone
    # except for chunk 0. Two processes compute the missing chunks (1, 3 and 2); the rows equal the 1-process ones.
    resumed = tmp_path / "resumed"
    shutil.copytree(one_process, resumed)
    manifest = read_json(resumed / "manifest.json")
    del manifest["stages"]["round_1/eval"]
    (resumed / "manifest.json").write_text(json.dumps(manifest))
    expected = read_jsonl(one_process / "round_1/eval_samples.jsonl")
    write_jsonl(resumed / "round_1/.parts/eval/00000.jsonl", expected[:16])
    (resumed / "round_1/eval_samples.jsonl").unlink()
    launch("cpu_ddp.yaml", resumed, "rounds=2")
    assert same_rows(read_jsonl(resumed / "round_1/eval_samples.jsonl"), expected)
    summary = read_json(resumed / "summary.json")
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    assert summary["rounds"][2]["train"]["processes"] == 2
    for stage in ("generate", "reward", "pairs", "train"):  # round 1 was not redone
        assert read_json(resumed / "manifest.json")["stages"][f"round_1/{stage}"] == manifest["stages"][
            f"round_1/{stage}"]


@pytest.mark.slow
def test_deepspeed_zero2_two_processes(one_process, tmp_path):
    launch("deepspeed_zero2.yaml", tmp_path / "z2")
    train = assert_matches_one_process(tmp_path / "z2", one_process)
    assert train["distributed_type"] == "DEEPSPEED" and train["zero_stage"] == 2


@pytest.mark.slow
def test_deepspeed_zero3_two_processes_saves_whole_weights(one_process, tmp_path):
    """ZeRO-3 with bf16 (as on GPUs; DeepSpeed runs it on CPU too) partitions the policy and TRL's reference; the
    round's model is saved whole, as 16-bit weights (every tensor at its full shape, bfloat16), and the next stages
    load it as a plain checkpoint."""
    import torch
    from safetensors.torch import load_file

    from selfalign.models import base_model_path

    launch("deepspeed_zero3.yaml", tmp_path / "z3", precision="bf16")
    train = assert_matches_one_process(tmp_path / "z3", one_process)
    assert train["distributed_type"] == "DEEPSPEED" and train["zero_stage"] == 3
    assert train["reference_partitioned"] is True  # TRL's reference model is a ZeRO-3 engine too
    saved = load_file(str(tmp_path / "z3/round_1/model/model.safetensors"))
    before = load_file(str(Path(base_model_path(load_recipe("recipes/quickstart.yaml").model)) / "model.safetensors"))
    reference = load_file(str(one_process / "round_1/model/model.safetensors"))
    assert saved.keys() == reference.keys()
    assert all(saved[k].shape == reference[k].shape and saved[k].numel() > 0 for k in saved)
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert any(not saved[k].equal(before[k].to(torch.bfloat16)) for k in saved)  # trained


def test_cdpo_under_zero3_is_refused_before_any_stage(tiny_model, tmp_path, monkeypatch):
    from conftest import tiny_recipe

    from selfalign.config import ConfigError
    from selfalign.recipe import recipe_from_dict

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    raw = tiny_recipe(tiny_model, **{"cdpo": {}, "rewards": {}, "pairs.reward": "verifier",
                                     "tracking.wandb.enabled": False})
    with pytest.raises(ConfigError, match="^cdpo: its contrast adapters .* launch with deepspeed_zero2.yaml"):
        pipeline.run(recipe_from_dict(raw), tmp_path)
    assert not (tmp_path / "manifest.json").exists()
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert distributed.zero_stage() == 2


def test_trainers_follow_the_launch_mixed_precision(monkeypatch):
    """A DeepSpeed config's bf16 must agree with the trainer's arguments: the launch's choice wins."""
    from selfalign.config import TrainConfig
    from selfalign.trainers.dpo import dpo_config

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert distributed.precision_args() == {"bf16": False, "fp16": False, "use_cpu": True}  # no GPU here
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert distributed.precision_args()["bf16"] is True
    args = dpo_config(TrainConfig(), Path("/tmp/unused"), 0)
    assert args.bf16 and not args.fp16
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert distributed.precision_args() == {"bf16": False, "fp16": False, "use_cpu": True}


@pytest.mark.slow
def test_grpo_round_two_processes(tmp_path):
    """TRL's GRPOTrainer under DDP: every process samples its share of the groups; all rollouts reach the main
    process's rollouts.jsonl."""
    launch("cpu_ddp.yaml", tmp_path / "grpo", "prompts.train_per_round=16", "train.batch_size=16",
           recipe="recipes/sandbox/grpo_majority.yaml")
    rollouts = read_jsonl(tmp_path / "grpo/round_1/rollouts.jsonl")
    assert len(rollouts) == 16 * 4 and len({r["prompt_id"] for r in rollouts}) == 16  # G = 4 (SMALL)
    train = read_json(tmp_path / "grpo/summary.json")["rounds"][1]["train"]
    assert train["processes"] == 2 and train["distributed_type"] == "MULTI_CPU"


@pytest.mark.slow
def test_cdpo_round_two_processes(tmp_path):
    """cDPO under DDP: both processes train the contrast adapters (saved once, by the main process), score their
    share of the pairs, and the pairs equal a 1-process run's (they depend on the answers, not the adapters)."""
    overrides = ["prompts.train_per_round=32", "cdpo.batch_size=16", "cdpo.adapters.batch_size=8"]
    launch("cpu_ddp.yaml", tmp_path / "two", *overrides, recipe="recipes/sandbox/cdpo.yaml")
    pipeline.run(load_recipe("recipes/sandbox/cdpo.yaml", SMALL + overrides), tmp_path / "one")
    two, one = (read_jsonl(tmp_path / r / "round_1/pairs.jsonl") for r in ("two", "one"))
    assert two and [(p["chosen"], p["rejected"]) for p in two] == [(p["chosen"], p["rejected"]) for p in one]
    assert all(len(p["rejected_weights"]) == len(p["rejected_token_scores"]) for p in two)
    for name in ("positive", "negative"):
        assert (tmp_path / "two/round_1/cdpo" / name / "adapter_config.json").exists()
    assert not list((tmp_path / "two/round_1/cdpo").glob(".*"))  # no temporary dirs left
    assert read_json(tmp_path / "two/summary.json")["rounds"][1]["train"]["processes"] == 2


def test_other_commands_refuse_a_multi_process_launch(monkeypatch, capsys):
    from selfalign.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["eval", "sandbox", "--prompts", "sandbox://arith", "--num-prompts", "4"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("selfalign: error: selfalign eval: runs in one process (2 were")
