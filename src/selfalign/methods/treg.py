"""T-REG, token-level reward regularisation (Zhou et al., ACL 2025, https://arxiv.org/abs/2412.02685), section `treg`.

The frozen reference (the round's starting model) reads each response of a pair twice, once after a prompt asking
for a better response and once after one asking for a worse response, and r̂_t = σ(Δ log p_t) − 0.5
(`rewards.contrastive.treg_token_rewards`). DPO adds α · sg(σ(−βh)) · (L_REG(y_w) + L_REG(y_l)) with
L_REG(y) = −Σ_t β·r̂_t·log π_θ(y_t|x, y_<t) (`trainers/token_dpo.py`). It adds token rewards to whatever pairs the
round built (self-consistency pairs in the sandbox recipe).

The response tokens are TRL's (`scoring.preference_token_ids`, EOS included), scored after the tokenized
contrastive prompt, so the rewards align with the tokens DPO trains on by construction; computed once per pair, in
resumable chunks.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from selfalign.artifacts import run_in_chunks
from selfalign.config import ConfigError, opt
from selfalign.data.prompts import render_prompt
from selfalign.methods.base import Method
from selfalign.rewards.contrastive import treg_token_rewards
from selfalign.scoring import preference_token_ids, token_logprobs

# Our wording: T-REG's prompts ask for a better / a worse revision; METHODS.md gives the four qualities.
DEFAULT_TREG_BETTER = ("{prompt}\n\nWrite the best possible response: helpful, correct, coherent and concise, a "
                       "better revision of a typical answer.")
DEFAULT_TREG_WORSE = ("{prompt}\n\nWrite a poor response: unhelpful, incorrect, incoherent and verbose, a worse "
                      "revision of a typical answer.")


@dataclass
class TREGConfig:
    """T-REG: token rewards from the round's starting model by contrastive prompting, once per pair: each template
    rewrites the user prompt ({prompt}), then the chat template (prompts.chat_template) applies."""

    alpha: float = opt(0.25, lo=0.0, lo_open=True)  # the paper tries 0.1, 0.25, 0.5
    better_template: str = DEFAULT_TREG_BETTER
    worse_template: str = DEFAULT_TREG_WORSE
    batch_size: int = opt(32, lo=1)  # teacher-forced scoring passes


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


class TREG(Method):
    name = "treg"
    title = "T-REG"
    section = "treg"
    config = TREGConfig

    def trainer(self) -> str:
        return "selfalign.trainers.token_dpo:TokenWeightedDPOTrainer"

    def check(self) -> None:
        for key in ("better_template", "worse_template"):
            if "{prompt}" not in getattr(self.cfg, key):
                raise ConfigError(f"treg.{key}: missing {{prompt}} (where the user prompt goes)")
        if self.cfg.better_template == self.cfg.worse_template:
            raise ConfigError("treg.worse_template: equal to treg.better_template, so every token reward is 0")

    def annotate_pairs(self, ctx, t, groups, pairs):
        if not pairs:
            return {}
        return add_treg_rewards(ctx.store.model(t - 1), ctx.store.tokenizer, pairs,
                                [groups[q["prompt_id"]]["row"]["prompt"] for q in pairs], self.cfg,
                                self.recipe.prompts.chat_template, ctx.run.parts_dir(t, "pairs") / "treg",
                                self.recipe.generation.chunk_prompts)

    def trainer_kwargs(self, ctx, pairs):
        return {"treg_alpha": self.cfg.alpha}
