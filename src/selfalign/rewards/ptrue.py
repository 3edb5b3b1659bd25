"""P(True): the model grades a proposed answer by the probability it gives to "(A) True".

Kadavath et al. 2022, https://arxiv.org/abs/2207.05221: "we can ask models to first propose
answers, and then to evaluate the probability 'P(True)' that their answers are correct". One
forward pass over the filled template; at its end the next token is the option letter, and
score = p(A) / (p(A) + p(B)) ∈ (0, 1). Few-shot examples (answered questions with their option)
prepended to the prompt calibrate it.

With `brainstorm: true`, sample k of a prompt is judged with the prompt's other K − 1 samples shown before it
("Here are some brainstormed ideas: ..."), as the paper's "P(True) with brainstorming": "showing the model many of
its own samples improves its ability to evaluate whether a given sample is correct". The reward is then grouped
(every sample of a prompt in one `score` call: the samples with the same row `id`). Few-shot examples keep the
plain template.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from selfalign.config import ConfigError, opt
from selfalign.rewards.base import RewardOutput, RewardSpec, TokenIds
from selfalign.scoring import next_token_option_logits, single_token_ids

PTRUE_TEMPLATE = ("Question: {prompt}\nProposed Answer: {response}\nIs the proposed answer:\n (A) True\n (B) False\n"
                  "The proposed answer is: (")
#: the plain template with the other samples before the judged one (Kadavath et al.'s brainstorming prompt)
BRAINSTORM_TEMPLATE = ("Question: {prompt}\nHere are some brainstormed ideas:\n{ideas}\nProposed Answer: {response}\n"
                       "Is the proposed answer:\n (A) True\n (B) False\nThe proposed answer is: (")


@dataclass(frozen=True)
class FewShotExample:
    prompt: str
    response: str
    true: bool


@dataclass
class PTrueConfig:
    template: str = PTRUE_TEMPLATE  # plain text with {prompt} and {response}; the option letter comes next
    options: list[str] = field(default_factory=lambda: ["A", "B"])  # the "True" option first; one token each
    few_shot: list[FewShotExample] = field(default_factory=list)
    example_suffix: str = ")\n\n"  # follows a few-shot example's option, before the next example
    brainstorm: bool = False  # judge each sample with the prompt's other samples shown (a grouped reward)
    brainstorm_template: str = BRAINSTORM_TEMPLATE  # with brainstorm: {prompt}, {ideas} and {response}
    idea_separator: str = "\n"  # between two brainstormed ideas
    batch_size: int = opt(32, lo=1)


def check_config(cfg: PTrueConfig, where: str = "rewards.ptrue") -> None:
    if "{prompt}" not in cfg.template or "{response}" not in cfg.template:
        raise ConfigError(f"{where}.template: needs {{prompt}} and {{response}}")
    if cfg.brainstorm and not all(k in cfg.brainstorm_template for k in ("{prompt}", "{ideas}", "{response}")):
        raise ConfigError(f"{where}.brainstorm_template: needs {{prompt}}, {{ideas}} and {{response}}")
    if len(cfg.options) != 2 or len(set(cfg.options)) != 2:
        raise ConfigError(f"{where}.options: give two different option strings (True first, then False)")


def ptrue_score(option_logits: torch.Tensor) -> torch.Tensor:
    """p(True option) / (p(True option) + p(False option)) = σ(z_true − z_false).

    Shape: (batch, 2) logits of the (True, False) option tokens → (batch,) float32.
    """
    return torch.softmax(option_logits.float(), dim=-1)[..., 0]


def option_token_ids(tokenizer, context: str, options: Sequence[str]) -> list[int]:
    """The token id of each option string as it follows `context`; ValueError unless each is one token
    that leaves the context's own tokens as they are (no merge across the template's end)."""
    ids = single_token_ids(tokenizer, context, options, "P(True) option")
    base = tokenizer(context)["input_ids"]
    for option in options:
        if tokenizer(context + option)["input_ids"][:-1] != base:
            raise ValueError(f"P(True) option: {option!r} merges with the end of the template; end the template "
                             "with text the option does not join (e.g. '(')")
    if len(set(ids)) != len(ids):
        raise ValueError(f"P(True) options: {list(options)} map to the same token")
    return ids


class PTrueReward:
    name = "ptrue"

    def __init__(self, model, tokenizer, cfg: PTrueConfig | None = None):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg or PTrueConfig()
        if "{prompt}" not in self.cfg.template or "{response}" not in self.cfg.template:
            raise ValueError("P(True): the template needs {prompt} and {response}")
        if len(self.cfg.options) != 2:
            raise ValueError(f"P(True): two options (True, False) expected, got {list(self.cfg.options)}")

    def fill(self, prompt: str, response: str, ideas: list[str] | None = None) -> str:
        """The template filled in one pass (a response that contains "{ideas}" is left as it is); with `ideas`, the
        brainstorming template."""
        if ideas is None:
            template, values = self.cfg.template, {"prompt": prompt, "response": response}
        else:
            template = self.cfg.brainstorm_template
            values = {"prompt": prompt, "response": response, "ideas": self.cfg.idea_separator.join(ideas)}
        return re.sub(r"\{(prompt|response|ideas)\}", lambda m: values.get(m.group(1), m.group(0)), template)

    def ptrue_prompts(self, rows: list[dict], responses: list[str]) -> list[str]:
        """The few-shot examples (each answered with its option), then the filled template; with brainstorming,
        each sample's ideas are the other samples of the rows with its `id`, in their order."""
        true_option, false_option = self.cfg.options
        shots = "".join(self.fill(ex.prompt, ex.response) + (true_option if ex.true else false_option)
                        + self.cfg.example_suffix for ex in self.cfg.few_shot)
        if not self.cfg.brainstorm:
            return [shots + self.fill(r["prompt"], y) for r, y in zip(rows, responses, strict=True)]
        by_prompt: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_prompt.setdefault(str(r["id"]), []).append(i)
        return [shots + self.fill(r["prompt"], y, [responses[j] for j in by_prompt[str(r["id"])] if j != i])
                for i, (r, y) in enumerate(zip(rows, responses, strict=True))]

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        """The question is the row's `prompt` (the user's words), not its chat-rendered `prompt_text`."""
        if not rows:
            return RewardOutput([], [])
        prompts = self.ptrue_prompts(rows, responses)
        option_ids = option_token_ids(self.tokenizer, prompts[0], self.cfg.options)
        for p in prompts[1:]:  # a merge across the template's end could differ by row (BPE)
            if option_token_ids(self.tokenizer, p, self.cfg.options) != option_ids:
                raise ValueError("P(True): the option tokens differ between rows; end the template with fixed text")
        was_training = self.model.training
        self.model.eval()
        try:
            logits = next_token_option_logits(self.model, self.tokenizer, prompts, option_ids, self.cfg.batch_size)
        finally:
            self.model.train(was_training)
        scores = ptrue_score(logits).tolist()
        return RewardOutput(scores, [{"option_logits": [round(v, 4) for v in row]} for row in logits.tolist()])


SPEC = RewardSpec(
    "ptrue", PTrueConfig, lambda cfg, ctx: PTrueReward(ctx.policy, ctx.tokenizer, cfg),
    "the policy's P(True) that it is right (Kadavath et al.); brainstorm: with the prompt's other samples shown",
    check=check_config, grouped=lambda cfg: cfg.brainstorm)
