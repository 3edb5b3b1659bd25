"""Progress while a run works (progress.py, trainers/callbacks.py): plain lines per chunk and per training step when
the output is not a terminal, a tqdm bar when it is, nothing with --quiet or on a non-main process; and the same in a
real `selfalign run` subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import tiny_recipe

from selfalign import distributed, progress
from selfalign.artifacts import run_in_chunks
from selfalign.trainers.callbacks import attach


@pytest.fixture(autouse=True)
def reset_mode():
    yield
    progress.configure("auto")


def _compute(ci, chunk):
    return [{"prompt_id": x, "token_ids": [1] * (ci + 2)} for x in chunk]


def test_lines_mode_prints_one_line_per_chunk_with_rates_and_eta(tmp_path, capsys):
    progress.configure("lines")
    parts = tmp_path / "round_3" / ".parts" / "generate"
    rows = run_in_chunks(list(range(5)), 2, parts, _compute)
    assert len(rows) == 5
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    pattern = (r"round 3 generate: chunk (\d)/3 \(\d+%\), (\d)/5 prompts, [\d.]+ samples/s, [\d,]+ tok/s, "
               r"elapsed \d+ s, ETA \d+ s")
    matches = [re.fullmatch(pattern, line) for line in lines]
    assert all(matches), lines
    assert [(m.group(1), m.group(2)) for m in matches] == [("1", "2"), ("2", "4"), ("3", "5")]
    assert lines[-1].endswith("ETA 0 s")


def test_resumed_stage_says_where_it_resumes(tmp_path, capsys):
    progress.configure("lines")
    parts = tmp_path / "round_1" / ".parts" / "reward"
    run_in_chunks(list(range(6)), 2, parts, _compute)
    (parts / "00001.jsonl").unlink()
    (parts / "00002.jsonl").unlink()
    capsys.readouterr()
    run_in_chunks(list(range(6)), 2, parts, _compute)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "round 1 reward: resuming at chunk 2/3"
    assert lines[1].startswith("round 1 reward: chunk 2/3 (67%), 4/6 samples")
    assert lines[2].startswith("round 1 reward: chunk 3/3 (100%)")


def test_bar_mode_draws_a_tqdm_bar(tmp_path, capsys):
    progress.configure("bar")
    run_in_chunks(list(range(5)), 2, tmp_path / "round_2" / ".parts" / "eval", _compute)
    err = capsys.readouterr().err
    assert "round 2 eval" in err and "\r" in err and "5/5" in err and "samples/s" in err and "tok/s" in err


def test_quiet_mode_and_other_processes_print_nothing(tmp_path, capsys, monkeypatch):
    progress.configure("quiet")
    run_in_chunks(list(range(5)), 2, tmp_path / "a" / "round_1" / ".parts" / "generate", _compute)
    assert capsys.readouterr().err == ""
    progress.configure("lines")
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    run_in_chunks(list(range(5)), 2, tmp_path / "b" / "round_1" / ".parts" / "generate", _compute)
    assert capsys.readouterr().err == ""


def test_samples_and_tokens_of_each_kind_of_chunk():
    gens = [{"token_ids": [1, 2, 3]}, {"token_ids": [4]}]
    assert progress.count_output([{"prompt": "p"}], gens) == (2, 4)  # generate: what was sampled
    assert progress.count_output(gens, [{"scores": {}}, {"scores": {}}]) == (2, 4)  # reward: what was scored
    evals = [{"greedy_response": "a", "greedy_tokens": 5, "sampled_response": "b", "sampled_tokens": 7}]
    assert progress.count_output([{"prompt": "p"}], evals) == (2, 12)  # eval: one response per mode


def test_trainer_arguments_follow_the_mode():
    assert progress.configure("bar") == "bar" and progress.trainer_args() == {"disable_tqdm": False}
    assert progress.configure("lines") == "lines" and progress.trainer_args() == {"disable_tqdm": True}
    assert progress.configure("quiet") == "quiet" and progress.trainer_args() == {"disable_tqdm": True}


@pytest.mark.parametrize(("mode", "expected"), [
    ("bar", {"ProgressCallback", "TrainStepLogger"}),  # TRL's own bar and its per-step log lines
    ("lines", {"TrainProgressLines", "TrainStepLogger"}),
    ("quiet", {"TrainStepLogger"}),
])
def test_trainer_callbacks_follow_the_mode(tiny_model, tmp_path, mode, expected):
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    progress.configure(mode)
    args = TrainingArguments(output_dir=str(tmp_path / "round_1" / "trainer"), report_to="none", use_cpu=True,
                             **progress.trainer_args())
    trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args)
    attach(trainer)
    names = {type(cb).__name__ for cb in trainer.callback_handler.callbacks}
    assert names & {"ProgressCallback", "PrinterCallback", "TrainProgressLines", "TrainStepLogger"} == expected


def test_trainer_labels():
    assert progress.trainer_label("/runs/x/round_2/trainer") == "round 2 train"
    assert progress.trainer_label("/runs/x/round_0/trainer") == "round 0 seed SFT"
    assert progress.trainer_label("/runs/x/round_1/cdpo/.trainer_positive") == "round 1 train (cdpo/.trainer_positive)"
    assert progress.trainer_round("/elsewhere/out") == (None, "out")


@pytest.fixture(scope="module")
def recipe_file(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tiny_model, **{"tracking.wandb.enabled": False})))
    return path


def _run(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "selfalign", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=900)


def test_a_run_in_a_log_file_shows_every_stage_line_by_line(recipe_file, tmp_path):
    out = tmp_path / "run"
    proc = _run(["run", str(recipe_file), "--output-dir", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "\r" not in err  # no bar redrawn in a log file
    for stage, chunks, unit in (("generate", 4, "prompts"), ("reward", 4, "samples"), ("eval", 2, "prompts")):
        assert re.search(rf"^round 1 {stage}: chunk {chunks}/{chunks} \(100%\), \d+/\d+ {unit}, .* ETA 0 s$", err,
                         re.M), stage
    steps = re.findall(r"^round 1 train: step (\d+)/(\d+) \(\d+%\), loss ([\d.]+), .*ETA", err, re.M)
    assert steps and steps[-1][0] == steps[-1][1]
    assert re.search(r"^round 1 train: done, \d+ steps in", err, re.M)
    assert re.search(r"^round 0 eval: chunk 2/2", err, re.M)
    stdout = proc.stdout.splitlines()
    assert stdout[0].split()[:3] == ["round", "acc_greedy", "acc_sampled"]
    assert stdout[-2].startswith(f"run finished: {out}") and stdout[-1] == f"report: {out / 'report.html'}"
    assert (out / "report.md").exists()


def test_quiet_run_prints_only_the_per_round_table(recipe_file, tmp_path):
    out = tmp_path / "run"
    proc = _run(["-q", "run", str(recipe_file), "--output-dir", str(out), "--no-report"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["round", "0", "1"], proc.stdout
    assert "round 1" not in proc.stderr and "INFO" not in proc.stderr and "step" not in proc.stderr
    assert not (out / "report.html").exists()
    proc = _run(["run", str(recipe_file), "--output-dir", str(out), "--quiet"], tmp_path)  # after the command too
    assert proc.returncode == 0 and [line.split()[0] for line in proc.stdout.splitlines()] == ["round", "0", "1"]
    assert (out / "report.html").exists()
