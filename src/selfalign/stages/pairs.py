"""Pairs: each prompt's scored samples become preference pairs (pairs.jsonl): the methods' filters drop prompts or
samples first (`filter_groups`), the method that builds pairs builds them (DPO's best-vs-worst by default), the
method that sets labels labels them, and the methods add per-token columns. Ground truth, where the prompts have
it, only measures how often the chosen and the rejected response are right. The same pairs are also written in TRL's
conversational form (pairs_conversational.jsonl), ready for `trl.DPOTrainer` or another tool."""

from __future__ import annotations

import statistics

from selfalign.artifacts import read_jsonl, write_jsonl
from selfalign.context import RoundContext
from selfalign.rewards.verifier import is_correct
from selfalign.rows import groups as make_groups


def run(ctx: RoundContext, t: int):
    from selfalign.trainers.token_dpo import check_token_columns

    gens = read_jsonl(ctx.run.round_dir(t) / "generations.jsonl")
    groups = make_groups(gens, read_jsonl(ctx.run.round_dir(t) / "rewards.jsonl"))
    filtered: dict = {}
    for method in ctx.methods:
        filtered.update(method.filter_groups(ctx, t, groups))
    pairs, info = ctx.methods.pairs.build_pairs(ctx, t, groups)
    info.update(filtered)
    for method in ctx.methods:
        info.update(method.label_pairs(ctx, t, groups, pairs))
    info.update(pair_stats(groups, pairs))
    for method in ctx.methods:
        info.update(method.annotate_pairs(ctx, t, groups, pairs))
    check_token_columns(ctx.store.tokenizer, pairs, f"round {t} pairs")  # never train on shifted token values
    path = ctx.run.round_dir(t) / "pairs.jsonl"
    if ctx.main:
        from selfalign.data.prompts import train_rows

        messages = {r["id"]: r["messages"] for r in train_rows(ctx.recipe.prompts, t, ctx.store.tokenizer)
                    if r.get("messages")}
        write_jsonl(ctx.run.round_dir(t) / "pairs_conversational.jsonl", conversational(pairs, messages))
        write_jsonl(path, pairs)
    return path, info


def conversational(pairs: list[dict], messages: dict | None = None) -> list[dict]:
    """The pairs in TRL's conversational preference format: `prompt` the conversation up to the answer (the
    source's chat `messages` when it has them, else one user turn), `chosen` / `rejected` one assistant turn each;
    the pair's scalar columns (prompt id, scores, label, weight) kept, its per-token columns left out."""
    messages = messages or {}
    out = []
    for q in pairs:
        row = {"prompt": messages.get(q["prompt_id"]) or [{"role": "user", "content": q["prompt"]}],
               "chosen": [{"role": "assistant", "content": q["chosen"]}],
               "rejected": [{"role": "assistant", "content": q["rejected"]}]}
        row.update({k: v for k, v in q.items() if k not in row and not isinstance(v, list | dict)})
        out.append(row)
    return out


def pair_stats(groups: dict, pairs: list[dict]) -> dict:
    """Of the pairs DPO trains on (weight > 0): how often the chosen / rejected response is right (ground truth,
    when every prompt has it) and their mean length in characters."""
    info: dict = {}
    trained = [q for q in pairs if q.get("weight", 1.0) > 0]
    if trained and all(grp["row"]["answer"] is not None for grp in groups.values()):
        right = [(is_correct(groups[q["prompt_id"]]["row"], q["chosen"]),
                  is_correct(groups[q["prompt_id"]]["row"], q["rejected"])) for q in trained]
        info["chosen_correct"] = sum(c for c, _ in right) / len(right)
        info["rejected_correct"] = sum(r for _, r in right) / len(right)
    if pairs:
        info["chosen_chars"] = statistics.fmean(len(q["chosen"]) for q in trained) if trained else None
        info["rejected_chars"] = statistics.fmean(len(q["rejected"]) for q in trained) if trained else None
    return info
