"""Faults during a run (trainers/checkpoints.py, callbacks.StopOnNonFiniteLoss, artifacts.py's failed writes): a train
stage killed with SIGKILL after a checkpoint resumes from it and ends with the weights of an uninterrupted run; GRPO,
LoRA DPO and seed SFT resume the same way; a NaN loss stops the stage with one line and the run continues once the
learning rate is lowered; a full disk while writing leaves no partial artifact; a bad prompt file on resume keeps what
was written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import tiny_recipe
from safetensors.torch import load_file

from selfalign import artifacts, pipeline
from selfalign.artifacts import append_jsonl, file_sha256, read_json, read_jsonl, write_dir, write_json
from selfalign.cli import main
from selfalign.config import ConfigError
from selfalign.errors import TrainingDiverged, WriteFailed
from selfalign.recipe import recipe_differences, recipe_from_dict, resumable_changes
from selfalign.sandbox.task import ArithTask
from selfalign.trainers import checkpoints
from selfalign.trainers.callbacks import StopOnNonFiniteLoss
from selfalign.trainers.grpo import generation_boundary

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ---------------------------------------------------------------------------------------------
# failed writes leave nothing half-written


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "eval.json"
    write_json(path, {"v": 1})

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(artifacts.os, "replace", full)
    with pytest.raises(WriteFailed) as e:
        write_json(path, {"v": 2})
    assert str(e.value).startswith(f"{path}: cannot write (no space left on the device); nothing half-written")
    assert "\n" not in str(e.value) and e.value.errno == errno.ENOSPC
    assert read_json(path) == {"v": 1} and os.listdir(tmp_path) == ["eval.json"]


def test_a_short_append_is_cut_off_again(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"round": 0})
    before = path.read_bytes()
    real = os.write

    def half_then_full(fd, data):  # the disk fills in the middle of the line
        if len(data) > 4:
            return real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts.os, "write", half_then_full)
    with pytest.raises(WriteFailed, match="metrics.jsonl: cannot write"):
        append_jsonl(path, {"round": 1, "eval/accuracy": 0.5})
    assert path.read_bytes() == before


def test_a_failed_directory_write_keeps_the_old_directory(tmp_path):
    final = tmp_path / "model"
    write_dir(final, lambda d: (d.mkdir(), (d / "w").write_text("old")))

    def fill(d: Path):
        d.mkdir()
        (d / "part").write_text("half")
        raise PermissionError(errno.EACCES, "Permission denied", str(d / "w"))

    with pytest.raises(WriteFailed, match=r"model: cannot write \(permission denied\)"):
        write_dir(final, fill)
    assert sorted(os.listdir(tmp_path)) == ["model"] and (final / "w").read_text() == "old"


def test_the_cli_names_a_library_write_on_a_full_disk(monkeypatch, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("rounds: 0\n")

    def full(*args, **kwargs):  # as a write inside a library (a W&B file, a trainer's checkpoint) fails
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/wandb/run.wandb")

    monkeypatch.setattr(pipeline, "run", full)
    assert main(["run", str(recipe), "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == ("selfalign: error: /runs/x/wandb/run.wandb: cannot write (no space left on the "
                                       "device): free some space and run the same command again (a run resumes where "
                                       "it stopped)\n")


# ---------------------------------------------------------------------------------------------
# checkpoints: which are kept, when they are taken


def test_only_the_newest_complete_checkpoint_of_the_same_settings_is_kept(tmp_path):
    fp = {"learning_rate": 1e-3, "data_sha256": "a"}
    for step, marker in ((2, fp), (4, fp), (6, {**fp, "learning_rate": 1e-2}), (8, None)):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        if marker is not None:
            write_json(path / checkpoints.MARKER, {"step": step, "fingerprint": marker})
    # 8: its save was interrupted (no marker); 6: taken with another learning rate; 4: the one to resume; 2: older
    assert checkpoints.prune(tmp_path, fp, "round 1 train") == tmp_path / "checkpoint-4"
    assert os.listdir(tmp_path) == ["checkpoint-4"]
    assert checkpoints.prune(tmp_path, {**fp, "data_sha256": "b"}, "round 1 train") is None
    assert os.listdir(tmp_path) == []


def test_checkpoint_steps_round_up_to_a_generation_boundary():
    assert checkpoints.checkpoint_args(None)["save_strategy"] == "no"
    assert checkpoints.checkpoint_args(50)["save_steps"] == 50
    assert checkpoints.checkpoint_args(5, every=3)["save_steps"] == 6
    assert all(checkpoints.checkpoint_args(s)["logging_nan_inf_filter"] is False for s in (None, 7))
    # GRPO samples every steps_per_generation × num_iterations micro-batches; an optimizer step is ga of them
    grpo = lambda spg, ni, ga: SimpleNamespace(steps_per_generation=spg, num_iterations=ni,  # noqa: E731
                                               gradient_accumulation_steps=ga)
    assert generation_boundary(grpo(1, 1, 1)) == 1
    assert generation_boundary(grpo(4, 1, 4)) == 1  # TRL's default: steps_per_generation = ga
    assert generation_boundary(grpo(4, 1, 2)) == 2
    assert generation_boundary(grpo(3, 2, 4)) == 3  # 6 micro-batches per generation, 4 per step: every 3 steps


def test_the_learning_rate_may_change_on_resume_and_beta_may_not(tiny_model):
    raw = tiny_recipe(tiny_model)
    saved = yaml.safe_load(yaml.safe_dump(raw))
    lower = recipe_from_dict(raw, ["train.learning_rate=1e-4", "train.checkpoint_steps=10", "rounds=3"])
    assert recipe_differences(lower, saved, "recipe.yaml") == []
    assert resumable_changes(lower, saved, "recipe.yaml") == {"train.learning_rate": (1e-3, 1e-4),
                                                              "train.checkpoint_steps": (50, 10)}
    assert recipe_differences(recipe_from_dict(raw, ["train.beta=0.5"]), saved, "recipe.yaml") == ["train"]


def test_a_non_finite_loss_is_one_line_naming_round_step_and_terms():
    stop = StopOnNonFiniteLoss("train.learning_rate")
    args = SimpleNamespace(output_dir="/runs/x/round_3/trainer")
    state = SimpleNamespace(global_step=7, max_steps=29)
    stop.on_log(args, state, None, logs={"loss": 0.69, "grad_norm": 1.0})  # finite: nothing happens
    with pytest.raises(TrainingDiverged) as e:
        stop.on_log(args, state, None, logs={"loss": float("inf"), "grad_norm": float("nan"), "rewards/margins": 2.5})
    assert str(e.value) == ("round 3 train: the loss is inf at step 7/29 (loss inf, grad_norm nan, rewards/margins "
                            "2.5); the stage stopped and saved nothing (round 2's model is kept); lower "
                            "train.learning_rate and run the same command again to redo it")


# ---------------------------------------------------------------------------------------------
# a real train stage killed with SIGKILL, then resumed


def _recipe(tiny_model: str, **overrides) -> dict:
    return tiny_recipe(tiny_model, **{
        "prompts.train_per_round": 8, "prompts.eval_prompts": 4, "generation.max_new_tokens": 16,
        "train.batch_size": 1, "train.checkpoint_steps": 2, "eval.sampled": False,
        "tracking.wandb.enabled": False, **overrides})


def test_a_killed_train_stage_resumes_from_its_last_checkpoint(tiny_model, tmp_path, caplog):
    """`selfalign run` in a real process, killed with SIGKILL once the train stage's checkpoint-4 is complete; the
    resumed stage ends with the weights, losses and evaluation of the same stage run without a kill (on a copy of
    the killed run without its checkpoints: the same pairs)."""
    raw = _recipe(tiny_model)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    killed = tmp_path / "killed"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "selfalign", "run", str(recipe_file), "--output-dir", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    marker = killed / "round_1" / "trainer" / "checkpoint-4" / checkpoints.MARKER
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "the train stage never saved checkpoint-4"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "round_1/train" not in read_json(killed / "manifest.json")["stages"]
    assert not (killed / "round_1" / "model").exists()
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(killed, uninterrupted)
    shutil.rmtree(uninterrupted / "round_1" / "trainer")

    with caplog.at_level("INFO", logger="selfalign.trainers.checkpoints"):
        resumed = pipeline.run(recipe_from_dict(raw), killed)
    assert "round 1 train: resuming from checkpoint-" in caplog.text
    fresh = pipeline.run(recipe_from_dict(raw), uninterrupted)

    steps = resumed["rounds"][1]["train"]["steps"]
    assert steps >= 6, "the kill should land inside the stage"
    assert _same_weights(killed / "round_1/model/model.safetensors",
                         uninterrupted / "round_1/model/model.safetensors")
    assert resumed["rounds"][1]["train"] == fresh["rounds"][1]["train"]  # the whole loss history, restored
    assert [r["eval"] for r in resumed["rounds"]] == [r["eval"] for r in fresh["rounds"]]
    logged = [(r["step"], r["loss"]) for r in read_jsonl(killed / "train_steps.jsonl") if "loss" in r]
    assert logged == [(r["step"], r["loss"]) for r in read_jsonl(uninterrupted / "train_steps.jsonl") if "loss" in r]
    assert [s for s, _ in logged] == list(range(1, steps + 1))  # each step once, though some ran twice
    assert not (killed / "round_1" / "trainer").exists(), "checkpoints go once the stage is done"


# ---------------------------------------------------------------------------------------------
# GRPO, LoRA DPO and seed SFT resume to the same weights (trainer level, interrupted after a checkpoint)


class Killed(Exception):
    pass


def _interrupt_after(monkeypatch, step: int) -> None:
    """The next trainer stops as if killed, right after its checkpoint at `step` is complete."""
    real = checkpoints.CompleteCheckpoints.on_save

    def on_save(self, args, state, control, **kwargs):
        real(self, args, state, control, **kwargs)
        if state.global_step == step:
            raise Killed

    monkeypatch.setattr(checkpoints.CompleteCheckpoints, "on_save", on_save)


def _interrupted_then_resumed(monkeypatch, train, out: Path, step: int):
    with monkeypatch.context() as m:
        _interrupt_after(m, step)
        with pytest.raises(Killed):
            train(out)
    assert [p.name for p in checkpoints.checkpoints(out)] == [f"checkpoint-{step}"]
    return train(out)


def test_grpo_resumes_to_the_same_weights_and_rollouts(tiny_model, tmp_path, monkeypatch):
    from selfalign import models
    from selfalign.trainers.grpo import train_grpo

    recipe = recipe_from_dict(_recipe(tiny_model, **{
        "train": {"algorithm": "grpo", "learning_rate": 1e-2, "batch_size": 8, "checkpoint_steps": 1,
                  "grpo_rewards": [{"source": "self_certainty"}, {"source": "majority"}],
                  "grpo": {"gradient_checkpointing": False, "steps_per_generation": 2}},
        "generation.max_new_tokens": 8}))
    tokenizer = models.load_tokenizer(tiny_model, recipe.model)
    rows = [{**r, "prompt_text": r["prompt"]} for r in ArithTask().problems(8)]

    def train(out: Path):
        return train_grpo(models.load_model(tiny_model, recipe.model), tokenizer, rows, recipe, out, seed=1)

    # steps_per_generation 2: a generation batch spans 2 steps, so checkpoint_steps 1 saves every 2 steps
    resumed = _interrupted_then_resumed(monkeypatch, train, tmp_path / "a", step=2)
    fresh = train(tmp_path / "b")
    assert resumed.state.global_step == fresh.state.global_step == 4
    a, b = resumed.model.state_dict(), fresh.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.rollouts == fresh.rollouts and len(fresh.rollouts) == 8 * 4


@pytest.mark.parametrize("which", ["lora_dpo", "seed_sft"])
def test_lora_dpo_and_seed_sft_resume_to_the_same_weights(which, tiny_model, tmp_path, monkeypatch):
    from selfalign import models
    from selfalign.config import ModelConfig, SeedSFTConfig, TrainConfig, build
    from selfalign.trainers.dpo import train_dpo
    from selfalign.trainers.sft import train_sft

    cfg, tokenizer = ModelConfig(path=tiny_model), models.load_tokenizer(tiny_model, ModelConfig(path=tiny_model))
    problems = ArithTask().problems(8)
    if which == "lora_dpo":
        train_cfg = build(TrainConfig, {"learning_rate": 1e-2, "batch_size": 2, "checkpoint_steps": 2,
                                        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}})
        pairs = [{"prompt": p["prompt"], "chosen": f"A:{p['answer']}", "rejected": "A:0"} for p in problems]

        def train(out: Path):
            return train_dpo(models.load_model(tiny_model, cfg), tokenizer, pairs, train_cfg, out, 0)
    else:
        examples = [{"prompt": p["prompt"], "completion": f"A:{p['answer']}"} for p in problems]

        def train(out: Path):
            return train_sft(models.load_model(tiny_model, cfg), tokenizer, examples,
                             SeedSFTConfig(learning_rate=1e-2, batch_size=2), out, 0, checkpoint_steps=2)

    resumed = _interrupted_then_resumed(monkeypatch, train, tmp_path / "a", step=2)
    fresh = train(tmp_path / "b")
    assert resumed.state.global_step == fresh.state.global_step == 4
    a, b = resumed.model.state_dict(), fresh.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# a diverged run: one line; a bad prompt file on resume; a full disk; then a lower learning rate finishes it


@pytest.fixture(scope="module")
def diverged(tiny_model, tmp_path_factory):
    """A run whose round 1 train stage diverged (learning rate 1e30, a checkpoint after every step), through the CLI,
    with what it printed on stderr; its prompts are a file."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("diverged")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in ArithTask().problems(20)))
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(tiny_model, **{"prompts.source": str(prompts),
                                                             "train.learning_rate": 1e30,
                                                             "train.checkpoint_steps": 1})))
    run, err = root / "run", io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["-q", "run", str(recipe), "--output-dir", str(run), "--no-report"])
    return SimpleNamespace(code=code, err=err.getvalue(), recipe=recipe, prompts=prompts, run=run)


