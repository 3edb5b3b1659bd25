"""The hand-off commands (cli.py, catalog.py, env.py): `--version`, `selfalign env`, `selfalign recipes [cp|path]`,
`selfalign run NAME` with a shipped recipe, and recipes' data files found outside a clone."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import pytest
import yaml

from selfalign import __version__, catalog
from selfalign.cli import main
from selfalign.config import ConfigError
from selfalign.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"selfalign {__version__}\n"


def test_env_names_every_package_and_the_accelerator(capsys):
    import importlib.metadata

    assert main(["env"]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    values = {k: v.strip() for k, v in lines.items()}
    assert values["selfalign"] == __version__ and values["Python"].split()[0].count(".") == 2
    for name, dist in (("torch", "torch"), ("transformers", "transformers"), ("trl", "trl"), ("peft", "peft"),
                       ("accelerate", "accelerate"), ("deepspeed", "deepspeed"), ("vllm", "vllm"),
                       ("lm-eval", "lm_eval"), ("gguf", "gguf")):
        try:
            expected = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            expected = "not installed"
        assert values[name] == expected, name
    import torch

    assert values["GPUs"] == str(torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert "CUDA" in values


def test_recipes_lists_every_shipped_recipe_with_its_description(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    recipes, launch = out.split("Launch configs")
    files = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "data" not in p.relative_to(ROOT / "recipes").parts)
    for path in files:
        name = path.relative_to(ROOT / "recipes").with_suffix("").as_posix()
        section = launch if name.startswith("accelerate/") else recipes
        (line,) = [x for x in section.splitlines() if x.split()[:1] == [name]]
        first = path.read_text().splitlines()[0].lstrip("# ")
        assert line.split(None, 1)[1].startswith(first[:40]), name
    assert recipes.splitlines()[1].split()[0] == "quickstart"
    assert "Quickstart: self-rewarding on the built-in sandbox, on a CPU, in minutes." in out


def test_description_is_the_first_sentence_of_the_header(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("# CREAM (Wang et al. 2025) on the sandbox: consistency. Second sentence.\n# More.\nrounds: 1\n")
    assert catalog.description(path) == "CREAM (Wang et al. 2025) on the sandbox: consistency."
    path.write_text("# A long header that goes on\n# over two lines: and ends here.\n#\n# Other.\nrounds: 1\n")
    assert catalog.description(path) == "A long header that goes on over two lines: and ends here."
    assert catalog.description(path, width=20) == "A long header that…"


def test_recipes_cp_and_path(tmp_path, capsys):
    assert main(["recipes", "cp", "sandbox/cream", str(tmp_path)]) == 0
    copied = tmp_path / "cream.yaml"
    assert capsys.readouterr().out.strip() == str(copied)
    assert copied.read_text() == (ROOT / "recipes/sandbox/cream.yaml").read_text()
    assert main(["recipes", "cp", "quickstart", str(tmp_path / "mine.yaml")]) == 0
    assert main(["recipes", "cp", "quickstart", str(tmp_path / "mine.yaml")]) == 2
    assert "exists; choose another destination or pass --force" in capsys.readouterr().err
    assert main(["recipes", "cp", "quickstart", str(tmp_path / "mine.yaml"), "--force"]) == 0
    capsys.readouterr()
    assert main(["recipes", "path", "accelerate/deepspeed_zero3"]) == 0
    assert Path(capsys.readouterr().out.strip()).read_text() == (
        ROOT / "recipes/accelerate/deepspeed_zero3.yaml").read_text()


def test_run_names_a_shipped_recipe(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no recipes/ here: the name is looked up in the package
    assert main(["-q", "run", "quickstart", "--set", "rounds=0", "--set", "prompts.eval_prompts=8", "--set",
                 "tracking.wandb.enabled=false"]) == 0
    out = tmp_path / "runs" / "quickstart"
    assert (out / "summary.json").exists() and (out / "report.html").exists()
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["rounds"] == 0 and saved["pairs"]["reward"] == "likelihood"
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["round", "0"]


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "sandbox/crem"], "sandbox/crem: no such recipe file or shipped recipe; did you mean 'sandbox/cream'? "
                              "(`selfalign recipes` lists them)"),
    (["run", "accelerate/cpu_ddp"], "accelerate/cpu_ddp: a launch config, not a recipe; use it as `accelerate launch "
                                    "--config_file "),
    (["recipes", "cp", "nope", "x.yaml"], "nope: no such recipe file or shipped recipe"),
])
def test_unknown_recipe_names_are_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"selfalign: error: {message}") and err.count("\n") == 1


def test_a_recipes_data_file_is_found_outside_a_clone(tmp_path, monkeypatch):
    from selfalign.data.prompts import load_prompts

    recipe = tmp_path / "gsm8k.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"path": "sandbox"}, "prompts": {
        "source": "recipes/data/gsm8k/train_512.jsonl", "eval_source": "data/gsm8k/train_512.jsonl"},
        "seed_sft": {"data": "recipes/data/gsm8k/seed_sft_128.jsonl"}, "rewards": {"likelihood": {}},
        "pairs": {"reward": "likelihood"}}))
    monkeypatch.chdir(tmp_path)
    loaded = catalog.resolve_data_paths(load_recipe(recipe))
    shipped = catalog.recipes_root() / "data" / "gsm8k"
    assert Path(loaded.prompts.source) == (shipped / "train_512.jsonl").resolve()
    assert Path(loaded.prompts.eval_source) == (shipped / "train_512.jsonl").resolve()
    assert Path(loaded.seed_sft.data) == (shipped / "seed_sft_128.jsonl").resolve()
    assert loaded.model.path == "sandbox"  # not a file: left alone (recipes/sandbox/ is a directory)
    assert len(load_prompts(loaded.prompts.source, limit=4).rows) == 4
    # a file of the same name in the working directory wins
    local = tmp_path / "recipes" / "data" / "gsm8k" / "train_512.jsonl"
    local.parent.mkdir(parents=True)
    local.write_text('{"prompt": "1+1?", "answer": "2"}\n')
    assert catalog.resolve_data_paths(load_recipe(recipe)).prompts.source == "recipes/data/gsm8k/train_512.jsonl"


def test_missing_data_files_are_left_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = catalog.resolve_data_paths(load_recipe(catalog.find("llama3-8b-instruct/cdpo")))
    assert recipe.prompts.source == "data/gsm8k_train.jsonl"  # made by scripts/prepare_data.py, not shipped


def test_every_file_under_recipes_is_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["selfalign"]
    assert (ROOT / "src/selfalign/recipes").resolve() == (ROOT / "recipes").resolve()
    for path in (ROOT / "recipes").rglob("*"):
        if path.is_file():
            rel = "recipes/" + path.relative_to(ROOT / "recipes").as_posix()
            assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} would not ship with the package"


def test_find_accepts_the_repository_path_and_suffix():
    assert catalog.find("recipes/sandbox/cream.yaml") == catalog.find("sandbox/cream")
    with pytest.raises(ConfigError, match="did you mean 'sandbox/srlm' or .*'llama3-8b-instruct/srlm' or"):
        catalog.find("srlm")
