"""LLM-as-a-judge with the additive 5-point rubric of Self-Rewarding Language Models.

Yuan et al. 2024, https://arxiv.org/abs/2401.10020: "the model acts as its own reward model ...
via LLM-as-a-Judge prompting". Two modes:

- `generate`: sample the judgment n times, parse `Score: <k>` from each (`parse_score`), average the parsed
  scores (unparseable judgments are dropped and counted).
- `expected`: one forward pass at the score position, score = Σ_k k · p(k) with p renormalised over the score
  tokens of the template's range.

Each template has its score range (`JudgeTemplate.scores`), used for parsing, for the score tokens of `expected`
mode and for `score_distribution`: `srlm` 0–5 (the rubric *adds* up to five points, so a response that meets no
criterion gets 0), `sandbox` 1–5 (the sandbox judge's scores, `selfalign.sandbox.task.SCORE_RE`), a custom template
0–5 (the SRLM scale, which also covers a 1–5 rubric when parsing; in `expected` mode the "0" token is one of the
options).
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

#: "score" (any case), optional markdown `*` after it, ":", any whitespace and `*`, then an integer with an
#: optional decimal part, ending at a word boundary (so "45" and "4a" are not 4, but "4.5", "4/5", "4**" give 4).
#: The full rule is `parse_score`'s.
SCORE_RE = re.compile(r"score\**:[\s*]*(\d+)(?:\.\d+)?\b", re.IGNORECASE)
SRLM_SCORES = (0, 1, 2, 3, 4, 5)  # additive rubric: 0 to 5 points
SANDBOX_SCORES = (1, 2, 3, 4, 5)  # the sandbox judge's scores (selfalign.sandbox.task.SCORE_RE)
CUSTOM_SCORES = SRLM_SCORES  # a template given as text


@dataclass
class JudgeConfig:
    """LLM-as-a-judge (SRLM): `generate` samples a written judgment, `expected` reads Σ k·p(k)."""

    mode: Literal["generate", "expected"] = "generate"
    template: str = "srlm"  # "srlm", "sandbox", or a template text with {prompt} and {response}
    # `expected` with a custom template: the text after which the score digit comes (with a chat template, then the
    # reply "Score: "); default: the template, followed by the reply "Score: " (chat) or by "\nScore: " (plain text)
    expected_template: str | None = None
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
    scores: tuple[int, ...] = CUSTOM_SCORES  # the template's score range, ascending


TEMPLATES = {
    "srlm": JudgeTemplate(SRLM_RUBRIC, SRLM_RUBRIC, chat=True, scores=SRLM_SCORES),
    "sandbox": JudgeTemplate(sandbox.JUDGE_TEMPLATE, sandbox.JUDGE_EXPECTED_TEMPLATE, chat=False,
                             scores=SANDBOX_SCORES),
}
_EXPECTED_PREFIX = "Score: "  # appended after a chat judge prompt (as the start of the reply) in `expected` mode


def parse_score(judgment: str, scores: tuple[int, ...] = SRLM_SCORES) -> int | None:
    """The last score of a judgment that is in `scores` (default: the SRLM range 0–5), or None.

    The rule: every match of `SCORE_RE` is a candidate: the word "score" in any case, any number of markdown `*`,
    ":", any whitespace (newlines too) and `*`, then a number whose integer part is the candidate: "4.5" and "4.9"
    give 4, "4/5" and "4/10" give 4. A candidate counts only when its integer part is written exactly as a score of
    the range ("05" is not 5, "45" not 4) and is not followed directly by a letter, digit or "_" ("4a" is not 4).
    The last counting candidate is the score; candidates out of the range are skipped, so "Score: 3 ... Score: 9"
    gives 3. Accepted forms include `Score: 4`, `score:4`, `SCORE: 4`, `Score: **4**`, `**Score:** 4`,
    `**Score: 4**`, `**Score**: 4`, `Score: 4/5`, `Score: 4.5`.

    On the sandbox judge's `...|Score:k` judgments (range 1–5) this is exactly the former case-sensitive
    `Score:\\s*([1-5])\\b`; it differs only on texts with another case of "score" or with `*`.
    """
    written = {str(k): k for k in scores}
    found = [written[m] for m in SCORE_RE.findall(judgment) if m in written]
    return found[-1] if found else None


def mean_score(parsed: list[int | None]) -> float | None:
    """Average of the parsed scores; None when no judgment parsed."""
    valid = [s for s in parsed if s is not None]
    return sum(valid) / len(valid) if valid else None


def score_distribution(detail: dict, scores: tuple[int, ...]) -> torch.Tensor | None:
    """The judge's distribution over `scores` (its template's range, `score_range`) of one sample, from its details:
    the softmax over the score tokens (`expected` mode), or the shares of its parsed judgments (`generate` mode);
    None when none parsed. A ValueError when the details hold another number of scores or a score out of the range
    (they came from a judge with another range)."""
    if "score_probs" in detail:
        if len(detail["score_probs"]) != len(scores):
            raise ValueError(f"score_distribution: {len(detail['score_probs'])} score probabilities for the "
                             f"{len(scores)} scores {scores}")
        return torch.tensor(detail["score_probs"], dtype=torch.float64)
    parsed = [s for s in detail.get("parsed", []) if s is not None]
    if any(s not in scores for s in parsed):
        raise ValueError(f"score_distribution: parsed scores {parsed} are not all in {scores}")
    return empirical_distribution(parsed, scores) if parsed else None


def expected_score(score_logits: torch.Tensor, scores: tuple[int, ...]) -> torch.Tensor:
    """Σ_k k · softmax(score_logits)_k over the score range `scores`. Shape: (batch, len(scores)) → (batch,)."""
    if score_logits.shape[-1] != len(scores):
        raise ValueError(f"expected_score: {score_logits.shape[-1]} score logits for the {len(scores)} scores {scores}")
    probs = torch.softmax(score_logits.float(), dim=-1)
    return probs @ torch.tensor(scores, dtype=probs.dtype, device=probs.device)


def check_template(cfg: JudgeConfig, where: str = "rewards.judge") -> None:
    if cfg.template not in TEMPLATES and not ("{prompt}" in cfg.template and "{response}" in cfg.template):
        raise ConfigError(f"{where}.template: {cfg.template[:40]!r} is neither a named template "
                          f"({', '.join(TEMPLATES)}) nor a text with {{prompt}} and {{response}}")


def named_template(cfg: JudgeConfig) -> JudgeTemplate:
    """The template of `cfg.template`: a named one, or the text (chat, range `CUSTOM_SCORES`)."""
    check_template(cfg)
    if cfg.template in TEMPLATES:
        return TEMPLATES[cfg.template]
    return JudgeTemplate(cfg.template, cfg.expected_template or cfg.template, chat=True, scores=CUSTOM_SCORES)


def score_range(cfg: JudgeConfig) -> tuple[int, ...]:
    """The scores the judge of `cfg` gives (its template's range), ascending."""
    return named_template(cfg).scores


def resolve_template(cfg: JudgeConfig, tokenizer) -> JudgeTemplate:
    tpl = named_template(cfg)
    use_chat = tpl.chat and bool(getattr(tokenizer, "chat_template", None))
    return JudgeTemplate(tpl.generate, tpl.expected, chat=use_chat, scores=tpl.scores)


class JudgeReward:
    name = "judge"

    def __init__(self, model, tokenizer, cfg: JudgeConfig, seed: int = 0):
        self.model, self.tokenizer, self.cfg, self.seed = model, tokenizer, cfg, seed
        self.template = resolve_template(cfg, tokenizer)
        self._own_expected = cfg.template not in TEMPLATES and cfg.expected_template is not None

    def _render(self, text: str, expected: bool) -> str:
        if not self.template.chat:
            # a template with no text of its own for `expected` (srlm, a custom one) asks for the score after it
            ask = expected and self.template.expected == self.template.generate and not self._own_expected
            return text + "\n" + _EXPECTED_PREFIX if ask else text
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
            parsed = [parse_score(s.text, self.template.scores) for s in samples]
            scores.append(mean_score(parsed))
            details.append({"judgments": [s.text for s in samples], "parsed": parsed,
                            "parse_failures": sum(p is None for p in parsed)})
        return RewardOutput(scores, details)

    def score_token_ids(self, context: str) -> list[int]:
        """The token id of each score of the template's range as it follows `context` (must be one token each)."""
        try:
            return single_token_ids(self.tokenizer, context, [str(k) for k in self.template.scores], "rewards.judge")
        except ValueError as e:
            raise ConfigError(f"{e}; use mode: generate with this tokenizer") from None

    def _score_expected(self, rows, responses) -> RewardOutput:
        prompts = self.judge_prompts(rows, responses, expected=True)
        at_score = next_token_option_logits(self.model, self.tokenizer, prompts, self.score_token_ids(prompts[0]),
                                            self.cfg.batch_size)
        probs = torch.softmax(at_score, dim=-1)
        details = [{"score_probs": [round(p, 5) for p in row.tolist()]} for row in probs]
        return RewardOutput(expected_score(at_score, self.template.scores).tolist(), details)


SPEC = RewardSpec(
    "judge", JudgeConfig, lambda cfg, ctx: JudgeReward(ctx.policy, ctx.tokenizer, cfg, ctx.seed),
    "the policy's own rubric judge score (SRLM): written judgments averaged, or Σ k·p(k)", check=check_template)
