"""Bad input, tried broadly: malformed prompt files, recipes, model paths and `--set` forms through `selfalign run`
(in-process through `selfalign.cli.main`, a few through a real `python -m selfalign` subprocess). Every case must
end in one line that names the file / key / row, exit code 2, no traceback, and write nothing: each fails while the
recipe, the model's config and tokenizer, and the prompts are read, before any stage runs or any weights load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe

from selfalign.cli import main
from selfalign.sandbox.task import ArithTask

TEN_MB = 10 * 2**20


class Inputs:
    """Files for the cases: a valid prompt file, recipes on the tiny model, broken model directories."""

    def __init__(self, root: Path, tiny_model: str):
        self.root, self.tiny_model = root, tiny_model
        self.n = 0
        rows = ArithTask().problems(16)
        self.good_prompts = self.file("good.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def file(self, name: str, content: str | bytes) -> Path:
        self.n += 1
        path = self.root / f"{self.n:03d}_{name}"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path

    def empty_dir(self) -> Path:
        self.n += 1
        path = self.root / f"{self.n:03d}_empty"
        path.mkdir()
        return path

    def recipe_dict(self, **overrides) -> dict:
        base = {"prompts.source": str(self.good_prompts), "prompts.eval_prompts": 8,
                "tracking.wandb.enabled": False, **overrides}
        return tiny_recipe(self.tiny_model, **base)

    def recipe(self, **overrides) -> Path:
        return self.file("recipe.yaml", yaml.safe_dump(self.recipe_dict(**overrides)))

    def prompts(self, content: str | bytes, **overrides) -> tuple[Path, Path]:
        """A recipe reading `content` as its prompt file, and that file."""
        path = self.file("prompts.jsonl", content)
        return self.recipe(**{"prompts.source": str(path), **overrides}), path

    def model(self, name: str, drop: tuple[str, ...] = (), edit: dict[str, dict] | None = None,
              write: dict[str, str] | None = None) -> Path:
        """A copy of the tiny model without the files `drop`, with JSON files' keys changed (`edit`: file → {key:
        value or None to delete}) and files overwritten (`write`)."""
        self.n += 1
        path = self.root / f"{self.n:03d}_model_{name}"
        shutil.copytree(self.tiny_model, path)
        for f in drop:
            (path / f).unlink()
        for f, changes in (edit or {}).items():
            data = json.loads((path / f).read_text())
            for k, v in changes.items():
                if v is None:
                    data.pop(k, None)
                else:
                    data[k] = v
            (path / f).write_text(json.dumps(data))
        for f, text in (write or {}).items():
            (path / f).write_text(text)
        return path


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def rows(n: int, **extra) -> list[dict]:
    return [{"id": f"p{i}", "prompt": f"Q:{i}+{i}|S:", "answer": str(2 * i), **extra} for i in range(n)]


# Each case: (id, build(inputs) -> (recipe path, extra argv, what the line must name)).
def _prompt_cases():
    good = rows(16)
    return [
        ("empty file", lambda x: (*x.prompts("")[:1], [], "prompts.jsonl: 0 valid rows cannot hold 1 rounds")),
        ("blank lines only", lambda x: (x.prompts("\n \n\t\n")[0], [], "prompts.jsonl: 0 valid rows cannot")),
        ("binary junk", lambda x: (x.prompts(bytes(range(255, -1, -1)) * 64)[0], [], "row 1: not UTF-8 text")),
        ("invalid UTF-8 in row 2", lambda x: (x.prompts(jsonl(good[0]).encode() + b'{"prompt": "\xff\xfe"}\n'
                                                       + jsonl(*good[1:]).encode())[0], [], "row 2: not UTF-8 text")),
        ("10 MB line of junk", lambda x: (x.prompts("x" * TEN_MB + "\n")[0], [], "row 1: invalid JSON")),
        ("10 MB prompt", lambda x: (x.prompts(jsonl({"id": "big", "prompt": "7+" * (TEN_MB // 2)}, *good))[0], [],
                                    "prompt 'big' is 10,485,760 characters long")),
        ("row is a list", lambda x: (x.prompts(jsonl(*good[:3], "[1, 2]", *good[3:]))[0], [],
                                     "row 4: expected a JSON object, got list")),
        ("row is a number", lambda x: (x.prompts(jsonl("42", *good))[0], [], "row 1: expected a JSON object, got int")),
        ("prompt is a number", lambda x: (x.prompts(jsonl(*good[:5], {"prompt": 5}, *good[5:]))[0], [],
                                          "row 6: field 'prompt' must be a string, got int")),
        ("prompt is null", lambda x: (x.prompts(jsonl({"prompt": None}, *good))[0], [],
                                      "row 1: field 'prompt' must be a string, got NoneType")),
        ("prompt missing", lambda x: (x.prompts(jsonl(*good[:2], {"question": "Q:1+1|S:"}, *good[2:]))[0], [],
                                      "row 3: missing field 'prompt'")),
        ("prompt empty", lambda x: (x.prompts(jsonl({"prompt": ""}, *good))[0], [], "row 1: field 'prompt' is empty")),
        ("prompt whitespace", lambda x: (x.prompts(jsonl({"prompt": " \n "}, *good))[0], [], "is empty")),
        ("messages not a list", lambda x: (x.prompts(jsonl({"messages": "hi"}, *good))[0], [],
                                           "row 1: 'messages' must be a non-empty list")),
        ("messages empty", lambda x: (x.prompts(jsonl({"messages": []}, *good))[0], [], "'messages' must be")),
        ("message content a number", lambda x: (x.prompts(jsonl({"messages": [{"role": "user", "content": 3}]},
                                                                *good))[0], [], "row 1: 'messages' must be")),
        ("message role null", lambda x: (x.prompts(jsonl({"messages": [{"role": None, "content": "hi"}]}, *good))[0],
                                         [], "row 1: 'messages' must be")),
        ("assistant turns only", lambda x: (x.prompts(jsonl({"messages": [{"role": "assistant", "content": "a"}]},
                                                            *good))[0], [], "row 1: 'messages' has no non-empty user")),
        ("id is a list", lambda x: (x.prompts(jsonl({"id": [1], "prompt": "Q:1+1|S:"}, *good))[0], [],
                                    "row 1: field 'id' must be a string or an integer, got list")),
        ("id is null", lambda x: (x.prompts(jsonl({"id": None, "prompt": "Q:1+1|S:"}, *good))[0], [],
                                  "row 1: field 'id' must be a string or an integer, got NoneType")),
        ("duplicate ids", lambda x: (x.prompts(jsonl(*good[:9], {**good[9], "id": "p2"}, *good[10:]))[0], [],
                                     "row 10: id 'p2' repeats the id of row 3")),
        ("given id equals a row number", lambda x: (x.prompts(jsonl({"prompt": "Q:1+1|S:"}, {"id": 0,
                                                                                             "prompt": "Q:2+2|S:"},
                                                                    *good))[0], [], "row 2: id '0' repeats")),
        ("answer is a mapping", lambda x: (x.prompts(jsonl({**good[0], "answer": {"v": 1}}, *good[1:]))[0], [],
                                           "row 1: field 'answer' must be a string or a number, got dict")),
        ("truncated JSON", lambda x: (x.prompts(jsonl(*good[:7], '{"prompt": "Q:1+', *good[7:]))[0], [],
                                      "row 8: invalid JSON")),
        ("deeply nested JSON", lambda x: (x.prompts(jsonl("[" * 100_000 + "]" * 100_000, *good))[0], [],
                                          "row 1: invalid JSON")),
        ("pretty-printed JSON array", lambda x: (x.prompts(json.dumps(good, indent=2))[0], [],
                                                 "row 1: invalid JSON")),
        ("too few rows", lambda x: (x.prompts(jsonl(*good[:3]))[0], [],
                                    "prompts.jsonl: 3 valid rows cannot hold 1 rounds")),
        ("prompt file missing", lambda x: (x.recipe(**{"prompts.source": str(x.root / "nope.jsonl")}), [],
                                           "nope.jsonl: prompt file not found")),
        ("prompt source an empty directory", lambda x: (x.recipe(**{"prompts.source": str(x.empty_dir())}), [],
                                                        "cannot load prompts as a JSONL file or HF dataset")),
        ("bad eval_source", lambda x: (x.recipe(**{"prompts.eval_source": str(x.file("eval.jsonl", "{oops}\n"))}),
                                       [], "eval.jsonl: row 1: invalid JSON")),
        ("chat turns without a chat template", lambda x: (x.prompts(jsonl(*[
            {"id": f"c{i}", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                         {"role": "user", "content": f"Q:{i}+1|S:"}]} for i in range(16)]))[0], [],
            "prompt 'c8': 3 chat messages, but the model's tokenizer has no chat template")),
        ("seed SFT row not an object", lambda x: (x.recipe(**{"seed_sft.enabled": True, "seed_sft.data": str(
            x.file("sft.jsonl", jsonl({"prompt": "a", "completion": "b"}, "[]")))}), [],
            "sft.jsonl: row 2: expected a JSON object, got list")),
        ("seed SFT not UTF-8", lambda x: (x.recipe(**{"seed_sft.enabled": True, "seed_sft.data": str(
            x.file("sft.jsonl", b'{"prompt": "\xc3\x28"}\n'))}), [], "sft.jsonl: row 1: not UTF-8 text")),
    ]


def _recipe_cases():
    return [
        ("recipe is binary", lambda x: (x.file("r.yaml", b"\x89PNG\r\n\x1a\n\xff\x00"), [], "not a text file")),
        ("recipe YAML syntax", lambda x: (x.file("r.yaml", "train:\n  beta: [0.1\nrounds: 1\n"), [], "invalid YAML")),
        ("recipe is a list", lambda x: (x.file("r.yaml", "- rounds: 1\n"), [],
                                        "a recipe must be a mapping of keys, got list")),
        ("recipe is a string", lambda x: (x.file("r.yaml", "hello\n"), [],
                                          "a recipe must be a mapping of keys, got str")),
        ("duplicate section", lambda x: (x.file("r.yaml", "train:\n  beta: 0.2\nrounds: 1\ntrain:\n  epochs: 2\n"), [],
                                         "line 4 invalid YAML (duplicate key 'train')")),
        ("list for the train map", lambda x: (x.recipe(train=[1, 2]), [], "train: expected a mapping, got [1, 2]")),
        ("number for the generation map", lambda x: (x.recipe(generation=5), [], "generation: expected a mapping")),
        ("list for the rewards map", lambda x: (x.recipe(rewards=["likelihood"]), [], "rewards: expected a mapping")),
        ("string for the model map", lambda x: (x.recipe(model="sandbox"), [], "model: expected a mapping")),
        ("list for train.lora", lambda x: (x.recipe(**{"train.lora": [8]}), [], "train.lora: expected")),
        ("string for generation.stop", lambda x: (x.recipe(**{"generation.stop": "###"}), [],
                                                  "generation.stop: expected a list of a string")),
        ("negative train_per_round", lambda x: (x.recipe(**{"prompts.train_per_round": -1}), [],
                                                "prompts.train_per_round: -1 is out of range")),
        ("zero samples", lambda x: (x.recipe(**{"generation.samples_per_prompt": 0}), [],
                                    "generation.samples_per_prompt: 0 is out of range")),
        ("negative rounds", lambda x: (x.recipe(rounds=-3), [], "rounds: -3 is out of range")),
        ("negative batch size", lambda x: (x.recipe(**{"train.batch_size": -8}), [], "train.batch_size: -8 is out")),
        ("infinite learning rate", lambda x: (x.file("r.yaml", yaml.safe_dump(x.recipe_dict()).replace(
            "learning_rate: 0.001", "learning_rate: 1e999")), [], "train.learning_rate: inf is not allowed")),
        ("YAML .inf", lambda x: (x.file("r.yaml", yaml.safe_dump(x.recipe_dict()).replace(
            "beta: 0.1", "beta: .inf")), [], "train.beta: inf is not allowed")),
        ("YAML .nan", lambda x: (x.file("r.yaml", yaml.safe_dump(x.recipe_dict()).replace(
            "temperature: 1.0", "temperature: .nan", 1)), [], "generation.temperature: nan is not allowed")),
        ("huge seed", lambda x: (x.recipe(seed=10**30), [], "seed: 1000000000000000000000000000000 is out of range")),
        ("huge train_per_round", lambda x: (x.recipe(**{"prompts.train_per_round": 10**15}), [],
                                            "prompts.train_per_round: 1000000000000000 is out of range")),
        ("huge max_new_tokens", lambda x: (x.recipe(**{"generation.max_new_tokens": 10**9}), [],
                                           "generation.max_new_tokens: 1000000000 is more than the model's context")),
        ("huge eval max_new_tokens", lambda x: (x.recipe(**{"eval.max_new_tokens": 100_000}), [],
                                                "eval.max_new_tokens: 100000 is more than the model's context")),
        ("float for an integer", lambda x: (x.recipe(rounds=1.5), [], "rounds: expected an integer, got 1.5")),
        ("zero checkpoint_steps", lambda x: (x.recipe(**{"train.checkpoint_steps": 0}), [],
                                             "train.checkpoint_steps: 0 is out of range")),
        ("checkpoint_steps a word", lambda x: (x.recipe(**{"train.checkpoint_steps": "often"}), [],
                                               "train.checkpoint_steps: expected an integer or null")),
        ("checkpoints through train.dpo", lambda x: (x.recipe(**{"train.dpo": {"save_strategy": "epoch"}}), [],
                                                     "train.dpo.save_strategy: set by train.checkpoint_steps")),
        ("nan filter through train.dpo", lambda x: (x.recipe(**{"train.dpo": {"logging_nan_inf_filter": True}}), [],
                                                    "train.dpo.logging_nan_inf_filter: set by selfalign")),
        ("unknown DPOConfig field", lambda x: (x.recipe(**{"train.dpo": {"betta": 0.2}}), [],
                                               "train.dpo.betta: not a trl.DPOConfig field")),
        ("two pair builders: cDPO and SCIR", lambda x: (x.recipe(cdpo={}, scir={}, **{
            "rewards.judge": {"mode": "expected"}, "rewards.implicit": {}}), [], "builds its own")),
        ("cDPO with GRPO", lambda x: (x.recipe(cdpo={}, **{"train.algorithm": "grpo",
                                                           "train.grpo_rewards": [{"source": "likelihood"}]}), [],
                                      "cdpo: a DPO method; it cannot be combined with train.algorithm grpo")),
        ("two label setters: CREAM and OSP", lambda x: (x.recipe(consistency={}, **{"pairs.label": "judge_strength",
                                                                                   "rewards.judge": {},
                                                                                   "rewards.implicit": {}}), [],
                                                        "both set the pair label")),
        ("GRPO without rewards", lambda x: (x.recipe(**{"train.algorithm": "grpo"}), [],
                                            "train.grpo_rewards: GRPO needs at least one reward")),
        ("unknown top-level key", lambda x: (x.recipe(trian={"beta": 0.1}), [], "trian: unknown key; did you mean")),
        ("unknown algorithm", lambda x: (x.recipe(**{"train.algorithm": "ppo"}), [], "train.algorithm: 'ppo' is not")),
        ("pairs.reward not configured", lambda x: (x.recipe(**{"pairs.reward": "judge"}), [],
                                                   "pairs.reward: 'judge' is not a configured reward")),
        ("unknown W&B mode", lambda x: (x.recipe(**{"tracking.wandb.mode": "loud"}), [], "tracking.wandb.mode")),
        ("unknown dtype", lambda x: (x.recipe(**{"model.dtype": "float8"}), [], "model.dtype: 'float8' is not")),
    ]


def _model_cases():
    return [
        ("missing model directory", lambda x: (x.recipe(**{"model.path": str(x.root / "no_model")}), [],
                                               "no_model': no such model directory")),
        ("model path is a file", lambda x: (x.recipe(**{"model.path": str(x.good_prompts)}), [],
                                            "is a file; give a model directory")),
        ("model path an empty directory", lambda x: (x.recipe(**{"model.path": str(x.empty_dir())}), [],
                                                     "is not a model directory (no config.json)")),
        ("not a model (no config.json)", lambda x: (x.recipe(**{"model.path": str(x.model("noconfig",
                                                                                         drop=("config.json",)))}),
                                                    [], "is not a model directory (no config.json)")),
        ("no weights", lambda x: (x.recipe(**{"model.path": str(x.model("noweights", drop=("model.safetensors",)))}),
                                  [], "has no safetensors weights")),
        ("config.json not JSON", lambda x: (x.recipe(**{"model.path": str(x.model("badconfig", write={
            "config.json": "{not json"}))}), [], "cannot read the model config")),
        ("no tokenizer", lambda x: (x.recipe(**{"model.path": str(x.model("notok", drop=(
            "tokenizer.json", "tokenizer_config.json")))}), [], "cannot load a tokenizer")),
        ("tokenizer without pad and EOS tokens", lambda x: (x.recipe(**{"model.path": str(x.model("nopad", edit={
            "tokenizer_config.json": {"pad_token": None, "eos_token": None}}))}), [],
            "has neither a pad token nor an EOS token")),
        ("not a hub id", lambda x: (x.recipe(**{"model.path": "no such model!"}), [], "no such model directory")),
    ]


def _set_cases():
    return [
        ("--set without =", lambda x: (x.recipe(), ["--set", "rounds"], "--set rounds: expected KEY.PATH=VALUE")),
        ("--set empty key", lambda x: (x.recipe(), ["--set", "=3"], "--set =3: the key path '' has an empty part")),
        ("--set empty part", lambda x: (x.recipe(), ["--set", "train..beta=1"], "'train..beta' has an empty part")),
        ("--set into a scalar", lambda x: (x.recipe(), ["--set", "rounds.x=1"], "--set rounds.x: rounds is not a")),
        ("--set a scalar for a map", lambda x: (x.recipe(), ["--set", "train=5"],
                                                "train: expected a mapping, got 5 (from --set)")),
        ("--set a typo", lambda x: (x.recipe(), ["--set", "generation.temprature=0.5"],
                                    "did you mean 'temperature'? (from --set)")),
        ("--set a list for an integer", lambda x: (x.recipe(), ["--set", "rounds=[1, 2]"],
                                                   "rounds: expected an integer, got [1, 2] (from --set)")),
        ("--set unparsable YAML", lambda x: (x.recipe(), ["--set", "train.learning_rate=["],
                                             "train.learning_rate: expected a number, got '['")),
        ("--set a negative seed", lambda x: (x.recipe(), ["--set", "seed=-1"], "seed: -1 is out of range")),
        ("--set a missing prompt file", lambda x: (x.recipe(), ["--set", "prompts.source=/nonexistent/p.jsonl"],
                                                   "/nonexistent/p.jsonl: prompt file not found")),
    ]


CASES = _prompt_cases() + _recipe_cases() + _model_cases() + _set_cases()


@pytest.fixture(scope="module")
def inputs(tiny_model, tmp_path_factory) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("fuzz"), tiny_model)


def test_there_are_enough_cases():
    assert len(CASES) >= 50
    assert len({name for name, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("build", [b for _, b in CASES], ids=[name for name, _ in CASES])
def test_bad_input_is_one_line_and_writes_nothing(build, inputs, tmp_path, capsys):
    recipe, extra, expected = build(inputs)
    out = tmp_path / "run"
    code = main(["-q", "run", str(recipe), "--output-dir", str(out), "--no-report", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("selfalign: error: ") and expected in lines[0], lines[0]
    assert not out.exists(), "a run that fails on its input writes nothing"


SUBPROCESS_CASES = ["binary junk", "--set empty part"]  # one read with the model's tokenizer, one before it


def test_bad_input_through_a_real_process(inputs, tmp_path):
    """The same as one line on a real process's stderr, exit code 2 (the interpreter, logging and warnings as a user
    gets them); the processes run side by side."""
    cases = dict(CASES)
    env = {**os.environ, "WANDB_MODE": "disabled"}
    procs = []
    for i, name in enumerate(SUBPROCESS_CASES):
        recipe, extra, expected = cases[name](inputs)
        out = tmp_path / f"run{i}"
        procs.append((name, expected, out, subprocess.Popen(
            [sys.executable, "-m", "selfalign", "run", str(recipe), "--output-dir", str(out), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)))
    for name, expected, out, proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, (name, stderr)
        assert stdout == ""
        assert stderr.count("\n") == 1 and stderr.startswith("selfalign: error: ") and expected in stderr, stderr
        assert not out.exists()


def test_a_tokenizer_without_a_pad_token_pads_with_its_eos_token(inputs):
    """Not an error: generation pads with EOS (on the left, masked). Neither token at all is one (a case above)."""
    from selfalign import models
    from selfalign.config import ModelConfig

    path = inputs.model("pad_from_eos", edit={"tokenizer_config.json": {"pad_token": None}})
    tokenizer, context = models.check_model(ModelConfig(path=str(path)))
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>" and context == 256