def _cli(capsys, recipe: Path, run: Path, *sets: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["-q", "run", str(recipe), "--output-dir", str(run), "--no-report",
                 *[a for s in sets for a in ("--set", s)]])
    return code, capsys.readouterr().err


def test_a_nan_loss_stops_the_stage_with_one_line(diverged):
    err = diverged.err
    assert diverged.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("selfalign: error: round 1 train: the loss is nan at step 2/"), err
    assert "(loss nan, grad_norm nan, learning_rate " in err and "rewards/margins nan" in err
    assert err.endswith("; the stage stopped and saved nothing (round 0's model is kept); lower train.learning_rate "
                        "and run the same command again to redo it\n")
    stages = read_json(diverged.run / "manifest.json")["stages"]
    assert {"round_0/eval", "round_1/generate", "round_1/reward", "round_1/pairs"} <= set(stages)
    assert "round_1/train" not in stages
    assert not [p for p in (diverged.run / "round_1").iterdir() if "model" in p.name]
    assert checkpoints.checkpoints(diverged.run / "round_1" / "trainer") == [], "checkpoint-1 led to the divergence"


def test_a_bad_prompt_file_on_resume_keeps_what_was_written(diverged, capsys):
    manifest = read_json(diverged.run / "manifest.json")
    before = {p: file_sha256(p) for p in diverged.run.rglob("*") if p.is_file()}
    good = diverged.prompts.read_bytes()
    try:
        diverged.prompts.write_bytes(good[:40] + b"\xff\xfe" + good[40:])
        code, err = _cli(capsys, diverged.recipe, diverged.run, "train.learning_rate=1e-3")
    finally:
        diverged.prompts.write_bytes(good)
    assert code == 2 and err == f"selfalign: error: {diverged.prompts}: row 1: not UTF-8 text (byte 41 of the line) " \
                                "(set prompts.on_bad_row: skip to skip bad rows)\n"
    assert read_json(diverged.run / "manifest.json") == manifest
    assert {p: file_sha256(p) for p in diverged.run.rglob("*") if p.is_file()} == before
    for key, entry in manifest["stages"].items():
        if "artifact" in entry:
            assert file_sha256(diverged.run / entry["artifact"]) == entry["sha256"], key


