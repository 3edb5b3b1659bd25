"""The real-scale recipes carry their papers' evaluation, checked without downloads: SRLM, T-REG (and SCIR) a win
rate against the initial model and an AlpacaEval export; CREAM ARC-E/C, OBQA, SIQA and GSM8K through lm-eval;
cDPO and GRPO GSM8K and MATH500 through lm-eval and the verifier. Every lm-eval task name is one that a task YAML
shipped with lm-eval declares (`task: NAME`; read as text, which is faster than lm-eval's TaskManager index and
reads no dataset)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from selfalign.evaluators import configured
from selfalign.evaluators.lm_eval import task_entries
from selfalign.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1] / "recipes"
EXPECTED = {
    "srlm": {"verifier", "win_rate", "alpaca_eval"}, "treg": {"verifier", "win_rate", "alpaca_eval"},
    "scir": {"verifier", "win_rate", "alpaca_eval"}, "cream": {"verifier", "lm_eval"},
    "cdpo": {"verifier", "lm_eval"}, "grpo": {"verifier", "lm_eval"},
}
TASKS = {"cream": {"arc_easy", "arc_challenge", "openbookqa", "social_iqa", "gsm8k"},
         "cdpo": {"gsm8k", "minerva_math500"}, "grpo": {"gsm8k", "minerva_math500"}}
REAL = sorted(p for d in ("llama3-8b-instruct", "qwen2.5-7b-instruct") for p in (ROOT / d).glob("*.yaml"))


@pytest.fixture(scope="module")
def lm_eval_tasks() -> set[str]:
    lm_eval = pytest.importorskip("lm_eval")
    declared = re.compile(r"^task:\s*['\"]?([\w.-]+)", re.MULTILINE)
    names = set()
    for path in (Path(lm_eval.__file__).parent / "tasks").rglob("*.yaml"):
        names.update(declared.findall(path.read_text(encoding="utf-8", errors="replace")))
    return names


@pytest.mark.parametrize("path", REAL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_real_scale_recipes_evaluate_as_their_papers(path, lm_eval_tasks):
    instances = {i.name: i for i in configured(load_recipe(path).eval)}
    assert set(instances) == EXPECTED[path.stem]
    if "win_rate" in instances:
        cfg = instances["win_rate"].cfg
        assert cfg.baseline == "initial" and cfg.judge.type == "pairwise" and cfg.judge.template == "alpaca_eval"
    if "lm_eval" in instances:
        names = {t.task for t in task_entries(instances["lm_eval"].cfg)}
        assert names == TASKS[path.stem] and names <= lm_eval_tasks
