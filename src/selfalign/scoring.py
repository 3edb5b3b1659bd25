"""Teacher-forced scoring: per-token log-probs of responses given prompts, in right-padded batches.

Responses are tokenized the way TRL's DPOTrainer tokenizes a completion (prompt and prompt+response
tokenized, the completion starts where they diverge, EOS appended), so a likelihood or implicit
reward scores exactly the tokens DPO later trains on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str,
                  add_eos: bool = True) -> tuple[list[int], list[int]]:
    """(prompt_ids, response_ids) as TRL's DPOTrainer builds them for a non-conversational example."""
    eos = tokenizer.eos_token or ""
    if add_eos and not response.endswith(eos):
        response = response + eos
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + response)["input_ids"]
    n = common_prefix_length(prompt_ids, full_ids)
    return full_ids[:n], full_ids[n:]


def right_pad(seqs: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded to the longest sequence (position ids stay exact).
    Shape: (batch, width)"""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids, mask


@torch.no_grad()
def token_logprobs(model, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 32,
                   pad_token_id: int = 0) -> list[torch.Tensor]:
    """log π(y_t | x, y_<t) for every response token of every (prompt_ids, response_ids) pair.

    Returns one float32 CPU tensor per pair, of length len(response_ids).
    """
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, attention = right_pad([pairs[i][0] + pairs[i][1] for i in idx], pad_token_id)
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
        logps = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = input_ids[:, 1:].to(device)
        per_token = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
        for r, i in enumerate(idx):
            p, y = len(pairs[i][0]), len(pairs[i][1])
            out[i] = per_token[r, p - 1 : p - 1 + y].clone()
    return out  # type: ignore[return-value]


def sequence_logprobs(model, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str],
                      responses: Sequence[str], batch_size: int = 32) -> list[torch.Tensor]:
    """Per-token log-probs of each response (EOS included) given its prompt, tokenized as DPO does."""
    pairs = [tokenize_pair(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    return token_logprobs(model, pairs, batch_size, tokenizer.pad_token_id or 0)


def single_token_ids(tokenizer: PreTrainedTokenizerBase, context: str, options: Sequence[str], where: str) -> list[int]:
    """The token id of each option string as it follows `context`; each must be exactly one token."""
    base = tokenizer(context)["input_ids"]
    ids = []
    for option in options:
        full = tokenizer(context + option)["input_ids"]
        n = common_prefix_length(base, full)
        if len(full) - n != 1:
            raise ValueError(f"{where}: {option!r} is not a single token after the prompt")
        ids.append(full[n])
    return ids


def left_pad(seqs: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), left-padded to the longest sequence. Shape: (batch, width)"""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        if s:
            ids[r, width - len(s):] = torch.tensor(list(s))
            mask[r, width - len(s):] = 1
    return ids, mask


def option_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  option_ids: Sequence[int]) -> torch.Tensor:
    """Logits of the option tokens as the next token after each left-padded sequence (differentiable).

    Position ids follow the attention mask, so padding changes nothing, and only the last position goes through
    the LM head (`logits_to_keep=1`): a large vocabulary costs one row per sequence.

    Shapes: input_ids, attention_mask (batch, width) → (batch, len(option_ids)), float32
    """
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   logits_to_keep=1).logits[:, -1]
    return logits[:, list(option_ids)].float()


@torch.no_grad()
def next_token_option_logits(model, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                             option_ids: Sequence[int], batch_size: int = 32) -> torch.Tensor:
    """`option_logits` for each text, in batches, on the CPU. Shape: (len(texts), len(option_ids))"""
    device = next(model.parameters()).device
    encoded = [tokenizer(t)["input_ids"] for t in texts]
    out = []
    for start in range(0, len(encoded), batch_size):
        ids, mask = left_pad(encoded[start : start + batch_size], tokenizer.pad_token_id or 0)
        out.append(option_logits(model, ids.to(device), mask.to(device), option_ids).cpu())
    return torch.cat(out) if out else torch.zeros((0, len(option_ids)))
