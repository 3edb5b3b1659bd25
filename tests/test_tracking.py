"""What a run records while it works (tracking.py, stages/report.py, stages/pairs.py, artifacts.py): W&B's round
metrics and TRL's per-step curves on separate step metrics, the per-round tables and artifacts, train_steps.jsonl,
the conversational pairs file, and artifacts that follow the umask. The W&B run is offline; its run file is read
back record by record."""

from __future__ import annotations

import json
import os
import stat
import struct
from pathlib import Path

import pytest
from conftest import tiny_recipe

from selfalign import pipeline
from selfalign.artifacts import RunDir, atomic_write_text, read_jsonl, replace_dir
from selfalign.recipe import recipe_from_dict
from selfalign.stages.pairs import conversational


@pytest.fixture(scope="module")
def two_rounds(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("tracked")
    raw = tiny_recipe(tiny_model, rounds=2, **{"rewards": {"likelihood": {}, "verifier": {}}})
    old = os.umask(0o022)
    try:
        pipeline.run(recipe_from_dict(raw), out)
    finally:
        os.umask(old)
    return out


def wandb_records(run_dir: Path) -> list:
    """The records of the run's offline W&B file (a LevelDB-style log of protobuf records: 32 KiB blocks, each
    record with a 7-byte header: checksum, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, block, buf = [], 7, 32768, b""
    while pos + 7 <= len(data):
        room = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if room >= 7 else (0, 0, 0)
        if room < 7 or (length == 0 and kind == 0):
            pos += room
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
    return records


def _keys(history) -> dict:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in history.item}


def test_round_metrics_and_training_steps_have_their_own_step_metrics(two_rounds):
    records = wandb_records(two_rounds)
    defined = {(r.metric.name or r.metric.glob_name): r.metric.step_metric for r in records
               if r.WhichOneof("record_type") == "metric"}
    assert defined["trainer/*"] == "trainer/global_step"
    for prefix in ("eval", "reward", "pairs", "train", "time", "memory", "samples", "eval_samples"):
        assert defined[f"{prefix}/*"] == "round", prefix
    assert "*" not in defined  # no catch-all glob that would also claim trainer/*
    history = [_keys(r.history) for r in records if r.WhichOneof("record_type") == "history"]
    steps = [h for h in history if "trainer/loss" in h]
    rounds = [h for h in history if "eval/accuracy_sampled" in h]
    assert [h["round"] for h in rounds] == [0, 1, 2]
    assert all(not any(k.startswith("trainer/") for k in h) for h in rounds)
    assert all("round" not in h for h in steps)
    # the training step counts on across rounds: round 2's curve follows round 1's
    by_round = {t: [h["trainer/global_step"] for h in steps if h["trainer/round"] == t] for t in (1, 2)}
    assert by_round[1] == list(range(1, len(by_round[1]) + 1))
    assert by_round[2] == list(range(by_round[1][-1] + 1, by_round[1][-1] + 1 + len(by_round[2])))
    assert all(0 < h["trainer/loss"] < 10 for h in steps)


def test_train_steps_file_matches_trl_log(two_rounds):
    rows = [r for r in read_jsonl(two_rounds / "train_steps.jsonl") if "loss" in r]
    summary = json.loads((two_rounds / "summary.json").read_text())
    for t in (1, 2):
        ours = [r for r in rows if r["round"] == t]
        train = summary["rounds"][t]["train"]
        assert len(ours) == train["steps"] and ours[0]["trainer"] == "trainer"
        assert ours[0]["loss"] == pytest.approx(train["loss_first"]) and ours[-1]["loss"] == pytest.approx(
            train["loss_last"])
        assert {"rewards/margins", "learning_rate", "grad_norm"} <= set(ours[0])
        assert [r["step"] for r in ours] == list(range(1, len(ours) + 1))


def test_eval_samples_tables_and_artifacts_per_round(two_rounds):
    records = wandb_records(two_rounds)
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    run_id = json.loads((two_rounds / "manifest.json").read_text())["wandb_run_id"]
    pairs = [a for a in artifacts if a.name == f"pairs-{run_id}"]
    assert [sorted(a.aliases) for a in pairs] == [["latest", "round_1"], ["latest", "round_2"]]
    assert {m.path for m in pairs[0].manifest.contents} == {"pairs.jsonl", "pairs_conversational.jsonl"}
    evals = [a for a in artifacts if a.name == f"eval_samples-{run_id}"]
    assert [a.type for a in evals] == ["eval-samples"] * 3  # rounds 0, 1, 2
    (files,) = two_rounds.glob("wandb/offline-run-*/files")
    for t in (0, 1, 2):
        (table,) = files.glob(f"media/table/eval_samples/round_{t}_*.table.json")
        data = json.loads(table.read_text())
        assert data["columns"][:2] == ["prompt", "prompt_id"] and "greedy_correct" in data["columns"]
        first = read_jsonl(two_rounds / f"round_{t}/eval_samples.jsonl")[0]
        row = dict(zip(data["columns"], data["data"][0], strict=True))
        assert row["greedy_response"] == first["greedy_response"] and row["prompt"].startswith("Q:")
        assert len(data["data"]) == 4  # tracking.log_samples


def test_system_metrics_are_on(tmp_path):
    from selfalign.config import TrackingConfig, WandbConfig
    from selfalign.tracking import Tracker, active_tracker

    tracker = Tracker(RunDir(tmp_path), TrackingConfig(wandb=WandbConfig(mode="offline")), {})
    try:
        assert tracker.wandb is not None and not tracker.wandb.settings.x_disable_stats
        assert active_tracker() is tracker
    finally:
        tracker.finish()
    assert active_tracker() is None


def test_conversational_pairs_file_is_trl_format(two_rounds):
    from trl.data_utils import is_conversational

    pairs = read_jsonl(two_rounds / "round_1/pairs.jsonl")
    conv = read_jsonl(two_rounds / "round_1/pairs_conversational.jsonl")
    assert len(conv) == len(pairs) > 0
    for p, c in zip(pairs, conv, strict=True):
        assert is_conversational(c)
        assert c["prompt"] == [{"role": "user", "content": p["prompt"]}]
        assert c["chosen"] == [{"role": "assistant", "content": p["chosen"]}]
        assert c["rejected"] == [{"role": "assistant", "content": p["rejected"]}]
        assert c["chosen_score"] == p["chosen_score"] and c["prompt_id"] == p["prompt_id"]


def test_conversational_keeps_the_sources_chat_turns_and_drops_token_columns():
    pair = {"prompt_id": "a", "prompt": "2+2?", "chosen": "4", "rejected": "5", "label": 0.8,
            "rejected_token_weights": [0.1, 0.9]}
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    (row,) = conversational([pair], {"a": history})
    assert row == {"prompt": history, "chosen": [{"role": "assistant", "content": "4"}],
                   "rejected": [{"role": "assistant", "content": "5"}], "prompt_id": "a", "label": 0.8}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_artifacts_are_world_readable_under_umask_022(two_rounds):
    for path in [two_rounds / "manifest.json", two_rounds / "summary.json", two_rounds / "recipe.yaml",
                 two_rounds / "round_1/pairs.jsonl", two_rounds / "round_1/eval.json",
                 two_rounds / "round_1/model/model.safetensors", two_rounds / "round_1/model/config.json"]:
        assert _mode(path) == 0o644, path
    assert _mode(two_rounds / "round_1/model") == 0o755


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_writes_and_moved_directories_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        staged = tmp_path / ".model.tmp"
        staged.mkdir(mode=0o700)
        (staged / "model.safetensors").write_bytes(b"x")
        os.chmod(staged / "model.safetensors", 0o600)  # as safetensors writes it
        (staged / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(staged / "run.sh", 0o700)
        replace_dir(staged, tmp_path / "model")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == 0o666 & ~umask
    assert _mode(tmp_path / "model") == 0o777 & ~umask
    assert _mode(tmp_path / "model/model.safetensors") == 0o666 & ~umask
    assert _mode(tmp_path / "model/run.sh") == 0o777 & ~umask
