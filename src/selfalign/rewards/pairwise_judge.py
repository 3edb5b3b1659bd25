"""A pairwise LLM judge: which of two responses is better, read from the logits of the two answer tokens."""

from __future__ import annotations

import torch

from selfalign.rewards.preference import pairwise_judge_probability
from selfalign.scoring import next_token_option_logits, single_token_ids


class PairwiseJudge:
    """Renders `template` ({prompt}, {response_a}, {response_b}) for a pair, as a chat user turn when the tokenizer
    has a chat template, and reads the next-token logits of `options` (first-shown better, second-shown better)."""

    def __init__(self, tokenizer, template: str, options: list[str]):
        self.tokenizer, self.template, self.options = tokenizer, template, list(options)
        self.chat = bool(getattr(tokenizer, "chat_template", None))

    def prompts(self, rows: list[dict], first: list[str], second: list[str]) -> list[str]:
        key = "prompt" if self.chat else "prompt_text"
        texts = [self.template.replace("{prompt}", r.get(key, r["prompt"])).replace("{response_a}", a)
                 .replace("{response_b}", b) for r, a, b in zip(rows, first, second, strict=True)]
        if not self.chat:
            return texts
        return [self.tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                   add_generation_prompt=True) for t in texts]

    def option_ids(self, context: str) -> list[int]:
        return single_token_ids(self.tokenizer, context, self.options, "scir.options")

    def probability(self, model, rows: list[dict], y1: list[str], y2: list[str], batch_size: int = 32) -> torch.Tensor:
        """P(y1 ≻ y2) per pair, averaged over both presentation orders. Shape: (len(rows))"""
        if not rows:
            return torch.zeros(0)
        forward, backward = self.prompts(rows, y1, y2), self.prompts(rows, y2, y1)
        ids = self.option_ids(forward[0])
        logits = next_token_option_logits(model, self.tokenizer, forward + backward, ids, batch_size)
        return pairwise_judge_probability(*logits.chunk(2))
