"""A finished (or unfinished) run directory, read into what the report shows: per-round metrics from summary.json,
the reward scores of every sample (rewards.jsonl, or a GRPO round's rollouts.jsonl), response lengths, TRL's
per-step training log (train_steps.jsonl), and a seeded sample of chosen vs rejected pairs (or rollouts) with
their scores and, where the prompts have answers, whether each response is right."""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfalign.artifacts import read_json
from selfalign.config import ConfigError


def _jsonl(path: Path):
    """The rows of a JSONL file, one at a time (generations files of real runs are large)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclass
class RunData:
    root: Path
    name: str
    recipe: dict
    method: str  # the recipe's methods and rewards in words
    rounds: list[dict]  # summary.json "rounds"
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)  # round → flat metrics (eval/..., ...)
    scores: dict[str, dict[int, list[float]]] = field(default_factory=dict)  # reward source → round → scores
    sample_tokens: dict[int, list[int]] = field(default_factory=dict)  # round → generated lengths (training samples)
    eval_tokens: dict[int, dict[str, list[int]]] = field(default_factory=dict)  # round → mode → eval lengths
    steps: dict[tuple[int | None, str], list[dict]] = field(default_factory=dict)  # (round, trainer) → step logs
    samples: dict[int, list[dict]] = field(default_factory=dict)  # round → pairs (or rollouts) to browse
    sample_totals: dict[int, int] = field(default_factory=dict)  # round → all pairs (or rollouts) of the round
    online: set[int] = field(default_factory=set)  # GRPO rounds (rollouts instead of generations and pairs)
    peak_gpu_mb: dict[int, dict[str, float]] = field(default_factory=dict)  # round → stage → max over processes

    @property
    def round_numbers(self) -> list[int]:
        return [r["round"] for r in self.rounds]


def load_run(root: str | Path, samples: int = 12, seed: int = 0, per_sample: bool = True) -> RunData:
    """Read run directory `root`; `samples` pairs (or rollouts) per round for the browser, drawn with `seed`.
    `per_sample=False` reads the per-round metrics only (not the rounds' JSONL files), as a comparison needs."""
    root = Path(root)
    if not (root / "summary.json").is_file():
        what = "not a selfalign run directory" if not (root / "manifest.json").exists() else "no round finished yet"
        raise ConfigError(f"{root}: {what} (no summary.json)")
    recipe = yaml.safe_load((root / "recipe.yaml").read_text()) if (root / "recipe.yaml").exists() else {}
    rounds = read_json(root / "summary.json")["rounds"]
    run = RunData(root, root.resolve().name, recipe or {}, describe_method(recipe or {}), rounds)
    manifest = read_json(root / "manifest.json") if (root / "manifest.json").exists() else {"stages": {}}
    for entry in rounds:
        t = entry["round"]
        run.metrics[t] = flat_metrics(entry)
        gpu = {key.split("/", 1)[1]: max(v for v in info["peak_gpu_mb"] if v is not None)
               for key, info in manifest["stages"].items()
               if key.startswith(f"round_{t}/") and any(v is not None for v in info.get("peak_gpu_mb") or [])}
        if gpu:
            run.peak_gpu_mb[t] = gpu
        if per_sample:
            _read_round(run, root / f"round_{t}", t, samples, seed)
    if per_sample:
        _read_steps(run, root / "train_steps.jsonl")
    return run


def flat_metrics(entry: dict) -> dict[str, float]:
    """One summary.json round as the flat metric names of metrics.jsonl / W&B (`eval/accuracy_sampled`, ...)."""
    flat = {f"eval/{k}": v for k, v in entry.get("eval", {}).items() if _number(v)}
    for section, prefix in (("generation", "generation"), ("rewards", "reward"), ("pairs", "pairs"),
                            ("train", "train")):
        flat.update({f"{prefix}/{k}": v for k, v in entry.get(section, {}).items() if _number(v)})
    seconds = entry.get("seconds", {})
    flat.update({f"time/{k}": v for k, v in seconds.items()})
    if seconds:
        flat["time/round"] = sum(seconds.values())
    peaks = {s: max(v for v in vs if v is not None) for s, vs in entry.get("peak_rss_mb", {}).items()
             if vs and any(v is not None for v in vs)}
    flat.update({f"memory/{s}_peak_rss_mb": v for s, v in peaks.items()})
    if peaks:
        flat["memory/peak_rss_mb"] = max(peaks.values())
    return flat


def describe_method(recipe: dict) -> str:
    """`CREAM (consistency), SoftLabelDPO: rewards implicit (ranking), judge; 3 rounds on sandbox` from the raw
    recipe (the method registry's titles when the recipe still loads with this version of selfalign)."""
    from selfalign.methods import resolve
    from selfalign.recipe import recipe_from_dict

    try:
        loaded = recipe_from_dict(recipe, source="recipe.yaml")
        titles = [m.title for m in resolve(loaded)]
    except (ConfigError, ValueError, KeyError, TypeError):
        titles = []
    train = recipe.get("train", {}) or {}
    algorithm = (train.get("algorithm") or "dpo").upper()
    parts = [", ".join(titles) if titles else algorithm]
    if algorithm == "GRPO":
        terms = [t.get("source", "?") if isinstance(t, dict) else str(t) for t in train.get("grpo_rewards") or []]
        if terms:
            parts.append("rewards " + ", ".join(terms))
    else:
        ranking = (recipe.get("pairs") or {}).get("reward")
        names = [n for n, v in (recipe.get("rewards") or {}).items() if v is not None]
        if names:
            parts.append("rewards " + ", ".join(f"{n} (ranking)" if n == ranking else n for n in names))
    model = (recipe.get("model") or {}).get("path", "?")
    parts.append(f"{recipe.get('rounds', '?')} rounds on {model}")
    return "; ".join(parts)


def _read_round(run: RunData, d: Path, t: int, samples: int, seed: int) -> None:
    if (d / "eval_samples.jsonl").exists():
        modes: dict[str, list[int]] = {}
        for r in _jsonl(d / "eval_samples.jsonl"):
            for k, v in r.items():
                if k.endswith("_tokens") and isinstance(v, int):
                    modes.setdefault(k.removesuffix("_tokens"), []).append(v)
        run.eval_tokens[t] = modes
    if (d / "rollouts.jsonl").exists():
        run.online.add(t)
        rollouts = list(_jsonl(d / "rollouts.jsonl"))
        run.sample_tokens[t] = [len(r.get("token_ids", ())) for r in rollouts]
        for r in rollouts:
            for name, v in r.get("scores", {}).items():
                if v is not None:
                    run.scores.setdefault(name, {}).setdefault(t, []).append(v)
        run.sample_totals[t] = len(rollouts)
        run.samples[t] = [{"prompt": r.get("prompt", r.get("prompt_id")), "response": r["response"],
                           "scores": r.get("scores", {}), "correct": r.get("correct"), "step": r.get("step")}
                          for r in _pick(rollouts, samples, seed + t)]
        return
    answers: dict[str, dict] = {}
    if (d / "generations.jsonl").exists():
        lengths = []
        for g in _jsonl(d / "generations.jsonl"):
            lengths.append(len(g.get("token_ids", ())))
            answers.setdefault(g["prompt_id"], {"prompt": g["prompt"], "answer": g.get("answer")})
        run.sample_tokens[t] = lengths
    if (d / "rewards.jsonl").exists():
        for r in _jsonl(d / "rewards.jsonl"):
            for name, v in r.get("scores", {}).items():
                if v is not None:
                    run.scores.setdefault(name, {}).setdefault(t, []).append(v)
    if (d / "pairs.jsonl").exists():
        pairs = list(_jsonl(d / "pairs.jsonl"))
        run.sample_totals[t] = len(pairs)
        run.samples[t] = [_pair_view(q, answers.get(q["prompt_id"])) for q in _pick(pairs, samples, seed + t)]


def _pick(rows: list[dict], n: int, seed: int) -> list[dict]:
    """`n` rows drawn with `seed`, in file order."""
    if len(rows) <= n:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [rows[i] for i in keep]


def _pair_view(q: dict, row: dict | None) -> dict:
    view = {"prompt": q["prompt"], "chosen": q["chosen"], "rejected": q["rejected"],
            "chosen_score": q.get("chosen_score"), "rejected_score": q.get("rejected_score"),
            "label": q.get("label"), "weight": q.get("weight"), "chosen_correct": None, "rejected_correct": None}
    if row is not None and row.get("answer") is not None:
        from selfalign.rewards.verifier import is_correct

        view["chosen_correct"] = is_correct(row, q["chosen"])
        view["rejected_correct"] = is_correct(row, q["rejected"])
    return view


def _read_steps(run: RunData, path: Path) -> None:
    """train_steps.jsonl: each trainer's last uninterrupted run (a stage killed and re-run logs its steps again)."""
    if not path.exists():
        return
    for r in _jsonl(path):
        if "train_runtime" in r or "step" not in r:
            continue
        key = (r.get("round"), r.get("trainer", "trainer"))
        steps = run.steps.setdefault(key, [])
        if steps and r["step"] <= steps[-1]["step"]:
            steps.clear()
        steps.append(r)


def mean_or_none(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None
