"""`selfalign push RUN_DIR --round t --repo-id OWNER/NAME`: a round's model (or LoRA adapter) to the Hugging Face
Hub with a generated model card (method, recipe, per-round evaluation, base model, licence), via `huggingface_hub`.

What is pushed is M_t as the run defines it (`selfalign.models.round_weights`):

- full fine-tuning: `round_t/model/` as saved (weights and tokenizer);
- LoRA, round 1 on a Hub base model: the adapter (`round_1/adapter/`), with `base_model` in the card, loadable with
  PEFT on top of that base;
- LoRA otherwise (a later round, whose adapter applies to the earlier rounds' merged weights, or a local / built-in
  base): the merged weights, as `transformers` loads them (`--merge` asks for these in every LoRA case).

`--to-dir DIR` writes the folder that would be uploaded (weights and README.md) to DIR instead of pushing. Pushing
needs a token (`HF_TOKEN`, or `hf auth login`); it is the only command of selfalign that reaches the network.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import yaml

from selfalign.artifacts import RunDir, follow_umask
from selfalign.config import ConfigError

BUILTIN_BASES = {  # model.path → (Hub id of the weights it stands for, their licence)
    "smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_SKIPPED = {"training_args.bin"}  # the trainer's pickled arguments: not weights, and not safe to unpickle


def hub_base(model_path: str) -> tuple[str | None, str | None]:
    """(Hub id, licence) of a recipe's model.path when it names a Hub model, else (None, None); the sandbox is
    selfalign's own model (Apache-2.0, no Hub id)."""
    if model_path in BUILTIN_BASES:
        return BUILTIN_BASES[model_path]
    if model_path == "sandbox":
        return None, "apache-2.0"
    if Path(model_path).exists() or not _HUB_ID.match(model_path):
        return None, None
    return model_path, None


def last_trained_round(run: RunDir) -> int:
    rounds = [int(k.split("/")[0].removeprefix("round_")) for k in run.get("stages", {})
              if k.endswith("/train") or k == "round_0/seed_sft"]
    if not rounds:
        raise ConfigError(f"{run.root}: no round has finished training yet; nothing to push")
    return max(rounds)


def stage_round(run_dir: Path, t: int, dest: Path, merge: bool = False) -> dict:
    """Write M_t's files to `dest` (an empty directory); returns {kind: full|adapter|merged, base_model, source}."""
    from selfalign import models
    from selfalign.recipe import recipe_from_dict

    run = RunDir(run_dir)
    if not run.recipe_path.exists():
        raise ConfigError(f"{run_dir}: not a selfalign run directory (no recipe.yaml)")
    recipe = recipe_from_dict(yaml.safe_load(run.recipe_path.read_text()) or {}, source=str(run.recipe_path))
    trained = run.is_done(t, "train") if t > 0 else run.is_done(0, "seed_sft")
    if not trained:
        what = "round 0 is the base model itself (no seed SFT)" if t == 0 else f"round {t} has not finished training"
        raise ConfigError(f"--round {t}: {what}; nothing to push")
    path, adapters = models.round_weights(recipe.model, run.root, t)
    base_id, _ = hub_base(recipe.model.path)
    if not adapters:
        if not Path(path).is_relative_to(run.root):
            raise ConfigError(f"--round {t}: no pairs were trained on up to round {t}, so its model is the base "
                              f"model {recipe.model.path}; nothing to push")
        for f in Path(path).iterdir():
            if f.is_file() and f.name not in _SKIPPED:
                shutil.copy2(f, dest / f.name)
        kind = "full"
    elif len(adapters) == 1 and base_id is not None and not merge and not Path(path).is_relative_to(run.root):
        for f in adapters[0].iterdir():
            if f.is_file() and f.name not in _SKIPPED:
                shutil.copy2(f, dest / f.name)
        kind = "adapter"
    else:
        model = models.load_round_model(recipe.model, run.root, t)
        model.save_pretrained(str(dest), safe_serialization=True)
        models.load_tokenizer(str(run.root / "round_0" / "model") if (run.root / "round_0" / "model").exists()
                              else models.base_model_path(recipe.model), recipe.model).save_pretrained(str(dest))
        kind = "merged"
    return {"kind": kind, "base_model": base_id, "source": path, "adapters": [str(a) for a in adapters],
            "recipe": recipe}


