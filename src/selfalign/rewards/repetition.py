"""Repetition and length of completions: statistics that expose degenerate text, and penalties against it.

Self-certainty rewards confidence, and very confident text can be degenerate: repeated loops, or one answer
copied by every sample (Kang et al. 2025 and Intuitor, https://arxiv.org/abs/2505.19590, report it as the
failure to watch). The measures:

- seq-rep-n (Welleck et al. 2020, https://arxiv.org/abs/1908.04319, "the portion of duplicate n-grams"):
  1 − |unique n-grams| / |n-grams| within one sequence; 0 = no n-gram repeats, → 1 = a loop.
- distinct-n (Li et al. 2016, https://arxiv.org/abs/1510.03055): |unique n-grams| / |n-grams| over all
  sequences of a set together; low = the set says the same things.
- unique share per group: distinct completions / completions of one prompt (mode collapse of a group).

As rewards (penalties in [−1, 0]): `repetition` = −seq-rep-n of the response's tokens, `length` = −its tokens /
the sampler's max_new_tokens. Both read the sampled tokens when given (GRPO), else the response tokenized as DPO
does (`repetition` with the EOS DPO appends, `length` without it).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from selfalign.config import ConfigError, opt
from selfalign.rewards.base import RewardOutput, RewardSpec, TokenIds
from selfalign.scoring import tokenize_pair


def ngrams(tokens: Sequence, n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_fraction(tokens: Sequence, n: int = 4) -> float:
    """seq-rep-n = 1 − |unique n-grams| / |n-grams| of one sequence; 0.0 when it has no n-gram."""
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(sequences: Sequence[Sequence], n: int = 4) -> float | None:
    """|unique n-grams| / |n-grams| over all `sequences` together; None when they hold no n-gram."""
    grams = [g for s in sequences for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else None


def unique_share(texts: Sequence[str]) -> float:
    """Distinct texts / texts of one group (1.0: all different; 1/len: all the same)."""
    return len(set(texts)) / len(texts) if texts else 0.0


def completion_stats(token_ids: Sequence[Sequence[int]], texts: Sequence[str], groups: Sequence[str],
                     truncated: Sequence[bool], n: int = 4) -> dict:
    """Length and repetition of a set of completions. `groups[i]` is completion i's prompt id.

    Returns: completions, tokens_mean, truncated (share that hit the length limit), seq_rep_{n} (mean
    seq-rep-n), distinct_{n} (over the set), unique_per_group (mean unique share of a prompt's completions).
    """
    if not token_ids:
        return {"completions": 0}
    by_group: dict[str, list[str]] = {}
    for g, text in zip(groups, texts, strict=True):
        by_group.setdefault(g, []).append(text)
    return {
        "completions": len(token_ids),
        "tokens_mean": statistics.fmean(len(t) for t in token_ids),
        "truncated": sum(truncated) / len(truncated),
        f"seq_rep_{n}": statistics.fmean(repeated_ngram_fraction(t, n) for t in token_ids),
        f"distinct_{n}": distinct_n(token_ids, n),
        "unique_per_group": statistics.fmean(unique_share(v) for v in by_group.values()),
    }


def _response_ids(tokenizer, rows: list[dict], responses: list[str], token_ids: TokenIds | None,
                  add_eos: bool = True) -> list[list[int]]:
    if token_ids is not None:
        return [list(y) for _, y in token_ids]
    return [tokenize_pair(tokenizer, r["prompt_text"], y, add_eos)[1] for r, y in zip(rows, responses, strict=True)]


@dataclass
class RepetitionConfig:
    ngram: int = opt(4, lo=1)  # n of seq-rep-n


class RepetitionPenalty:
    """−seq-rep-n of each response's tokens: 0 without repeated n-grams, → −1 for a loop."""

    name = "repetition"

    def __init__(self, tokenizer, n: int = 4):
        self.tokenizer, self.n = tokenizer, n

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        ids = _response_ids(self.tokenizer, rows, responses, token_ids)
        return RewardOutput([0.0 - repeated_ngram_fraction(y, self.n) for y in ids])  # 0.0, not -0.0


@dataclass
class LengthConfig:
    max_tokens: int | None = opt(None, lo=1)  # the scale; default: generation.max_new_tokens


class LengthPenalty:
    """−tokens / max_tokens of each response: 0 for empty, −1 at the length limit. The sampled tokens when given
    (EOS included when sampled, as TRL counts a completion), else the response text's tokens."""

    name = "length"

    def __init__(self, tokenizer, max_tokens: int):
        self.tokenizer, self.max_tokens = tokenizer, max_tokens

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        ids = _response_ids(self.tokenizer, rows, responses, token_ids, add_eos=False)
        return RewardOutput([-len(y) / self.max_tokens for y in ids])


def _length_penalty(cfg: LengthConfig, ctx) -> LengthPenalty:
    scale = cfg.max_tokens or ctx.max_new_tokens
    if scale is None:
        raise ConfigError(f"{ctx.where}: length needs max_tokens (no sampler length limit is known here)")
    return LengthPenalty(ctx.tokenizer, scale)


REPETITION = RewardSpec(
    "repetition", RepetitionConfig, lambda cfg, ctx: RepetitionPenalty(ctx.tokenizer, cfg.ngram),
    "−seq-rep-n of its tokens, the share of repeated n-grams (a penalty in [−1, 0])", needs=())
LENGTH = RewardSpec(
    "length", LengthConfig, _length_penalty,
    "−its tokens / generation.max_new_tokens (a penalty in [−1, 0])", needs=())
