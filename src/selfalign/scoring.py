"""Teacher-forced scoring: per-token log-probs of responses given prompts, in right-padded batches.

Responses are tokenized the way TRL's DPOTrainer tokenizes a completion (prompt and prompt+response
tokenized, the completion starts where they diverge, EOS appended), so a likelihood or implicit
reward scores exactly the tokens DPO later trains on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

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


def _decoder_and_head(model):
    """(decoder, LM head) when the model's logits are its LM head applied to the decoder's last hidden state, so
    that the head can be applied to a few positions at a time; None otherwise (a model that scales or soft-caps its
    logits after the head, or has no separable head)."""
    cfg = getattr(model, "config", None)
    if any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head


@torch.no_grad()
def response_logit_chunks(model, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 32,
                          pad_token_id: int = 0, chunk_size: int = 64):
    """Teacher-forced logits of the response tokens, a block at a time.

    Yields (pair index, j0, logits, targets) for each (prompt_ids, response_ids) pair and each block of at most
    `chunk_size` of its response tokens: `logits` (n, vocab) float32 are the model's logits at the positions that
    predict response tokens j0 … j0 + n − 1 (position p − 1 + j predicts token j after a prompt of p tokens) and
    `targets` (n,) those tokens. Sequences run in right-padded batches of `batch_size`; the LM head is applied only
    to the positions of one block, so no (batch, length, vocab) tensor exists: the peak is one (chunk_size, vocab)
    float32 block, besides the (batch, length, hidden) states. A model whose logits are not its head of the last
    hidden state (`_decoder_and_head`) falls back to one full forward per batch.
    """
    device = next(model.parameters()).device
    split = _decoder_and_head(model)
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        input_ids, attention = right_pad([pairs[i][0] + pairs[i][1] for i in idx], pad_token_id)
        input_ids, attention = input_ids.to(device), attention.to(device)
        if split is not None:
            states = split[0](input_ids=input_ids, attention_mask=attention, use_cache=False).last_hidden_state
        else:
            states = model(input_ids=input_ids, attention_mask=attention).logits
        for r, i in enumerate(idx):
            p, y = len(pairs[i][0]), len(pairs[i][1])
            if p < 1 and y:
                raise ValueError(f"pair {i}: an empty prompt leaves the first response token unpredicted")
            for j0 in range(0, y, chunk_size):
                n = min(chunk_size, y - j0)
                rows = states[r, p - 1 + j0 : p - 1 + j0 + n]
                logits = (split[1](rows) if split is not None else rows).float()
                yield i, j0, logits, input_ids[r, p + j0 : p + j0 + n]


def token_logprobs(model, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 32,
                   pad_token_id: int = 0, chunk_size: int = 64) -> list[torch.Tensor]:
    """log π(y_t | x, y_<t) for every response token of every (prompt_ids, response_ids) pair, without a
    (batch, length, vocab) tensor (`response_logit_chunks`).

    Returns one float32 CPU tensor per pair, of length len(response_ids).
    """
    out = [torch.zeros(len(y)) for _, y in pairs]
    for i, j0, logits, targets in response_logit_chunks(model, pairs, batch_size, pad_token_id, chunk_size):
        logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        out[i][j0 : j0 + len(targets)] = logps.cpu()
    return out


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


def preference_token_ids(tokenizer, row: dict[str, Any]) -> dict[str, list[int]]:
    """`prompt_ids`, `chosen_ids` and `rejected_ids` of a pair row, exactly as TRL 1.16's `DPOTrainer` tokenizes it.

    As TRL does: a prompt shared by chosen and rejected is extracted when the row has none; a non-conversational
    completion gets the tokenizer's EOS appended unless it ends with it; prompt, prompt + chosen and prompt +
    rejected are tokenized separately (chat template for conversational rows) and the completions start after the
    shorter of the two prompt prefixes they share, so `prompt_ids + chosen_ids` is the tokenized prompt + chosen.

    A per-token column needs len(chosen_ids) (len(rejected_ids)) values. The model outputs that predict the chosen
    tokens are those at positions len(prompt_ids) − 1 … len(prompt_ids) + len(chosen_ids) − 2 of a forward pass on
    `prompt_ids + chosen_ids`.
    """
    from trl.data_utils import _tokenize, common_prefix_length, extract_prompt, is_conversational

    if "prompt" not in row:
        row = {**row, **extract_prompt(row)}
    tools = row.get("tools")
    template_kwargs = {"tools": json.loads(tools) if isinstance(tools, str) else tools,
                       **(row.get("chat_template_kwargs") or {})}
    prompt, chosen, rejected = row["prompt"], row["chosen"], row["rejected"]
    if is_conversational(row):
        prompt_ids = _tokenize(tokenizer, prompt, add_generation_prompt=True, **template_kwargs)["input_ids"]
        full = [_tokenize(tokenizer, prompt + c, **template_kwargs)["input_ids"] for c in (chosen, rejected)]
    else:
        eos = tokenizer.eos_token
        full = [_tokenize(tokenizer, prompt + (c if c.endswith(eos) else c + eos))["input_ids"]
                for c in (chosen, rejected)]
        prompt_ids = _tokenize(tokenizer, prompt)["input_ids"]
    prompt_len = min(common_prefix_length(prompt_ids, ids) for ids in full)
    return {"prompt_ids": list(prompt_ids[:prompt_len]), "chosen_ids": list(full[0][prompt_len:]),
            "rejected_ids": list(full[1][prompt_len:])}