def model_card(run_dir: Path, t: int, staged: dict, repo_id: str, licence: str | None) -> str:
    """README.md of the pushed round: metadata (licence, base model, library, tags) and the run in words and
    numbers."""
    from huggingface_hub import ModelCard, ModelCardData

    from selfalign import __version__
    from selfalign.env import version_of
    from selfalign.report.data import describe_method, flat_metrics
    from selfalign.report.render import fmt, table_md

    run = RunDir(run_dir)
    raw = yaml.safe_load(run.recipe_path.read_text()) or {}
    rounds = yaml.safe_load(run.summary_path.read_text())["rounds"] if run.summary_path.exists() else []
    recipe = staged["recipe"]
    base_id, base_licence = hub_base(recipe.model.path)
    licence = licence or base_licence or "other"
    algorithm = recipe.train.algorithm
    data = ModelCardData(license=licence, base_model=base_id, library_name="peft" if staged["kind"] == "adapter"
                         else "transformers", pipeline_tag="text-generation",
                         tags=["selfalign", "trl", algorithm, "self-rewarding"] + (["lora"] if recipe.train.lora
                                                                                     else []))
    columns = [("acc greedy", "eval/accuracy_greedy", ".3f"), ("acc sampled", "eval/accuracy_sampled", ".3f"),
               ("resp tokens", "eval/mean_response_tokens", ".1f"), ("pairs", "pairs/kept", "d"),
               ("loss", "train/loss", ".4f")]
    flat = {r["round"]: flat_metrics(r) for r in rounds}
    columns = [c for c in columns if any(c[1] in m for m in flat.values())]
    table = table_md(["round"] + [h for h, _, _ in columns],
                      [[f"**{s}** (this model)" if s == t else str(s)] + [fmt(flat[s].get(k), spec)
                                                                            for _, k, spec in columns]
                       for s in sorted(flat)])
    base_words = base_id or ("selfalign's built-in sandbox model" if recipe.model.path == "sandbox"
                             else recipe.model.path)
    what = {"full": f"full weights of M_{t}",
            "adapter": f"a LoRA adapter: apply it to `{base_id}` with PEFT",
            "merged": f"M_{t} with the LoRA adapters of rounds 1-{t} merged into the base weights"}[staged["kind"]]
    if staged["kind"] == "adapter":
        usage = (f"from peft import AutoPeftModelForCausalLM\n"
                 f"model = AutoPeftModelForCausalLM.from_pretrained(\"{repo_id}\")  # {base_id} + the adapter")
    else:
        usage = (f"from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                 f"model = AutoModelForCausalLM.from_pretrained(\"{repo_id}\")\n"
                 f"tokenizer = AutoTokenizer.from_pretrained(\"{repo_id}\")")
    finetuning = f"LoRA r={recipe.train.lora.r}" if recipe.train.lora else "full fine-tuning"
    eval_source = recipe.prompts.eval_source or f"held-out rows of {recipe.prompts.source}"
    stated = licence != "other"
    licence_note = f"`{licence}`" + ("" if stated else " (not stated when it was pushed: the base model's licence "
                                                       "applies)")
    text = "\n".join([
        "---", data.to_yaml(), "---", "",
        f"# {repo_id.split('/')[-1]}", "",
        f"Round {t} of {recipe.rounds} of a [selfalign](https://pypi.org/project/selfalign/) self-improvement run: "
        f"{describe_method(raw)}. Base model: {base_words}. This repository holds {what}.", "",
        "## Evaluation per round", "",
        f"Held-out prompts ({eval_source}, {recipe.prompts.eval_prompts} prompts): accuracy against the verifier, "
        f"greedy and sampled (T={recipe.eval.temperature}), and the mean response length. Round 0 is the starting "
        "model.", "", table, "",
        "## Usage", "", "```python", usage, "```", "",
        "## Training", "",
        f"- Method: {describe_method(raw)}",
        f"- Algorithm: TRL's {'GRPOTrainer' if algorithm == 'grpo' else 'DPOTrainer'}, learning rate "
        f"{recipe.train.learning_rate}, {finetuning}",
        f"- Each round: {recipe.prompts.train_per_round} prompts × {recipe.generation.samples_per_prompt} samples",
        f"- Framework versions: selfalign {__version__}, transformers {version_of('transformers')}, trl "
        f"{version_of('trl')}, peft {version_of('peft')}, torch {version_of('torch')}", "",
        "## Recipe", "", "```yaml", run.recipe_path.read_text().rstrip(), "```", "",
        "## Licence", "", licence_note, "",
    ])
    return str(ModelCard(text))


def push(run_dir: str | Path, repo_id: str, t: int | None = None, *, private: bool = False, revision: str | None = None,
         licence: str | None = None, merge: bool = False, to_dir: str | Path | None = None,
         message: str | None = None) -> str:
    """Push round t (default: the last trained round) of `run_dir` to `repo_id`, or write it to `to_dir`; returns
    the repository URL or the directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").exists():
        raise ConfigError(f"{run_dir}: not a selfalign run directory (no manifest.json)")
    if not _HUB_ID.match(repo_id):
        raise ConfigError(f"--repo-id: {repo_id!r} is not OWNER/NAME")
    t = last_trained_round(RunDir(run_dir)) if t is None else t
    with tempfile.TemporaryDirectory(prefix=".push-", dir=run_dir) as tmp:
        staging = Path(tmp)
        staged = stage_round(run_dir, t, staging, merge=merge)
        (staging / "README.md").write_text(model_card(run_dir, t, staged, repo_id, licence), encoding="utf-8")
        if to_dir is not None:
            dest = Path(to_dir)
            if dest.exists() and any(dest.iterdir()):
                raise ConfigError(f"--to-dir: {dest} exists and is not empty")
            shutil.copytree(staging, dest, dirs_exist_ok=True)
            follow_umask(dest)
            return str(dest)
        return _upload(staging, repo_id, private, revision, message or f"selfalign: round {t} of {run_dir.name} "
                       f"({staged['kind']})")


def _upload(folder: Path, repo_id: str, private: bool, revision: str | None, message: str) -> str:
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message, revision=revision,
                          repo_type="model")
    except LocalTokenNotFoundError:
        raise ConfigError("push: not logged in to the Hugging Face Hub; set HF_TOKEN or run `hf auth login`") from None
    except HfHubHTTPError as e:
        raise ConfigError(f"push: the Hub refused it ({str(e).splitlines()[0]})") from None
    except (OSError, httpx.TransportError) as e:  # no network, offline mode
        raise ConfigError(f"push: cannot reach the Hub ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                          ) from None
    return str(url)
