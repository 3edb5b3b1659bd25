"""Tests of the run directory: atomic writes, JSONL, resumable chunks and the manifest."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from selfalign import artifacts
from selfalign.artifacts import (
    RunDir,
    append_jsonl,
    atomic_write_text,
    file_sha256,
    read_json,
    read_jsonl,
    run_in_chunks,
    write_json,
    write_jsonl,
)

# ---------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_write_creates_parents_and_writes(tmp_path):
    path = tmp_path / "a" / "b" / "f.txt"
    atomic_write_text(path, "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert os.listdir(path.parent) == ["f.txt"]  # no temp file left behind


def test_atomic_write_overwrites(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_crash_before_replace_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    write_json(path, {"v": 1})
    before = path.read_bytes()

    def crash(src, dst):
        assert os.path.exists(src)  # the new content was fully written to a temp sibling first
        raise OSError("killed mid-write")

    monkeypatch.setattr(artifacts.os, "replace", crash)
    with pytest.raises(OSError, match="killed mid-write"):
        write_json(path, {"v": 2})
    assert path.read_bytes() == before
    assert read_json(path) == {"v": 1}
    assert os.listdir(tmp_path) == ["f.json"]


def test_interrupt_during_write_leaves_no_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "new.jsonl"

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_jsonl(path, [{"a": 1}])
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# JSON / JSONL


def test_json_round_trip(tmp_path):
    obj = {"a": [1, 2.5, None, True], "b": {"c": "ü"}}
    write_json(tmp_path / "x.json", obj)
    assert read_json(tmp_path / "x.json") == obj
    assert (tmp_path / "x.json").read_text(encoding="utf-8").endswith("}\n")


def test_jsonl_round_trip(tmp_path):
    rows = [{"id": "0", "text": "line\nbreak", "score": 1.5}, {"id": "1", "text": "日本", "score": None}, {}]
    write_jsonl(tmp_path / "r.jsonl", rows)
    assert read_jsonl(tmp_path / "r.jsonl") == rows
    lines = (tmp_path / "r.jsonl").read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[-1] == ""  # one line per row, the newline inside a string is escaped
    assert "日本" in lines[1]  # ensure_ascii=False


def test_jsonl_empty(tmp_path):
    write_jsonl(tmp_path / "e.jsonl", [])
    assert (tmp_path / "e.jsonl").read_text() == ""
    assert read_jsonl(tmp_path / "e.jsonl") == []


def test_read_jsonl_skips_blank_lines(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"a": 1}\n\n  \n{"a": 2}\n')
    assert read_jsonl(tmp_path / "b.jsonl") == [{"a": 1}, {"a": 2}]


def test_append_jsonl(tmp_path):
    path = tmp_path / "sub" / "m.jsonl"
    append_jsonl(path, {"round": 0})
    append_jsonl(path, {"round": 1, "x": "é"})
    assert read_jsonl(path) == [{"round": 0}, {"round": 1, "x": "é"}]


def test_file_sha256_of_a_file_and_of_a_directory(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"abc")
    # A file hashes its name, then its bytes.
    assert file_sha256(f) == hashlib.sha256(b"f.bin" + b"abc").hexdigest()
    d = tmp_path / "d"
    (d / "s").mkdir(parents=True)
    (d / "b.txt").write_bytes(b"2")
    (d / "s" / "a.txt").write_bytes(b"1")
    # A directory hashes each file's relative path and bytes, in sorted path order.
    assert file_sha256(d) == hashlib.sha256(b"b.txt" + b"2" + b"s/a.txt" + b"1").hexdigest()
    h1 = file_sha256(d)
    (d / "s" / "a.txt").write_bytes(b"X")
    assert file_sha256(d) != h1


# ---------------------------------------------------------------------------------------------
# run_in_chunks


def make_compute(calls):
    def compute(i, chunk):
        calls.append((i, list(chunk)))
        return [{"chunk": i, "item": x} for x in chunk]

    return compute


def test_run_in_chunks_computes_all_chunks_in_order(tmp_path):
    calls = []
    items = list(range(7))
    rows = run_in_chunks(items, 3, tmp_path / "parts", make_compute(calls))
    # 7 items in chunks of 3: [0,1,2], [3,4,5], [6]
    assert calls == [(0, [0, 1, 2]), (1, [3, 4, 5]), (2, [6])]
    assert [r["item"] for r in rows] == items
    assert [r["chunk"] for r in rows] == [0, 0, 0, 1, 1, 1, 2]
    assert sorted(os.listdir(tmp_path / "parts")) == ["00000.jsonl", "00001.jsonl", "00002.jsonl"]
    assert read_jsonl(tmp_path / "parts" / "00001.jsonl") == [{"chunk": 1, "item": 3}, {"chunk": 1, "item": 4},
                                                              {"chunk": 1, "item": 5}]


def test_run_in_chunks_computes_only_missing_chunks(tmp_path):
    parts = tmp_path / "parts"
    # Part 0 was written by an earlier (killed) run; its rows are read back, not recomputed.
    write_jsonl(parts / "00000.jsonl", [{"chunk": 0, "item": 0, "from": "disk"},
                                        {"chunk": 0, "item": 1, "from": "disk"}])
    calls = []
    rows = run_in_chunks(list(range(4)), 2, parts, make_compute(calls))
    assert [i for i, _ in calls] == [1]
    assert rows == [{"chunk": 0, "item": 0, "from": "disk"}, {"chunk": 0, "item": 1, "from": "disk"},
                    {"chunk": 1, "item": 2}, {"chunk": 1, "item": 3}]


def test_run_in_chunks_resumes_after_a_kill_without_duplicates(tmp_path):
    parts = tmp_path / "parts"
    items = list(range(10))

    def dies_at_chunk_2(i, chunk):
        if i == 2:
            raise KeyboardInterrupt
        return [{"item": x} for x in chunk]

    with pytest.raises(KeyboardInterrupt):
        run_in_chunks(items, 3, parts, dies_at_chunk_2)
    assert sorted(os.listdir(parts)) == ["00000.jsonl", "00001.jsonl"]  # no partial part 2
    calls = []
    rows = run_in_chunks(items, 3, parts, make_compute(calls))
    assert [i for i, _ in calls] == [2, 3]  # chunks [6,7,8] and [9]
    assert [r["item"] for r in rows] == items  # every item once, in order
    # A third call recomputes nothing.
    calls.clear()
    assert [r["item"] for r in run_in_chunks(items, 3, parts, make_compute(calls))] == items
    assert calls == []


def test_run_in_chunks_empty(tmp_path):
    calls = []
    assert run_in_chunks([], 4, tmp_path / "parts", make_compute(calls)) == []
    assert calls == []


# ---------------------------------------------------------------------------------------------
# RunDir and the manifest


def test_mark_done_records_the_artifact_and_removes_parts(tmp_path):
    run = RunDir(tmp_path)
    parts = run.parts_dir(1, "generate")
    assert parts == tmp_path / "round_1" / ".parts" / "generate"
    write_jsonl(parts / "00000.jsonl", [{"a": 1}])
    other = run.parts_dir(1, "reward")
    write_jsonl(other / "00000.jsonl", [{"b": 1}])
    artifact = run.round_dir(1) / "generations.jsonl"
    write_jsonl(artifact, [{"a": 1}])
    assert not run.is_done(1, "generate")

    run.mark_done(1, "generate", artifact, seconds=1.23456, rows=1)

    assert run.is_done(1, "generate")
    assert not run.is_done(0, "generate") and not run.is_done(1, "reward")
    info = run.stage_info(1, "generate")
    assert info["artifact"] == "round_1/generations.jsonl"
    assert info["sha256"] == file_sha256(artifact)
    assert info["seconds"] == 1.235 and info["rows"] == 1
    assert not parts.exists()
    assert other.exists()  # only this stage's parts are removed
    run.check_artifact(1, "generate")  # unchanged: no error


def test_mark_done_without_artifact(tmp_path):
    run = RunDir(tmp_path)
    run.mark_done(0, "eval", None, seconds=0.0)
    assert run.is_done(0, "eval")
    assert "artifact" not in run.stage_info(0, "eval")
    run.check_artifact(0, "eval")  # nothing to check


def test_check_artifact_detects_tampering(tmp_path):
    run = RunDir(tmp_path)
    artifact = run.round_dir(1) / "pairs.jsonl"
    write_jsonl(artifact, [{"chosen": "a", "rejected": "b"}])
    run.mark_done(1, "pairs", artifact, seconds=0.5)
    artifact.write_text(json.dumps({"chosen": "b", "rejected": "a"}) + "\n")
    with pytest.raises(RuntimeError) as info:
        run.check_artifact(1, "pairs")
    assert str(artifact) in str(info.value)
    assert "changed since it was written" in str(info.value)


def test_check_artifact_detects_a_missing_file(tmp_path):
    run = RunDir(tmp_path)
    artifact = run.round_dir(2) / "rewards.jsonl"
    write_jsonl(artifact, [{"s": 1}])
    run.mark_done(2, "reward", artifact, seconds=0.5)
    artifact.unlink()
    with pytest.raises(RuntimeError, match="missing") as info:
        run.check_artifact(2, "reward")
    assert str(artifact) in str(info.value)


def test_check_artifact_of_a_model_directory(tmp_path):
    run = RunDir(tmp_path)
    model_dir = run.round_dir(1) / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    run.mark_done(1, "train", model_dir, seconds=3.0)
    run.check_artifact(1, "train")
    (model_dir / "extra.bin").write_bytes(b"x")
    with pytest.raises(RuntimeError, match="changed since"):
        run.check_artifact(1, "train")


def test_manifest_survives_reload(tmp_path):
    run = RunDir(tmp_path)
    artifact = run.round_dir(0) / "eval.json"
    write_json(artifact, {"accuracy": 0.5})
    run.mark_done(0, "eval", artifact, seconds=2.0, note="x")
    run.set("base_model", "/models/base")

    again = RunDir(tmp_path)
    assert again.is_done(0, "eval")
    assert again.stage_info(0, "eval") == run.stage_info(0, "eval")
    assert again.stage_info(0, "eval")["note"] == "x"
    assert again.get("base_model") == "/models/base"
    assert again.get("absent", 42) == 42
    again.check_artifact(0, "eval")
    assert read_json(tmp_path / "manifest.json")["stages"]["round_0/eval"]["artifact"] == "round_0/eval.json"


def test_fresh_run_dir_has_no_manifest_until_something_is_recorded(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.is_done(0, "eval")
    assert run.get("stages") == {}
    assert not run.manifest_path.exists()
    assert RunDir.key(3, "train") == "round_3/train"
