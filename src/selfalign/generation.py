"""Sampling backends. `transformers`: batched `generate` with left padding, K samples per prompt,
stop strings and EOS, and the per-token log-prob of every sampled token under the model.

The log-probs are those of the model's own distribution (temperature 1, no top-p), so they can feed likelihood
and certainty rewards. They are recorded while sampling, one step at a time (`SampledLogprobs`: a logits
processor, which transformers runs on the raw logits before its temperature and top-p warpers), so neither a
second pass nor a (batch, length, vocab) tensor is needed. They agree with a teacher-forced pass to float
precision (the cached and the full forward sum in different orders).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from selfalign.scoring import token_logprobs


@dataclass
class Sample:
    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "eos", "stop" or "length"


class SampledLogprobs(LogitsProcessor):
    """Records log p(y_t) of every token `generate` picks, from the raw logits of its step: at step t it keeps the
    log-softmax of the step's logits (one (rows, vocab) float32 tensor), and reads the chosen token's entry at step
    t + 1, when the token is the last of `input_ids`; `finish` reads the last step's from the returned sequences.
    It changes no score and draws no random number, so the samples are those of plain `generate`."""

    def __init__(self):
        self.previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self.steps.append(self.previous.gather(-1, input_ids[:, -1:])[:, 0])
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, new_tokens: torch.LongTensor) -> torch.Tensor:
        """(rows, new tokens) log-probs of the sampled tokens `new_tokens` (the generated part of the sequences)."""
        if self.previous is not None and len(self.steps) < new_tokens.shape[1]:
            self.steps.append(self.previous.gather(-1, new_tokens[:, len(self.steps)][:, None].to(
                self.previous.device))[:, 0])
        self.previous = None
        if not self.steps:
            return torch.zeros((new_tokens.shape[0], 0))
        return torch.stack(self.steps, dim=1).cpu()


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@torch.no_grad()
def generate(model, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *, num_samples: int = 1,
             temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 256, batch_size: int = 64,
             stop: Sequence[str] = (), with_logprobs: bool = True) -> list[list[Sample]]:
    """`num_samples` responses for each prompt; temperature 0 means greedy (then num_samples must be 1).

    `batch_size` counts sequences (prompts × samples) per `generate` call. Prompts are sorted by
    length so each batch pads little.
    """
    if temperature == 0 and num_samples != 1:
        raise ValueError("greedy decoding (temperature 0) gives one sample per prompt")
    device = next(model.parameters()).device
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    per_call = max(1, batch_size // num_samples)
    results: list[list[Sample]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    for start in range(0, len(order), per_call):
        idx = order[start : start + per_call]
        width = max(len(encoded[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):  # left padding
            input_ids[r, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            attention[r, width - len(encoded[i]) :] = 1
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id,
                      num_return_sequences=num_samples)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
        recorder = SampledLogprobs() if with_logprobs else None
        if recorder is not None:
            kwargs["logits_processor"] = LogitsProcessorList([recorder])
        out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs)
        new_tokens = out[:, width:].cpu()
        sampled = recorder.finish(new_tokens) if recorder is not None else None
        batch: list[tuple[int, list[int], str, str]] = []
        for row in range(new_tokens.shape[0]):
            ids = new_tokens[row].tolist()
            finish = "length"
            if eos_id in ids:
                ids = ids[: ids.index(eos_id)]
                finish = "eos"
            text = tokenizer.decode(ids, skip_special_tokens=True)
            if stop:
                text, stopped = _cut_at_stop(text, stop)
                if stopped:
                    finish = "stop"
                    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            batch.append((idx[row // num_samples], ids, text, finish))
        retokenized = []  # samples cut at a stop string whose text re-tokenizes differently: scored apart
        logps: list[list[float]] = []
        for row, (_, ids, _, finish) in enumerate(batch):
            n = len(ids) + (finish == "eos")
            generated = new_tokens[row, : len(ids)].tolist()
            if with_logprobs and generated == ids:
                logps.append(sampled[row, :n].tolist())
            else:
                logps.append([])
                if with_logprobs:
                    retokenized.append(row)
        if retokenized:
            pairs = [(encoded[batch[row][0]], batch[row][1]) for row in retokenized]
            for row, lp in zip(retokenized, token_logprobs(model, pairs, batch_size=len(pairs), pad_token_id=pad_id),
                               strict=True):
                logps[row] = lp.tolist()
        for (i, ids, text, finish), lp in zip(batch, logps, strict=True):
            results[i].append(Sample(text=text, token_ids=ids, logprobs=lp, finish_reason=finish))
    model.train(was_training)
    return results
