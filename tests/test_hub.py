"""`selfalign push` (hub.py): what a round's folder holds (full weights, a LoRA adapter, or merged weights), the
generated model card, and the Hub calls, made against a local folder (`--to-dir`) or with huggingface_hub's HfApi
replaced at its network calls (create_repo, create_branch, upload_folder); nothing reaches the network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_recipe
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load_file

from selfalign import models, pipeline
from selfalign.artifacts import read_json
from selfalign.cli import main
from selfalign.recipe import recipe_from_dict


@pytest.fixture(scope="module")
def full_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    pipeline.run(recipe_from_dict(tiny_recipe(tiny_model, **{"tracking.wandb.enabled": False})), out)
    return out


@pytest.fixture(scope="module")
def lora_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora")
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    raw = tiny_recipe(tiny_model, rounds=2, **{"train.lora": lora, "tracking.wandb.enabled": False})
    pipeline.run(recipe_from_dict(raw), out)
    return out


def test_full_weights_and_their_model_card(full_run, tmp_path, capsys):
    dest = tmp_path / "folder"
    assert main(["push", str(full_run), "--repo-id", "me/tiny-dpo", "--to-dir", str(dest)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {dest}"
    model_files = {p.name for p in (full_run / "round_1/model").iterdir()} - {"training_args.bin"}
    assert {p.name for p in dest.iterdir()} == model_files | {"README.md"}
    assert (dest / "model.safetensors").read_bytes() == (full_run / "round_1/model/model.safetensors").read_bytes()
    card = ModelCard.load(dest / "README.md")
    assert card.data.license == "other" and card.data.library_name == "transformers"
    assert card.data.base_model is None  # a local directory is no Hub base model
    assert {"selfalign", "trl", "dpo"} <= set(card.data.tags)
    text = card.text
    summary = read_json(full_run / "summary.json")
    for r in summary["rounds"]:
        label = "**1** (this model)" if r["round"] == 1 else "0"
        assert f"| {label} | {r['eval']['accuracy_greedy']:.3f} | {r['eval']['accuracy_sampled']:.3f} |" in text
    assert "# tiny-dpo" in text and "full weights of M_1" in text and 'from_pretrained("me/tiny-dpo")' in text
    assert (full_run / "recipe.yaml").read_text().strip() in text
    assert "the base model's licence applies" in text


def test_licence_option(full_run, tmp_path):
    assert main(["push", str(full_run), "--repo-id", "me/x", "--license", "apache-2.0", "--to-dir",
                 str(tmp_path / "f")]) == 0
    card = ModelCard.load(tmp_path / "f" / "README.md")
    assert card.data.license == "apache-2.0" and "licence applies" not in card.text


def test_lora_round_on_a_local_base_is_pushed_merged(lora_run, tmp_path):
    dest = tmp_path / "merged"
    assert main(["push", str(lora_run), "--round", "2", "--repo-id", "me/tiny-lora", "--to-dir", str(dest)]) == 0
    recipe = recipe_from_dict(yaml.safe_load((lora_run / "recipe.yaml").read_text()))
    expected = models.load_round_model(recipe.model, lora_run, 2).state_dict()
    pushed = load_file(str(dest / "model.safetensors"))
    assert set(pushed) <= set(expected) and all(torch.equal(pushed[k], expected[k]) for k in pushed)
    assert (dest / "tokenizer.json").exists()
    card = ModelCard.load(dest / "README.md")
    assert "lora" in card.data.tags and "LoRA adapters of rounds 1-2 merged" in card.text


def test_first_lora_round_on_a_hub_base_is_pushed_as_the_adapter(lora_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    raw = yaml.safe_load((run / "recipe.yaml").read_text())
    raw["model"]["path"] = "someorg/tiny-llama"  # as if the run had started from a Hub model
    (run / "recipe.yaml").write_text(yaml.safe_dump(raw))
    dest = tmp_path / "adapter"
    assert main(["push", str(run), "--round", "1", "--repo-id", "me/tiny-adapter", "--to-dir", str(dest)]) == 0
    adapter_files = {p.name for p in (run / "round_1/adapter").iterdir()} - {"training_args.bin"}
    assert {p.name for p in dest.iterdir()} == adapter_files | {"README.md"}
    card = ModelCard.load(dest / "README.md")
    assert card.data.base_model == "someorg/tiny-llama" and card.data.library_name == "peft"
    assert "AutoPeftModelForCausalLM" in card.text


class FakeHub:
    """HfApi's network calls, recorded: what would have been uploaded is read when upload_folder is called."""

    def __init__(self, monkeypatch, fail: Exception | None = None):
        self.calls: list[tuple] = []
        self.uploaded: dict[str, bytes] = {}

        def create_repo(api, repo_id, **kw):
            if fail is not None:
                raise fail
            self.calls.append(("create_repo", repo_id, kw))
            return f"https://huggingface.co/{repo_id}"

        def create_branch(api, repo_id, **kw):
            self.calls.append(("create_branch", repo_id, kw))

        def upload_folder(api, **kw):
            self.calls.append(("upload_folder", kw["repo_id"], {k: v for k, v in kw.items() if k != "folder_path"}))
            self.uploaded = {p.name: p.read_bytes() for p in Path(kw["folder_path"]).iterdir()}

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_branch", create_branch)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)


