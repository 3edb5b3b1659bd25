"""The methods registry (methods/__init__.py): which methods a recipe runs, the one place combinations are refused,
and the shape the redesign promises: stages and the round loop name no method, no module imports upward or in a
circle, and every registered reward works where rewards are used."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from selfalign.config import ConfigError
from selfalign.methods import METHODS, resolve
from selfalign.recipe import recipe_from_dict
from selfalign.rewards import REWARDS

SRC = Path(__file__).resolve().parents[1] / "src" / "selfalign"
JUDGE_IMPLICIT = {"judge": {"mode": "expected"}, "implicit": {}}


def names(raw: dict) -> list[str]:
    return [m.name for m in resolve(recipe_from_dict(raw))]


@pytest.mark.parametrize(("raw", "active", "builder", "trainer"), [
    ({}, ["dpo"], "dpo", None),
    ({"pairs": {"length_control": 0.3}}, ["dpo", "meta_rewarding"], "meta_rewarding", None),
    ({"pairs": {"rule": "all_pairs", "label": "judge_strength"}}, ["dpo", "osp"], "dpo", "SoftLabelDPOTrainer"),
    ({"rewards": {"implicit": {}}, "pairs": {"reward": "implicit"}, "consistency": {}}, ["dpo", "cream"], "dpo",
     "SoftLabelDPOTrainer"),
    ({"rewards": {"implicit": {}}, "pairs": {"reward": "implicit"}, "consistency": {"label": False}},
     ["dpo", "cream"], "dpo", None),
    ({"rewards": JUDGE_IMPLICIT, "pairs": {"reward": "implicit"}, "scir": {}, "consistency": {}},
     ["dpo", "cream", "scir"], "scir", "SCIRTrainer"),  # the most derived trainer class of the two
    ({"cdpo": {}, "treg": {}}, ["dpo", "cdpo", "treg"], "cdpo", "TokenWeightedDPOTrainer"),
    ({"train": {"algorithm": "grpo", "grpo_rewards": [{"source": "self_certainty"}], "batch_size": 8}}, ["grpo"],
     None, None),
    ({"rewards": {"infalign": {}}, "pairs": {"reward": "infalign"}}, ["dpo", "infalign"], "dpo", None),
    ({"train": {"algorithm": "grpo", "grpo_rewards": [{"source": "infalign"}], "batch_size": 8}},
     ["grpo", "infalign"], None, None),
    ({"pik": {}}, ["dpo", "pik"], "dpo", None),
    ({"rewards": {"gencls": {}}, "pairs": {"reward": "gencls"}, "gencls": {}}, ["dpo", "gencls"], "dpo", None),
    ({"train": {"algorithm": "grpo", "grpo_rewards": [{"source": "gencls"}], "batch_size": 8}, "gencls": {},
      "pik": {}}, ["grpo", "pik", "gencls"], None, None),  # judge training comes before any algorithm
])
def test_resolve(raw, active, builder, trainer):
    methods = resolve(recipe_from_dict(raw))
    assert [m.name for m in methods] == active
    assert (methods.pairs.name if methods.pairs else None) == builder
    assert (methods.trainer.split(":")[1] if methods.trainer else None) == trainer
    own = ("reference",) if "infalign" in active else ()  # a method's own stage, first in the round
    assert methods.stages == own + (("train", "eval") if "grpo" in active else
                                    ("generate", "reward", "pairs", "train", "eval"))


def test_every_method_section_is_a_recipe_key_with_its_config():
    from selfalign.recipe import Recipe

    fields = Recipe.__dataclass_fields__
    for cls in METHODS:
        if cls.section:
            assert cls.section in fields and cls.config is not None
        assert cls.title and cls.name


def test_unknown_reward_names_get_the_closest_one():
    with pytest.raises(ConfigError, match=r"rewards\.self_certainy: unknown key; did you mean 'self_certainty'\?"):
        recipe_from_dict({"rewards": {"self_certainy": {}}})
    from selfalign.rewards import reward_spec

    with pytest.raises(ConfigError, match=r"^x: 'ptrue2' is not a registered reward .*; did you mean 'ptrue'\?$"):
        reward_spec("ptrue2", "x")


def test_any_registered_reward_can_rank_dpo_samples():
    for name, spec in REWARDS.items():
        raw = {"rewards": {name: {}}, "pairs": {"reward": name}}
        if "reference" in spec.needs:
            raw["rewards"]["implicit"] = {"reference": "initial"}
        assert names(raw) == (["dpo", "infalign"] if name == "infalign" else ["dpo"]), name


# ---------------------------------------------------------------------------------------------
# the shape of the code


def _imports(path: Path) -> set[str]:
    """The selfalign modules a file imports (absolute imports; the package has no relative ones)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("selfalign"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("selfalign"))
    return out


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_round_loop_and_the_stages_name_no_method():
    method_keys = {cls.section for cls in METHODS if cls.section} | {"cdpo", "scir", "treg", "consistency"}
    for path in [SRC / "pipeline.py", *sorted((SRC / "stages").glob("*.py"))]:
        text = path.read_text()
        for key in method_keys:
            assert f"recipe.{key}" not in text and f".{key}." not in text, (path.name, key)
        assert not {m for m in _imports(path) if m.startswith("selfalign.methods.")} - {"selfalign.methods.resolve"}, \
            path.name


def test_no_module_imports_another_in_a_circle():
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for imported in _imports(path):
            while imported and imported not in modules:
                imported = imported.rsplit(".", 1)[0] if "." in imported else ""
            if imported and imported != name:
                deps.add(imported)
        graph[name] = deps

    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(dep):] + [node, dep]))
            if dep not in state:
                visit(dep, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_leaf_packages_import_nothing_above_them():
    """rewards/, trainers/, sandbox/ and the config loader never import methods, stages, the pipeline or the recipe."""
    upper = ("selfalign.methods", "selfalign.stages", "selfalign.pipeline", "selfalign.recipe", "selfalign.context",
             "selfalign.model_store")
    for package in ("rewards", "trainers", "sandbox"):
        for path in (SRC / package).glob("*.py"):
            bad = [m for m in _imports(path) if m.startswith(upper)]
            assert not bad, (path, bad)
    assert not [m for m in _imports(SRC / "config.py") if m.startswith(upper + ("selfalign.rewards",))]