def test_a_full_disk_while_saving_the_model_then_a_lower_learning_rate_finishes(diverged, tmp_path, capsys,
                                                                                 monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(diverged.run, run)
    real = artifacts.os.replace

    def full_for_the_model(src, dst):
        if Path(dst).name == "model":
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    with monkeypatch.context() as m:
        m.setattr(artifacts.os, "replace", full_for_the_model)
        code, err = _cli(capsys, diverged.recipe, run, "train.learning_rate=1e-3", "train.checkpoint_steps=3")
    assert code == 2 and err == (f"selfalign: error: {run / 'round_1' / 'model'}: cannot write (no space left on the "
                                 "device); nothing half-written was kept: free some space and run the same command "
                                 "again (a run resumes where it stopped)\n")
    assert sorted(p.name for p in (run / "round_1").iterdir() if "model" in p.name) == []
    assert "round_1/train" not in read_json(run / "manifest.json")["stages"]
    assert checkpoints.checkpoints(run / "round_1" / "trainer"), "the trained steps wait in a checkpoint"

    code, err = _cli(capsys, diverged.recipe, run, "train.learning_rate=1e-3", "train.checkpoint_steps=3")
    assert code == 0, err
    manifest = read_json(run / "manifest.json")
    assert "round_1/train" in manifest["stages"] and (run / "round_1/model/model.safetensors").exists()
    assert not (run / "round_1" / "trainer").exists()
    changes = [c["changes"] for c in manifest["recipe_changes"]]
    assert changes == [{"train.learning_rate": {"from": 1e30, "to": 1e-3},
                        "train.checkpoint_steps": {"from": 1, "to": 3}}]
    summary = read_json(run / "summary.json")
    assert summary["rounds"][1]["train"]["learning_rate"] == 1e-3 and summary["rounds"][1]["train"]["steps"] >= 4
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["learning_rate"] == 1e-3
    with pytest.raises(ConfigError, match="differs in: train"):  # other train settings still may not change
        pipeline.run(recipe_from_dict(yaml.safe_load((run / "recipe.yaml").read_text()), ["train.beta=0.5"]), run)
