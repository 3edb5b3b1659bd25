"""Best-of-N evaluation: how well does each of the model's own signals pick one of N samples?

    selfalign eval sandbox --prompts "sandbox://arith?terms=3&digits=2&seed=0" --num-prompts 256 \\
        --best-of 1,2,4,8,16 --select self_certainty,borda,majority,likelihood --output /tmp/bon

Each prompt is sampled max(N) times, once; every needed reward scores every sample once; then for
each N the first N samples are given to each selection rule, so the N-sample sets are nested:

- any registered reward (`selfalign.rewards.REWARDS`) that needs no other model: the argmax of its score, e.g.
  `self_certainty` (rewards/self_certainty.py), `likelihood` (length-normalised), `judge` (its expected score,
  expected mode, the sandbox template on sandbox prompts), `ptrue` (P(True)), `verifier` (an oracle);
- `majority`: the most frequent final answer (self-consistency; the argmax of the `majority` reward);
- `borda`: Borda vote over the final answers, ranks by self-certainty (rewards/voting.py).

A vote picks an answer; the sample that stands for it is its best-ranked one (majority: its first).
With a verifier the report gives accuracy per (rule, N) and two references: mean@N, the expected
accuracy of a uniformly random pick among the N, and pass@N, the share of prompts with any correct
sample among the N (what a perfect selector reaches).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from selfalign.artifacts import atomic_write_text, write_json, write_jsonl
from selfalign.config import ConfigError, build, did_you_mean
from selfalign.data.prompts import render_prompt
from selfalign.generation import generate
from selfalign.rewards import REWARDS, RewardContext, build_reward
from selfalign.rewards.verifier import extract_answer, is_correct
from selfalign.rewards.voting import borda_vote, majority_vote, rank_order

#: rule → the reward whose scores it uses (None: answers only): the votes, then every registered reward that needs
#: no model but the evaluated one
RULE_REWARD: dict[str, str | None] = {
    "borda": "self_certainty", "majority": None,
    **{name: name for name, spec in REWARDS.items()
       if not {"reference", "inputs"} & set(spec.needs) and not spec.is_grouped()}}
RULES = tuple(RULE_REWARD)
REFERENCES = ("mean@N", "pass@N")


@dataclass
class BestOfNSettings:
    best_of: list[int]
    rules: list[str]
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    batch_size: int = 64
    seed: int = 0
    borda_power: float = 0.5


def parse_best_of(text: str) -> list[int]:
    """"1,2,4,8" → [1, 2, 4, 8] (sorted, deduplicated); ConfigError unless positive integers."""
    try:
        ns = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise ConfigError(f"--best-of: {text!r} is not a comma-separated list of integers, e.g. 1,2,4,8") from None
    if ns[0] < 1:
        raise ConfigError(f"--best-of: {text!r}: every N must be >= 1")
    return ns


def parse_rules(text: str) -> list[str]:
    """"borda,majority" → ["borda", "majority"] (order kept, duplicates dropped); ConfigError on unknown rules."""
    rules = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [r for r in rules if r not in RULE_REWARD]
    for r in unknown:
        if r in REWARDS:
            if "inputs" in REWARDS[r].needs:
                raise ConfigError(f"--select: the {r!r} reward needs its round's inputs (a reward of a run's rounds); "
                                  f"best-of-N selects with: {', '.join(RULES)}")
            needs = " and ".join(n for n in REWARDS[r].needs if n != "policy") or "second"
            raise ConfigError(f"--select: the {r!r} reward needs a {needs} model besides the evaluated one (it is a "
                              f"reward of a run's rounds); best-of-N selects with: {', '.join(RULES)}")
    if unknown or not rules:
        bad = unknown[0] if unknown else text
        raise ConfigError(f"--select: unknown rule {bad!r}; available: {', '.join(RULES)}{did_you_mean(bad, RULES)}")
    return rules


def select(rule: str, answers: Sequence[str | None], scores: Sequence[float | None] | None,
           borda_power: float = 0.5) -> int:
    """The index of the sample `rule` picks (always one; with no parseable answer a vote picks the top
    score (borda) or the first sample (majority)). Shapes: answers, scores (N,)."""
    if rule == "majority":
        winner = majority_vote(answers)
        return answers.index(winner) if winner is not None else 0
    assert scores is not None, f"rule {rule} needs scores"
    order = rank_order(scores)
    if rule == "borda":
        winner = borda_vote(answers, scores, borda_power)
        return next((i for i in order if answers[i] == winner), order[0])
    return order[0]


def selections(answers: list[list[str | None]], scores: dict[str, list[list[float | None]]],
               settings: BestOfNSettings) -> dict[str, dict[int, list[int]]]:
    """rule → N → the chosen sample index of each prompt, from the first N samples of each prompt."""
    return {rule: {n: [select(rule, a[:n], scores[RULE_REWARD[rule]][k][:n] if RULE_REWARD[rule] else None,
                              settings.borda_power)
                       for k, a in enumerate(answers)]
                   for n in settings.best_of}
            for rule in settings.rules}


def accuracy_table(chosen: dict[str, dict[int, list[int]]], correct: list[list[bool]],
                   best_of: list[int]) -> dict[str, dict[str, float]]:
    """rule (and mean@N, pass@N) → str(N) → accuracy over the prompts."""
    def mean(values) -> float:
        values = list(values)
        return sum(values) / len(values) if values else 0.0

    table = {rule: {str(n): mean(correct[k][i] for k, i in enumerate(idx)) for n, idx in by_n.items()}
             for rule, by_n in chosen.items()}
    table["mean@N"] = {str(n): mean(mean(c[:n]) for c in correct) for n in best_of}
    table["pass@N"] = {str(n): mean(any(c[:n]) for c in correct) for n in best_of}
    return table


def separation(scores: dict[str, list[list[float | None]]], correct: list[list[bool]]) -> dict[str, dict]:
    """Per reward: P(a right sample outscores a wrong one of the same prompt), ties half, over every (right, wrong)
    pair of the max(N) samples (`value`, None without such pairs), and the number of pairs (`pairs`)."""
    from selfalign.stages.reward import pairwise_accuracy

    out = {}
    for name, per_prompt in scores.items():
        value, n = pairwise_accuracy([list(zip(s, c, strict=True)) for s, c in zip(per_prompt, correct, strict=True)])
        out[name] = {"value": value, "pairs": n}
    return out


def build_rewards(names: set[str], model, tokenizer, batch_size: int, judge_template: str,
                  max_new_tokens: int | None = None) -> dict:
    """The reward models of `names` on `model`, through the registry, with `batch_size` for those that batch and the
    judge in expected mode with `judge_template`."""
    ctx = RewardContext(tokenizer, policy=model, max_new_tokens=max_new_tokens, where="--select")
    out = {}
    for name in sorted(names):
        spec = REWARDS[name]
        values: dict = {"batch_size": batch_size} if "batch_size" in spec.config.__dataclass_fields__ else {}
        if name == "judge":
            values.update(mode="expected", template=judge_template)
        out[name] = build_reward(name, build(spec.config, values, f"--select {name}"), ctx)
    return out


def run_best_of_n(model, tokenizer, rows: list[dict], settings: BestOfNSettings,
                  judge_template: str = "srlm") -> tuple[dict, list[dict]]:
    """Sample, score, select. Returns (report, one record per prompt with its samples and choices)."""
    if not rows:
        raise ConfigError("best-of-N: no prompts to evaluate")
    n_max = max(settings.best_of)
    for r in rows:
        r.setdefault("prompt_text", render_prompt(tokenizer, r))
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    samples = generate(model, tokenizer, [r["prompt_text"] for r in rows], num_samples=n_max,
                       temperature=settings.temperature, top_p=settings.top_p,
                       max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size, with_logprobs=False)
    seconds["generate"] = time.perf_counter() - t0
    texts = [[s.text for s in group] for group in samples]
    flat_rows = [r for r, group in zip(rows, texts, strict=True) for _ in group]
    flat_texts = [t for group in texts for t in group]

    needed = {RULE_REWARD[rule] for rule in settings.rules} - {None}
    scores: dict[str, list[list[float | None]]] = {}
    for name, reward in build_rewards(needed, model, tokenizer, settings.batch_size, judge_template,
                                      settings.max_new_tokens).items():
        t0 = time.perf_counter()
        flat = reward.score(flat_rows, flat_texts).scores
        scores[name] = [flat[k * n_max : (k + 1) * n_max] for k in range(len(rows))]
        seconds[name] = time.perf_counter() - t0

    answers = [[extract_answer(t) for t in group] for group in texts]
    chosen = selections(answers, scores, settings)
    verifiable = all(r.get("answer") is not None for r in rows)
    correct = [[is_correct(r, t) for t in group] for r, group in zip(rows, texts, strict=True)] if verifiable else None
    report = {
        **asdict(settings),
        "num_prompts": len(rows),
        "verifiable": verifiable,
        "accuracy": accuracy_table(chosen, correct, settings.best_of) if correct is not None else None,
        "pairwise_accuracy": separation(scores, correct) if correct is not None else None,
        "answer_rate": statistics.fmean(a is not None for group in answers for a in group),
        "mean_response_tokens": statistics.fmean(len(s.token_ids) for group in samples for s in group),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    records = [{"id": r.get("id"), "prompt": r["prompt"], "answer": r.get("answer"), "responses": texts[k],
                "answers": answers[k], "correct": correct[k] if correct is not None else None,
                "scores": {name: s[k] for name, s in scores.items()},
                "chosen": {rule: {str(n): idx[k] for n, idx in by_n.items()} for rule, by_n in chosen.items()}}
               for k, r in enumerate(rows)]
    return report, records


def markdown_table(report: dict) -> str:
    ns = [str(n) for n in report["best_of"]]
    lines = ["# Best-of-N selection", "",
             f"model `{report.get('model')}`, prompts `{report.get('prompts')}` ("
             + (f"split {report['split']}, " if report.get("split") else "")
             + f"{report['num_prompts']} prompts), temperature {report['temperature']}, top_p {report['top_p']}, "
             f"max_new_tokens {report['max_new_tokens']}, seed {report['seed']}, Borda power {report['borda_power']}",
             ""]
    if report["accuracy"] is None:
        return "\n".join(lines + ["No verifier for these prompts (no `answer` field): accuracy is not available; "
                                  "the choices of each rule are in best_of_n_samples.jsonl.", ""])
    lines += ["| rule | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]
    for rule, by_n in report["accuracy"].items():
        lines.append(f"| {rule} | " + " | ".join(f"{by_n[n]:.3f}" for n in ns) + " |")
    lines += ["", "Accuracy of the selected sample. mean@N: a uniformly random pick among the N; "
              "pass@N: any of the N is correct (a perfect selector).", ""]
    if report.get("pairwise_accuracy"):
        lines += ["| reward | P(right > wrong) | pairs |", "|---|---:|---:|"]
        for name, sep in report["pairwise_accuracy"].items():
            value = "–" if sep["value"] is None else f"{sep['value']:.3f}"
            lines.append(f"| {name} | {value} | {sep['pairs']} |")
        lines += ["", "P(right > wrong): how often a right sample outscores a wrong one of the same prompt (ties "
                  "half), over every such pair of the samples; 0.5 is chance.", ""]
    return "\n".join(lines)


def plot_accuracy(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = report["best_of"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for rule, by_n in report["accuracy"].items():
        style = {"color": "gray", "linestyle": "--" if rule == "mean@N" else ":"} if rule in REFERENCES else {}
        ax.plot(ns, [by_n[str(n)] for n in ns], marker="o", label=rule, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (samples per prompt)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Best-of-N on {report['num_prompts']} prompts (T={report['temperature']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(report: dict, records: list[dict], out_dir: str | Path) -> list[Path]:
    """best_of_n.json, best_of_n.md, best_of_n_samples.jsonl, and (with a verifier) best_of_n.png."""
    out = Path(out_dir)
    write_json(out / "best_of_n.json", report)
    atomic_write_text(out / "best_of_n.md", markdown_table(report))
    write_jsonl(out / "best_of_n_samples.jsonl", records)
    written = [out / "best_of_n.json", out / "best_of_n.md", out / "best_of_n_samples.jsonl"]
    if report["accuracy"] is not None:
        plot_accuracy(report, out / "best_of_n.png")
        written.append(out / "best_of_n.png")
    return written
