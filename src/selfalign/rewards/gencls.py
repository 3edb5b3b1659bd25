"""A generative classifier as a reward (GenCLS++, 2025): the model reads a prompt and a response and writes a label
directly, with no reasoning step; the reward is the value of its label.

The classifier's prompt (`render`) is the judged text in `template` ({prompt} and {response}), after the options
GenCLS++ varies: `definitions` of the categories, `in_context` labelled examples (the first k of `examples`), an
explicit `uncertain` label, and `numeric_labels` (the categories shown as 0, 1, 2, ... in place of their names).
Decoding:

- `perplexity` (default): every label string is scored by its log-likelihood after the prompt and the reward is
  Σ_label value(label) · p(label), p the softmax of those log-likelihoods over the labels (its argmax is the
  perplexity-based decoding of GenCLS++);
- `generate`: the greedy continuation, read as the first label it starts with (None when it starts with none).

`values` are the labels' scores (default: the labels themselves where all are numbers, as the sandbox judge's
1–5, else evenly spaced 0..1 in the order given); `uncertain` is worth the mean of the others. `methods/gencls.py`
trains this classifier (SFT warm-up, then GRPO with `label_reward`) before round 1.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from selfalign import sandbox
from selfalign.config import ConfigError, opt
from selfalign.rewards.base import RewardOutput, RewardSpec
from selfalign.scoring import token_logprobs, tokenize_pair

UNCERTAIN = "uncertain"


@dataclass
class GenCLSConfig:
    """The generative classifier's prompt, labels and decoding (GenCLS++'s five strategy options)."""

    template: str = sandbox.JUDGE_EXPECTED_TEMPLATE  # the judged text, with {prompt} and {response}; the label follows
    labels: list[str] = field(default_factory=lambda: ["1", "2", "3", "4", "5"])  # the categories, ascending value
    values: list[float] | None = None  # each label's score (default: the labels as numbers, or 0..1 evenly)
    definitions: dict[str, str] | None = None  # label → its definition, shown before the text
    in_context: int = opt(0, lo=0)  # labelled examples shown before the text (the first k of `examples`)
    examples: str = "sandbox://arith-judge"  # where they come from: a labelled judge-data source (data/seed.py)
    uncertain: bool = False  # offer the label "uncertain" (worth the mean of the other values)
    numeric_labels: bool = False  # show the categories as 0, 1, 2, ... instead of their names
    decoding: str = "perplexity"  # "perplexity" (Σ value·p over the labels' likelihoods) or "generate" (greedy)
    batch_size: int = opt(64, lo=1)


def check(cfg: GenCLSConfig, where: str = "rewards.gencls") -> None:
    if "{prompt}" not in cfg.template or "{response}" not in cfg.template:
        raise ConfigError(f"{where}.template: needs {{prompt}} and {{response}}")
    if len(cfg.labels) < 2 or len(set(cfg.labels)) != len(cfg.labels) or not all(cfg.labels):
        raise ConfigError(f"{where}.labels: at least two distinct, non-empty labels")
    if cfg.uncertain and UNCERTAIN in cfg.labels:
        raise ConfigError(f"{where}.labels: {UNCERTAIN!r} is added by `uncertain: true`; do not list it")
    if cfg.values is not None and len(cfg.values) != len(cfg.labels):
        raise ConfigError(f"{where}.values: {len(cfg.values)} values for {len(cfg.labels)} labels")
    if cfg.definitions is not None:
        unknown = [k for k in cfg.definitions if k not in cfg.labels and k != UNCERTAIN]
        if unknown:
            raise ConfigError(f"{where}.definitions: {unknown[0]!r} is not one of the labels {cfg.labels}")
    if cfg.decoding not in ("perplexity", "generate"):
        raise ConfigError(f"{where}.decoding: {cfg.decoding!r}; expected perplexity or generate")


def _numbers(labels: list[str]) -> list[float] | None:
    try:
        return [float(x) for x in labels]
    except ValueError:
        return None


def label_values(cfg: GenCLSConfig) -> list[float]:
    """The value of each category (`cfg.labels` order), then of "uncertain" when offered."""
    if cfg.values is not None:
        values = [float(v) for v in cfg.values]
    else:
        values = _numbers(cfg.labels) or [i / (len(cfg.labels) - 1) for i in range(len(cfg.labels))]
    return values + ([statistics.fmean(values)] if cfg.uncertain else [])


def shown_labels(cfg: GenCLSConfig) -> list[str]:
    """The label strings the classifier writes: the categories (or 0, 1, ... with `numeric_labels`), then
    "uncertain" when offered."""
    names = [str(i) for i in range(len(cfg.labels))] if cfg.numeric_labels else list(cfg.labels)
    return names + ([UNCERTAIN] if cfg.uncertain else [])


def shown_label(cfg: GenCLSConfig, label: str) -> str:
    """How category `label` (one of `cfg.labels`, or "uncertain") is written."""
    if label == UNCERTAIN and cfg.uncertain:
        return UNCERTAIN
    if label not in cfg.labels:
        raise ValueError(f"{label!r} is not one of the labels {cfg.labels}")
    return str(cfg.labels.index(label)) if cfg.numeric_labels else label


def render(cfg: GenCLSConfig, prompt: str, response: str, examples: list[dict] = ()) -> str:
    """The classifier's prompt for one (prompt, response): definitions, then labelled examples (each its text
    followed by its label), then the text; the label is what comes next."""
    parts = []
    if cfg.definitions:
        shown = dict(zip(cfg.labels + [UNCERTAIN], shown_labels(cfg) + [UNCERTAIN], strict=False))
        parts += [f"{shown[k]}: {v}" for k, v in cfg.definitions.items() if k in shown]
    for ex in examples:
        parts.append(cfg.template.replace("{prompt}", ex["prompt"]).replace("{response}", ex["response"])
                     + shown_label(cfg, ex["label"]))
    parts.append(cfg.template.replace("{prompt}", prompt).replace("{response}", response))
    return "\n".join(parts)


def parse_label(text: str, labels: list[str]) -> int | None:
    """The index of the label `text` starts with (after leading spaces; the longest match), or None."""
    text = text.lstrip()
    found = [i for i, lab in enumerate(labels) if text.startswith(lab)]
    return max(found, key=lambda i: len(labels[i])) if found else None


def label_reward(completion: str, target: str, labels: list[str], uncertain_reward: float = 0.0) -> float:
    """GenCLS++'s rule reward: 1 when the completion's label is the target, `uncertain_reward` when it is
    "uncertain", else 0 (no label counts as wrong)."""
    i = parse_label(completion, labels)
    if i is None:
        return 0.0
    if labels[i] == target:
        return 1.0
    return uncertain_reward if labels[i] == UNCERTAIN else 0.0


@torch.no_grad()
def label_logprobs(model, tokenizer, prompts: list[str], labels: list[str], batch_size: int = 64) -> torch.Tensor:
    """log p(label | prompt) of every label string (its tokens, no end-of-sequence) after every prompt: the
    perplexity-based decoding's scores. Shape: (len(prompts), len(labels))."""
    pairs = [tokenize_pair(tokenizer, p, lab, add_eos=False) for p in prompts for lab in labels]
    logps = token_logprobs(model, pairs, batch_size, tokenizer.pad_token_id or 0)
    return torch.tensor([float(lp.sum()) for lp in logps]).view(len(prompts), len(labels))


