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

import torch

from selfalign.config import ConfigError, JudgeConfig
from selfalign.data import sandbox
from selfalign.generation import generate
from selfalign.rewards.base import RewardOutput
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


def expected_score(score_logits: torch.Tensor, scores: tuple[int, ...] = SCORES) -> torch.Tensor:
    """Σ_k k · softmax(score_logits)_k. Shape: (batch, len(scores)) → (batch,)."""
    probs = torch.softmax(score_logits.float(), dim=-1)
    return probs @ torch.tensor(scores, dtype=probs.dtype, device=probs.device)


def resolve_template(cfg: JudgeConfig, tokenizer) -> JudgeTemplate:
    if cfg.template in TEMPLATES:
        tpl = TEMPLATES[cfg.template]
    elif "{prompt}" in cfg.template and "{response}" in cfg.template:
        tpl = JudgeTemplate(cfg.template, cfg.expected_template or cfg.template, chat=True)
    else:
        raise ConfigError(f"rewards.judge.template: {cfg.template[:40]!r} is neither a named template "
                          f"({', '.join(TEMPLATES)}) nor a text with {{prompt}} and {{response}}")
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

    def score(self, rows: list[dict], responses: list[str]) -> RewardOutput:
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
