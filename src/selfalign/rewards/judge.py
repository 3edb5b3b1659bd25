"""LLM-as-a-judge with the additive 5-point rubric of Self-Rewarding Language Models.

Yuan et al. 2024, https://arxiv.org/abs/2401.10020: "the model acts as its own reward model ...
via LLM-as-a-Judge prompting". Two modes:

- `generate`: sample the judgment n times, parse `Score: <k>` from each, average the parsed scores
  (unparseable judgments are dropped and counted).
- `expected`: one forward pass at the score position, score = Σ_k k · p(k) with p renormalised
  over the score tokens "1".."5".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

from selfalign import sandbox
from selfalign.config import ConfigError, opt
from selfalign.generation import generate
from selfalign.rewards.base import RewardOutput, RewardSpec
from selfalign.rewards.preference import empirical_distribution
from selfalign.scoring import next_token_option_logits, single_token_ids

SRLM_RUBRIC = """Review the user's question and the corresponding response using the additive 5-point \
scoring system described below. Points are accumulated based on the satisfaction of each criterion:
- Add 1 point if the response is relevant and provides some information related to the user's inquiry, \
even if it is incomplete or contains some irrelevant content.
- Add another point if the response addresses a substantial portion of the user's question, but does not \
completely resolve the query or provide a direct answer.
- Award a third point if the response answers the basic elements of the user's question in a useful way, \
regardless of whether it seems to have been written by an AI Assistant or if it has elements typically \
found in blogs or search results.
- Grant a fourth point if the response is clearly written from an AI Assistant's perspective, addressing \
the user's question directly and comprehensively, and is well-organized and helpful, even if there is \
slight room for improvement in clarity, conciseness or focus.
- Bestow a fifth point for a response that is impeccably tailored to the user's question by an AI \
Assistant, without extraneous information, reflecting expert knowledge, and demonstrating a \
high-quality, engaging, and insightful answer.

User: {prompt}
<response>{response}</response>

After examining the user's instruction and the response:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Score: <total points>"

Remember to assess from the AI Assistant perspective, utilizing web search knowledge as necessary. To \
evaluate the response in alignment with this additive scoring model, we'll systematically attribute \
points based on the outlined criteria."""

SCORE_RE = re.compile(r"Score:\s*([1-5])\b")
SCORES = (1, 2, 3, 4, 5)


@dataclass
class JudgeConfig:
    """LLM-as-a-judge (SRLM): `generate` samples a written judgment, `expected` reads Σ k·p(k)."""

    mode: Literal["generate", "expected"] = "generate"
    template: str = "srlm"  # "srlm", "sandbox", or a template text with {prompt} and {response}
    expected_template: str | None = None  # for `expected` with a custom template; default: template + "\nScore: "
    num_judgments: int = opt(3, lo=1)
    temperature: float = opt(0.7, lo=0.0)
    top_p: float = opt(0.9, lo=0.0, hi=1.0, lo_open=True)
    max_new_tokens: int = opt(256, lo=1)
    batch_size: int = opt(64, lo=1)


@dataclass(frozen=True)
class JudgeTemplate:
    generate: str  # with {prompt} and {response}; the model writes a judgment ending in "Score: k"
    expected: str  # the text after which the next token is the score digit
    chat: bool  # wrap the judge prompt in the model's chat template (as a user turn)


TEMPLATES = {
    "srlm": JudgeTemplate(SRLM_RUBRIC, SRLM_RUBRIC, chat=True),
    "sandbox": JudgeTemplate(sandbox.JUDGE_TEMPLATE, sandbox.JUDGE_EXPECTED_TEMPLATE, chat=False),
}
_EXPECTED_PREFIX = "Score: "  # appended after a chat judge prompt (as the start of the reply) in `expected` mode


def parse_score(judgment: str) -> int | None:
    """The last `Score: k` (k in 1..5) of a judgment, or None."""
    found = SCORE_RE.findall(judgment)
    return int(found[-1]) if found else None


def mean_score(parsed: list[int | None]) -> float | None:
    """Average of the parsed scores; None when no judgment parsed."""
    valid = [s for s in parsed if s is not None]
    return sum(valid) / len(valid) if valid else None


def score_distribution(detail: dict) -> torch.Tensor | None:
    """The judge's distribution over the scores 1..5 of one sample, from its details: the softmax over the score
    tokens (`expected` mode), or the shares of its parsed judgments (`generate` mode); None when none parsed."""
    if "score_probs" in detail:
        return torch.tensor(detail["score_probs"], dtype=torch.float64)
    parsed = [s for s in detail.get("parsed", []) if s is not None]
    return empirical_distribution(parsed, SCORES) if parsed else None


