"""A pairwise LLM judge: which of two responses is better, read from the logits of the two answer tokens.

Used by SCIR (`methods/scir.py`) and by the win-rate evaluator (`evaluators/win_rate.py`). Named templates:
`default` (SCIR's; options A / B) and `alpaca_eval` (AlpacaEval 2's `alpaca_eval_clf_gpt4_turbo` prompt, its system
turn dropped and the rest as the user turn; options m / M, the identifiers of the first- and second-shown output).
"""

from __future__ import annotations

import torch

from selfalign.rewards.preference import pairwise_judge_probability
from selfalign.scoring import next_token_option_logits, single_token_ids

DEFAULT_PAIRWISE_TEMPLATE = """Which response answers the user's question better? Compare them for helpfulness, \
correctness, clarity and conciseness, not length or position.

User: {prompt}
<response A>{response_a}</response A>
<response B>{response_b}</response B>

Answer with the single letter of the better response."""

#: AlpacaEval 2's judge prompt (tatsu-lab/alpaca_eval, evaluators_configs/alpaca_eval_clf_gpt4_turbo/
#: alpaca_eval_clf.txt, Apache-2.0) without its system turn; {instruction} / {output_1} / {output_2} renamed
ALPACA_EVAL_TEMPLATE = '''I require a leaderboard for various large language models. I'll provide you with prompts \
given to these models and their corresponding outputs. Your task is to assess these responses, and select the model \
that produces the best output from a human perspective.

## Instruction

{
    "instruction": """{prompt}""",
}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a \
unique model identifier.

{
    {
        "model_identifier": "m",
        "output": """{response_a}"""
    },
    {
        "model_identifier": "M",
        "output": """{response_b}"""
    }
}

## Task

Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the \
best output. Answer by providing the model identifier of the best model. We will use your output as the name of the \
best model, so make sure your output only contains one of the following model identifiers and nothing else (no \
quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier'''

#: name → (template, options: first-shown better, second-shown better)
TEMPLATES = {"default": (DEFAULT_PAIRWISE_TEMPLATE, ("A", "B")), "alpaca_eval": (ALPACA_EVAL_TEMPLATE, ("m", "M"))}


class PairwiseJudge:
    """Renders `template` ({prompt}, {response_a}, {response_b}) for a pair, as a chat user turn when the tokenizer
    has a chat template, and reads the next-token logits of `options` (first-shown better, second-shown better)."""

    def __init__(self, tokenizer, template: str, options: list[str], where: str = "scir.options"):
        self.tokenizer, self.template, self.options, self.where = tokenizer, template, list(options), where
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
        return single_token_ids(self.tokenizer, context, self.options, self.where)

    def option_logits(self, model, rows: list[dict], y1: list[str], y2: list[str],
                      batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """The option logits with y1 shown first and with y2 shown first. Shapes: (len(rows), 2) each"""
        forward, backward = self.prompts(rows, y1, y2), self.prompts(rows, y2, y1)
        ids = self.option_ids(forward[0])
        logits = next_token_option_logits(model, self.tokenizer, forward + backward, ids, batch_size)
        return logits[: len(rows)], logits[len(rows):]

    def probability(self, model, rows: list[dict], y1: list[str], y2: list[str], batch_size: int = 32) -> torch.Tensor:
        """P(y1 ≻ y2) per pair, averaged over both presentation orders. Shape: (len(rows))"""
        if not rows:
            return torch.zeros(0)
        return pairwise_judge_probability(*self.option_logits(model, rows, y1, y2, batch_size))