def test_push_creates_the_repo_and_uploads_the_folder(full_run, monkeypatch, capsys):
    hub = FakeHub(monkeypatch)
    assert main(["push", str(full_run), "--repo-id", "me/tiny-dpo", "--private", "--revision", "round-1"]) == 0
    assert capsys.readouterr().out.strip() == "pushed to https://huggingface.co/me/tiny-dpo"
    assert [c[0] for c in hub.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert hub.calls[0][2] == {"private": True, "exist_ok": True, "repo_type": "model"}
    assert hub.calls[1][2]["branch"] == "round-1"
    assert hub.calls[2][2]["revision"] == "round-1"
    assert hub.calls[2][2]["commit_message"] == f"selfalign: round 1 of {full_run.name} (full)"
    assert hub.uploaded["model.safetensors"] == (full_run / "round_1/model/model.safetensors").read_bytes()
    assert b"license: other" in hub.uploaded["README.md"]
    assert not list(full_run.glob(".push-*")), "the staging folder is removed"


def test_push_mistakes_are_one_line(full_run, tmp_path, monkeypatch, capsys):
    from huggingface_hub.errors import LocalTokenNotFoundError

    cases = [
        (["push", str(full_run), "--repo-id", "not a repo"], "--repo-id: 'not a repo' is not OWNER/NAME"),
        (["push", str(full_run), "--round", "3", "--repo-id", "me/x", "--to-dir", str(tmp_path / "a")],
         "--round 3: round 3 has not finished training; nothing to push"),
        (["push", str(full_run), "--round", "0", "--repo-id", "me/x", "--to-dir", str(tmp_path / "b")],
         "--round 0: round 0 is the base model itself (no seed SFT); nothing to push"),
        (["push", str(tmp_path), "--repo-id", "me/x"], f"{tmp_path}: not a selfalign run directory (no manifest.json)"),
    ]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases.append((["push", str(full_run), "--repo-id", "me/x", "--to-dir", str(tmp_path / "full")],
                  f"--to-dir: {tmp_path / 'full'} exists and is not empty"))
    for argv, message in cases:
        assert main(argv) == 2
        assert capsys.readouterr().err == f"selfalign: error: {message}\n"
    FakeHub(monkeypatch, fail=LocalTokenNotFoundError("no token"))
    assert main(["push", str(full_run), "--repo-id", "me/x"]) == 2
    assert capsys.readouterr().err == ("selfalign: error: push: not logged in to the Hugging Face Hub; set HF_TOKEN or "
                                       "run `hf auth login`\n")
