"""`selfalign critical-tokens RUN_DIR`: are the tokens cDPO scores lowest the real critical tokens?

For every rejected response of a round's pairs that is a wrong sandbox solution, the first wrong character is known
exactly (`sandbox.first_error_position`), and so is the token that carries it (a response that stops early errs at
its EOS). A ranker puts the response's tokens in order, most critical first; its top-k precision is the share of
solutions whose true critical token is among its k first. Rankers:

- `cdpo`: the pairs' `rejected_token_scores`, s_t = softmax((1 + β)·z_pos − β·z_neg)[y_t], lowest first;
- `treg`: the pairs' `rejected_token_rewards` (T-REG's r̂_t), lowest first, when the run has them;
- `lowest_likelihood`: log π(y_t | x, y_<t) under the round's starting model, lowest first (does the contrast add
  anything to the model's own surprise?);
- `random`: a uniformly random response token (expected precision, exact: k / n).

The rollout check of cDPO's paper, on a small sample: from every prefix y_<j of a wrong solution the round's
starting model samples k continuations; the critical token is the last token of the first prefix none of whose
continuations is correct (prefixes are of the response text; after the whole text comes its EOS, which then is the
critical token). A solution whose empty prefix already gets no correct continuation is counted as unsolvable.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from selfalign import sandbox
from selfalign.artifacts import RunDir, atomic_write_text, read_jsonl, write_json, write_jsonl
from selfalign.config import ConfigError
from selfalign.model_store import ModelStore

RANKED_COLUMNS = {"cdpo": "rejected_token_scores", "treg": "rejected_token_rewards"}  # lowest = most critical
TOP_K = (1, 3)


def critical_token_index(tokenizer, completion_ids: Sequence[int], position: int) -> int:
    """The index of the completion token that holds character `position` of the decoded response; a position at
    or past the end of the text is the last token (the EOS TRL appends)."""
    for k in range(len(completion_ids)):
        if len(tokenizer.decode(list(completion_ids[: k + 1]), skip_special_tokens=True)) > position:
            return k
    return len(completion_ids) - 1


def lowest(values: Sequence[float], k: int) -> list[int]:
    """Indices of the k lowest values (ties: the earlier token first)."""
    return sorted(range(len(values)), key=lambda i: (values[i], i))[:k]


def precision(hits: Sequence[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


def wrong_solutions(pairs: Sequence[dict], questions: dict[str, str], tokenizer) -> tuple[list[dict], dict]:
    """The pairs whose rejected response is a wrong sandbox solution, with its completion tokens and the index of
    its true critical token; and the counts of the pairs left out."""
    from selfalign.scoring import preference_token_ids

    out, skipped = [], {"not_sandbox": 0, "correct": 0}
    for p in pairs:
        question = questions.get(p["prompt_id"], p["prompt"])
        try:
            position = sandbox.first_error_position(question, p["rejected"])
        except ValueError:
            skipped["not_sandbox"] += 1
            continue
        if position is None or sandbox.verify(question, p["rejected"]):
            skipped["correct"] += 1
            continue
        ids = preference_token_ids(tokenizer, {"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]})
        out.append({"pair": p, "question": question, "prompt_ids": ids["prompt_ids"],
                    "completion_ids": ids["rejected_ids"], "error_char": position,
                    "critical": critical_token_index(tokenizer, ids["rejected_ids"], position)})
    return out, skipped


@torch.no_grad()
def rollout_critical_index(model, tokenizer, solution: dict, k: int, temperature: float, top_p: float,
                           max_new_tokens: int, batch_size: int) -> int | None:
    """The rollout critical token of one wrong solution (module docstring), or None when it is unsolvable."""
    from selfalign.generation import generate

    ids = solution["completion_ids"]
    text_ids = ids[:-1] if ids and ids[-1] == tokenizer.eos_token_id else ids
    prefixes = [tokenizer.decode(text_ids[:j], skip_special_tokens=True) for j in range(len(text_ids) + 1)]
    samples = generate(model, tokenizer, [solution["pair"]["prompt"] + pre for pre in prefixes], num_samples=k,
                       temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       with_logprobs=False)
    solvable = [any(sandbox.verify(solution["question"], pre + s.text) for s in ss)
                for pre, ss in zip(prefixes, samples, strict=True)]
    if not solvable[0]:
        return None
    return next((j - 1 for j in range(1, len(prefixes)) if not solvable[j]), len(ids) - 1)


def analyze_round(store: ModelStore, t: int, rollout_solutions: int, rollouts: int,
                  seed: int) -> tuple[dict, list[dict]]:
    """The report entry and the per-solution records of round t of the run whose models `store` holds."""
    from selfalign.scoring import token_logprobs

    pairs = read_jsonl(store.run.round_dir(t) / "pairs.jsonl")
    gens_path = store.run.round_dir(t) / "generations.jsonl"
    questions = {g["prompt_id"]: g["prompt"] for g in read_jsonl(gens_path)} if gens_path.exists() else {}
    tokenizer = store.tokenizer
    solutions, skipped = wrong_solutions(pairs, questions, tokenizer)
    rankers = [name for name, column in RANKED_COLUMNS.items() if any(column in s["pair"] for s in solutions)]
    model = store.model(t - 1)
    likelihood = token_logprobs(model, [(s["prompt_ids"], s["completion_ids"]) for s in solutions],
                                pad_token_id=tokenizer.pad_token_id or 0)
    records = []
    for s, lp in zip(solutions, likelihood, strict=True):
        ranked = {name: s["pair"][RANKED_COLUMNS[name]] for name in rankers}
        ranked["lowest_likelihood"] = lp.tolist()
        for name, values in ranked.items():
            if len(values) != len(s["completion_ids"]):
                raise ValueError(f"round {t}, prompt {s['pair']['prompt_id']}: {name} has {len(values)} values for "
                                 f"{len(s['completion_ids'])} response tokens")
        records.append({"round": t, "prompt_id": s["pair"]["prompt_id"], "rejected": s["pair"]["rejected"],
                        "tokens": len(s["completion_ids"]), "error_char": s["error_char"],
                        "critical": s["critical"], "lowest": {n: lowest(v, max(TOP_K)) for n, v in ranked.items()}})
    entry: dict = {"round": t, "solutions": len(records), "skipped": skipped,
                   "mean_tokens": statistics.fmean(r["tokens"] for r in records) if records else None,
                   "precision": {}}
    for name in [*rankers, "lowest_likelihood"]:
        entry["precision"][name] = {f"top{k}": precision([r["critical"] in r["lowest"][name][:k] for r in records])
                                    for k in TOP_K}
    entry["precision"]["random"] = {f"top{k}": precision([min(k, r["tokens"]) / r["tokens"] for r in records])
                                    for k in TOP_K}
    if rollouts > 0 and records:
        entry["rollout"] = rollout_check(store, model, solutions, records, rankers, rollout_solutions, rollouts, seed)
    return entry, records


def rollout_check(store: ModelStore, model, solutions: list[dict], records: list[dict], rankers: list[str], n: int,
                  k: int, seed: int) -> dict:
    """The rollout critical token of `n` randomly chosen wrong solutions, and how often each ranker's lowest token
    (and the first wrong token) is it; continuations are sampled with the run's generation settings."""
    g = store.generation
    chosen = sorted(random.Random(seed).sample(range(len(solutions)), min(n, len(solutions))))
    torch.manual_seed(seed)
    found = []
    for i in chosen:
        index = rollout_critical_index(model, store.tokenizer, solutions[i], k, g.temperature, g.top_p,
                                       g.max_new_tokens, g.batch_size)
        records[i]["rollout_critical"] = index
        if index is not None:
            found.append(records[i])
    out = {"solutions": len(chosen), "samples_per_prefix": k, "unsolvable": len(chosen) - len(found),
           "agreement": {"first_error": precision([r["rollout_critical"] == r["critical"] for r in found])}}
    for name in [*rankers, "lowest_likelihood"]:
        out["agreement"][name] = precision([r["rollout_critical"] == r["lowest"][name][0] for r in found])
    out["mean_offset_from_first_error"] = (statistics.fmean(r["rollout_critical"] - r["critical"] for r in found)
                                           if found else None)
    return out