def load_examples(cfg: GenCLSConfig, seed: int) -> list[dict]:
    """The in-context examples: the first `in_context` rows of `examples` (prompt, response, label)."""
    if not cfg.in_context:
        return []
    from selfalign.data.seed import load_judge_labels

    rows = load_judge_labels(cfg.examples, cfg.in_context, seed, where="rewards.gencls.examples")
    for r in rows:
        if r["label"] not in cfg.labels:
            raise ConfigError(f"rewards.gencls.examples: label {r['label']!r} is not one of the labels {cfg.labels}")
    return rows


class GenCLSReward:
    name = "gencls"

    def __init__(self, model, tokenizer, cfg: GenCLSConfig, seed: int = 0, examples: list[dict] | None = None):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.examples = load_examples(cfg, seed) if examples is None else examples
        self.labels, self.values = shown_labels(cfg), label_values(cfg)

    def prompts(self, rows: list[dict], responses: list[str]) -> list[str]:
        # the judged prompt exactly as the policy saw it (the sandbox's "Q:..|S:"; a chat model's rendered turn)
        return [render(self.cfg, r.get("prompt_text", r["prompt"]), y, self.examples)
                for r, y in zip(rows, responses, strict=True)]

    def score(self, rows: list[dict], responses: list[str], token_ids=None) -> RewardOutput:
        prompts = self.prompts(rows, responses)
        if self.cfg.decoding == "generate":
            from selfalign.generation import generate

            width = max(len(self.tokenizer(lab, add_special_tokens=False)["input_ids"]) for lab in self.labels)
            out = generate(self.model, self.tokenizer, prompts, temperature=0.0, max_new_tokens=width,
                           batch_size=self.cfg.batch_size, with_logprobs=False)
            picked = [parse_label(s[0].text, self.labels) for s in out]
            return RewardOutput([None if i is None else self.values[i] for i in picked],
                                [{"label": None if i is None else self.labels[i]} for i in picked])
        logps = label_logprobs(self.model, self.tokenizer, prompts, self.labels, self.cfg.batch_size)
        probs = torch.softmax(logps, dim=-1)
        scores = (probs @ torch.tensor(self.values, dtype=probs.dtype)).tolist()
        return RewardOutput(scores, [{"label": self.labels[int(p.argmax())],
                                      "label_probs": [round(x, 5) for x in p.tolist()]} for p in probs])


SPEC = RewardSpec(
    "gencls", GenCLSConfig, lambda cfg, ctx: GenCLSReward(ctx.policy, ctx.tokenizer, cfg, ctx.seed),
    "the policy as a generative classifier (GenCLS++): the value of the label it gives the response, Σ value·p by "
    "the labels' likelihoods or greedy", check=check)