def expected_score(score_logits: torch.Tensor, scores: tuple[int, ...] = SCORES) -> torch.Tensor:
    """Σ_k k · softmax(score_logits)_k. Shape: (batch, len(scores)) → (batch,)."""
    probs = torch.softmax(score_logits.float(), dim=-1)
    return probs @ torch.tensor(scores, dtype=probs.dtype, device=probs.device)


def check_template(cfg: JudgeConfig, where: str = "rewards.judge") -> None:
    if cfg.template not in TEMPLATES and not ("{prompt}" in cfg.template and "{response}" in cfg.template):
        raise ConfigError(f"{where}.template: {cfg.template[:40]!r} is neither a named template "
                          f"({', '.join(TEMPLATES)}) nor a text with {{prompt}} and {{response}}")


def resolve_template(cfg: JudgeConfig, tokenizer) -> JudgeTemplate:
    check_template(cfg)
    if cfg.template in TEMPLATES:
        tpl = TEMPLATES[cfg.template]
    else:
        tpl = JudgeTemplate(cfg.template, cfg.expected_template or cfg.template, chat=True)
    use_chat = tpl.chat and bool(getattr(tokenizer, "chat_template", None))
    return JudgeTemplate(tpl.generate, tpl.expected, chat=use_chat)


class JudgeReward:
    name = "judge"

    def __init__(self, model, tokenizer, cfg: JudgeConfig, seed: int = 0):
        self.model, self.tokenizer, self.cfg, self.seed = model, tokenizer, cfg, seed
        self.template = resolve_template(cfg, tokenizer)

    def _render(self, text: str, expected: bool) -> str:
        if not self.template.chat:
            return text
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        return rendered + _EXPECTED_PREFIX if expected else rendered

    def judge_prompts(self, rows: list[dict], responses: list[str], expected: bool) -> list[str]:
        tpl = self.template.expected if expected else self.template.generate
        # Plain-text templates take the prompt exactly as the policy saw it; chat ones take the user's words.
        key = "prompt" if self.template.chat else "prompt_text"
        texts = [tpl.replace("{prompt}", r.get(key, r["prompt"])).replace("{response}", y)
                 for r, y in zip(rows, responses, strict=True)]
        return [self._render(t, expected) for t in texts]

    def score(self, rows: list[dict], responses: list[str], token_ids=None) -> RewardOutput:
        """Judges the response texts (`token_ids` are not needed)."""
        if self.cfg.mode == "generate":
            return self._score_generate(rows, responses)
        return self._score_expected(rows, responses)

    def _score_generate(self, rows, responses) -> RewardOutput:
        prompts = self.judge_prompts(rows, responses, expected=False)
        judged = generate(self.model, self.tokenizer, prompts, num_samples=self.cfg.num_judgments,
                          temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                          max_new_tokens=self.cfg.max_new_tokens, batch_size=self.cfg.batch_size,
                          with_logprobs=False)
        scores, details = [], []
        for samples in judged:
            parsed = [parse_score(s.text) for s in samples]
            scores.append(mean_score(parsed))
            details.append({"judgments": [s.text for s in samples], "parsed": parsed,
                            "parse_failures": sum(p is None for p in parsed)})
        return RewardOutput(scores, details)

    def score_token_ids(self, context: str) -> list[int]:
        """The token id of each score digit as it follows `context` (must be one token each)."""
        try:
            return single_token_ids(self.tokenizer, context, [str(k) for k in SCORES], "rewards.judge")
        except ValueError as e:
            raise ConfigError(f"{e}; use mode: generate with this tokenizer") from None

    def _score_expected(self, rows, responses) -> RewardOutput:
        prompts = self.judge_prompts(rows, responses, expected=True)
        at_score = next_token_option_logits(self.model, self.tokenizer, prompts, self.score_token_ids(prompts[0]),
                                            self.cfg.batch_size)
        probs = torch.softmax(at_score, dim=-1)
        details = [{"score_probs": [round(p, 5) for p in row.tolist()]} for row in probs]
        return RewardOutput(expected_score(at_score).tolist(), details)


SPEC = RewardSpec(
    "judge", JudgeConfig, lambda cfg, ctx: JudgeReward(ctx.policy, ctx.tokenizer, cfg, ctx.seed),
    "the policy's own rubric judge score (SRLM): written judgments averaged, or Σ k·p(k)", check=check_template)
