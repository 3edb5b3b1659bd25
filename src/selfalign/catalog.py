"""The recipes that ship with selfalign (package data: the repository's recipes/ directory), by name.

    selfalign recipes                          # every shipped recipe with its one-line description
    selfalign recipes cp sandbox/cream my.yaml # a copy to edit
    selfalign run sandbox/cream                # a shipped recipe by name (a file path works as always)

A recipe's name is its path under the recipes root without `.yaml` (`quickstart`, `sandbox/cream`,
`accelerate/deepspeed_zero3` for a launch config); its description is the first sentence of its header comment.

Data files. A shipped recipe may name a small data file that ships with it by its repository path
(`recipes/data/gsm8k/train_512.jsonl`). Any relative file path in a recipe that does not exist relative to the
working directory is looked up under the recipes root (a leading `recipes/` stands for the root), so the same
recipe, or a copy of it, works in a clone and in an installed package alike; a path that exists in neither place is
left as written (the stage that reads it says it is missing).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

from selfalign.config import ConfigError, did_you_mean

LAUNCH_CONFIGS = "accelerate"  # recipes/accelerate/: `accelerate launch --config_file` files, not recipes
_NOT_RECIPES = ("data",)


def recipes_root() -> Path:
    """The shipped recipes: selfalign/recipes in the installed package (a link to the repository's recipes/)."""
    return Path(__file__).resolve().parent / "recipes"


def _order(name: str) -> tuple:
    """quickstart, the sandbox, the small real model, the real-scale recipes, then the launch configs."""
    top = name.split("/")[0]
    rank = {"quickstart": 0, "sandbox": 1, "smollm2-135m-instruct": 2, LAUNCH_CONFIGS: 4}.get(top, 3)
    return rank, name


def shipped() -> dict[str, Path]:
    """Name → file of every shipped recipe and launch config: quickstart, sandbox/*, smollm2-135m-instruct/*, the
    real-scale recipes, accelerate/*."""
    root = recipes_root()
    if not root.is_dir():
        return {}
    found = {}
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root)
        if rel.parts[0] in _NOT_RECIPES:
            continue
        found[rel.with_suffix("").as_posix()] = path
    return dict(sorted(found.items(), key=lambda kv: _order(kv[0])))


def description(path: Path, width: int | None = None) -> str:
    """The first sentence of a YAML file's header comment (the `#` lines before the first key), on one line,
    shortened to `width` characters at a word boundary when given."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text:
            if words:
                break
            continue
        end = next((m for m in re.finditer(r"\. ", text) if not _ABBREVIATION.search(text[: m.start()])), None)
        if end is not None:
            words.append(text[: end.start() + 1])
            break
        words.append(text)
        if text.endswith((".", ":")):
            break
    header = " ".join(words).rstrip(":")
    if width is not None and len(header) > width:
        header = header[: width - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return header


_ABBREVIATION = re.compile(r"(\bal|\be\.g|\bi\.e|\bcf|\bvs|\betc)$")


def find(name: str) -> Path:
    """The file of shipped recipe `name` (`sandbox/cream` or `sandbox/cream.yaml`); ConfigError naming the closest
    names otherwise."""
    recipes = shipped()
    key = name.removesuffix(".yaml").removeprefix("recipes/")
    if key in recipes:
        return recipes[key]
    same_name = [k for k in recipes if Path(k).name == Path(key).name]
    hint = f"; did you mean {' or '.join(repr(k) for k in same_name)}?" if same_name else did_you_mean(key, recipes)
    raise ConfigError(f"{name}: no such recipe file or shipped recipe{hint} (`selfalign recipes` lists them)")


def recipe_path(arg: str) -> Path:
    """What `selfalign run ARG` runs: the file ARG when it exists, else the shipped recipe named ARG."""
    path = Path(arg)
    if path.is_file():
        return path
    found = find(arg)
    if found.relative_to(recipes_root()).parts[0] == LAUNCH_CONFIGS:
        raise ConfigError(f"{arg}: a launch config, not a recipe; use it as `accelerate launch --config_file "
                          f"{found} -m selfalign run RECIPE`")
    return found


def copy(name: str, dest: str | Path, force: bool = False) -> Path:
    """Copy shipped recipe `name` to `dest` (a file, or a directory to copy it into); returns the written path."""
    src = find(name)
    dest = Path(dest)
    target = dest / src.name if dest.is_dir() or str(dest).endswith(("/", "\\")) else dest
    if target.exists() and not force:
        raise ConfigError(f"{target}: exists; choose another destination or pass --force")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return target


def resolve_data_paths(obj, cwd: Path | None = None):
    """Every string field of a recipe (nested dataclasses, lists, dicts) that is a relative path to a file missing
    from `cwd` but present under the recipes root, replaced by that file's absolute path; returns `obj`."""
    cwd = cwd or Path.cwd()

    def fix(value):
        if isinstance(value, str):
            return _resolved(value, cwd)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                setattr(value, f.name, fix(getattr(value, f.name)))
            return value
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    return fix(obj)


def _resolved(value: str, cwd: Path) -> str:
    if "\n" in value or "://" in value or not value.strip() or len(value) > 1024:
        return value
    path = Path(value)
    if not path.parts or path.is_absolute() or (cwd / path).exists():
        return value
    root = recipes_root()
    rel = Path(*path.parts[1:]) if path.parts[0] == "recipes" and len(path.parts) > 1 else path
    candidate = root / rel
    return str(candidate.resolve()) if candidate.is_file() else value