def analyze_run(run_dir: str | Path, rounds: Sequence[int] | None = None, rollout_solutions: int = 16,
                rollouts: int = 8, seed: int = 0) -> tuple[dict, list[dict]]:
    """The report over the run's rounds whose pairs carry token scores (or `rounds`)."""
    import yaml

    from selfalign.recipe import recipe_from_dict

    root = Path(run_dir)
    if not (root / "recipe.yaml").exists():
        raise ConfigError(f"{root}: not a run directory (no recipe.yaml)")
    recipe = recipe_from_dict(yaml.safe_load((root / "recipe.yaml").read_text()), source=str(root))
    store = ModelStore(recipe.model, recipe.generation, RunDir(root), recipe.seed)
    available = sorted(int(p.parent.name.split("_")[1]) for p in root.glob("round_*/pairs.jsonl")
                       if any(c in line for line in p.open() for c in RANKED_COLUMNS.values()))
    if rounds:
        missing = [t for t in rounds if t not in available]
        if missing:
            raise ConfigError(f"{root}: round {missing[0]} has no pairs with token scores (rounds with them: "
                              f"{', '.join(map(str, available)) or 'none'})")
    elif not available:
        raise ConfigError(f"{root}: no round has pairs with token scores (rejected_token_scores from a cDPO run, or "
                          "rejected_token_rewards from T-REG)")
    report: dict = {"run_dir": str(root), "rounds": []}
    records: list[dict] = []
    for t in rounds or available:
        entry, recs = analyze_round(store, t, rollout_solutions, rollouts, seed)
        report["rounds"].append(entry)
        records += recs
    return report, records


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(report: dict) -> str:
    lines = [f"# Critical tokens: {report['run_dir']}", ""]
    for e in report["rounds"]:
        lines += [f"## Round {e['round']}", "",
                  f"{e['solutions']} wrong sandbox solutions among the rejected responses "
                  f"(left out: {e['skipped']['correct']} correct, {e['skipped']['not_sandbox']} not sandbox); "
                  f"{_fmt(e['mean_tokens'])} tokens each on average.", "",
                  "| ranker | top-1 precision | top-3 precision |", "|---|---|---|"]
        lines += [f"| {name} | {_fmt(p['top1'])} | {_fmt(p['top3'])} |" for name, p in e["precision"].items()]
        if "rollout" in e:
            r = e["rollout"]
            lines += ["", f"Rollout check: {r['solutions']} solutions, {r['samples_per_prefix']} continuations per "
                          f"prefix, {r['unsolvable']} unsolvable. The rollout critical token is:", "",
                      "| token | share of solutions |", "|---|---|"]
            lines += [f"| {name} {'token' if name == 'first_error' else 'lowest token'} | {_fmt(v)} |"
                      for name, v in r["agreement"].items()]
            lines += ["", f"Mean offset from the first wrong token: {_fmt(r['mean_offset_from_first_error'])} tokens."]
        lines.append("")
    return "\n".join(lines)


def write_report(report: dict, records: list[dict], output: str | Path) -> list[Path]:
    out = Path(output)
    paths = [out / "critical_tokens.json", out / "critical_tokens.md", out / "critical_tokens.jsonl"]
    write_json(paths[0], report)
    atomic_write_text(paths[1], markdown(report))
    write_jsonl(paths[2], records)
    return paths
