"""T-REG's token rewards for the round's preference pairs (Zhou et al. 2025, https://arxiv.org/abs/2412.02685): the
frozen reference (the round's starting model) reads each response twice, once after a prompt asking for a better
response and once after one asking for a worse response, and r̂_t = σ(Δ log p_t) − 0.5
(`selfalign.rewards.contrastive.treg_token_rewards`).

The response tokens are TRL's (`preference_token_ids`, EOS included), scored after the tokenized contrastive prompt,
so the rewards align with the tokens DPO trains on by construction; computed once per pair, in resumable chunks.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from selfalign.artifacts import run_in_chunks
from selfalign.config import TREGConfig
from selfalign.data.prompts import render_prompt
from selfalign.rewards.contrastive import treg_token_rewards
from selfalign.scoring import token_logprobs
from selfalign.trainers.token_dpo import preference_token_ids

SIDES = ("chosen", "rejected")


def contrastive_prompt(tokenizer, prompt: str, template: str, chat_template: str = "auto") -> str:
    """The model input for `template` with the user prompt in place of `{prompt}` (chat template when it has one)."""
    return render_prompt(tokenizer, {"prompt": template.replace("{prompt}", prompt)}, chat_template)


@torch.no_grad()
def pair_token_rewards(reference, tokenizer, pairs: Sequence[dict], prompts: Sequence[str], cfg: TREGConfig,
                       chat_template: str = "auto") -> list[dict[str, list[float]]]:
    """`chosen_token_rewards` and `rejected_token_rewards` (r̂_t per token) of each pair; `prompts[i]` is pair i's
    raw user prompt, which the templates rewrite."""
    jobs = []
    for p, prompt in zip(pairs, prompts, strict=True):
        ids = preference_token_ids(tokenizer, {"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]})
        better, worse = (tokenizer(contrastive_prompt(tokenizer, prompt, tpl, chat_template))["input_ids"]
                         for tpl in (cfg.better_template, cfg.worse_template))
        jobs += [(context, ids[f"{side}_ids"]) for side in SIDES for context in (better, worse)]
    logps = token_logprobs(reference, jobs, cfg.batch_size, tokenizer.pad_token_id or 0)
    out = []
    for i in range(len(pairs)):
        row = {}
        for k, side in enumerate(SIDES):
            better, worse = logps[4 * i + 2 * k], logps[4 * i + 2 * k + 1]
            row[f"{side}_token_rewards"] = [round(v, 6) for v in treg_token_rewards(better, worse).tolist()]
        out.append(row)
    return out


def add_treg_rewards(reference, tokenizer, pairs: list[dict], prompts: Sequence[str], cfg: TREGConfig,
                     chat_template: str, parts_dir: Path, chunk: int) -> dict:
    """Add the T-REG token rewards to every pair (chunked, resumable under `parts_dir`); returns statistics."""
    def compute(_: int, items: Sequence[tuple[dict, str]]) -> list[dict]:
        return pair_token_rewards(reference, tokenizer, [p for p, _ in items], [x for _, x in items], cfg,
                                  chat_template)

    items = list(zip(pairs, prompts, strict=True))
    for p, r in zip(pairs, run_in_chunks(items, chunk, parts_dir, compute), strict=True):
        p.update(r)
    info = {}
    for side in SIDES:
        values = [v for p in pairs for v in p[f"{side}_token_rewards"]]
        info[f"treg_{side}_reward_mean"] = statistics.fmean(values) if values else None
    return info
