"""Sampling (generation.py): the log-probs recorded while sampling are the model's own, as a teacher-forced pass
gives them, for EOS-, length- and stop-string-ended samples; recording them changes no sample."""

from __future__ import annotations

import pytest
import torch

from selfalign.generation import generate
from selfalign.scoring import token_logprobs


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


PROMPTS = ["Q:12+34+56|S:", "Q:1+2|S:", "Q:99+98+97+96|S:"]


@pytest.mark.parametrize(("temperature", "top_p", "samples", "stop"), [
    (1.0, 1.0, 3, ()), (0.7, 0.9, 2, ()), (0.0, 1.0, 1, ()), (1.0, 1.0, 4, (";", "A")),
])
def test_recorded_logprobs_are_the_teacher_forced_ones(model_and_tokenizer, temperature, top_p, samples, stop):
    model, tok = model_and_tokenizer
    torch.manual_seed(0)
    out = generate(model, tok, PROMPTS, num_samples=samples, temperature=temperature, top_p=top_p,
                   max_new_tokens=12, batch_size=4, stop=stop)
    finishes = set()
    for prompt, group in zip(PROMPTS, out, strict=True):
        assert len(group) == samples
        for s in group:
            finishes.add(s.finish_reason)
            response = s.token_ids + ([tok.eos_token_id] if s.finish_reason == "eos" else [])
            (expected,) = token_logprobs(model, [(tok(prompt)["input_ids"], response)])
            assert len(s.logprobs) == len(response)
            # the model's distribution at temperature 1 without top-p, whatever sampled the token
            torch.testing.assert_close(torch.tensor(s.logprobs), expected, atol=1e-4, rtol=1e-4)
    if stop:
        assert "stop" in finishes


def test_recording_the_logprobs_changes_no_sample(model_and_tokenizer):
    model, tok = model_and_tokenizer
    texts = []
    for with_logprobs in (True, False):
        torch.manual_seed(3)
        out = generate(model, tok, PROMPTS, num_samples=2, temperature=1.0, max_new_tokens=16, batch_size=6,
                       with_logprobs=with_logprobs)
        texts.append([[(s.text, s.token_ids, s.finish_reason) for s in g] for g in out])
        assert all(bool(s.logprobs) == with_logprobs or not s.token_ids for g in out for s in g)
    assert texts[0] == texts[1]
