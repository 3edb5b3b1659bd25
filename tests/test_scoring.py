"""Teacher-forced scoring (scoring.py): per-token log-probs and the logits of response positions, block by block,
never as a (batch, length, vocab) tensor."""

from __future__ import annotations

import pytest
import torch

from selfalign.rewards.self_certainty import response_certainty, self_certainty
from selfalign.scoring import response_logit_chunks, right_pad, token_logprobs


@pytest.fixture(scope="module")
def model(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model).eval()


PAIRS = [([5, 6, 7], [8, 9, 10, 11, 12]), ([5], [30, 31]), ([40, 41, 42, 43, 44, 45], [46]), ([7, 7], [])]


def full_forward_logprobs(model, pairs):
    """The reference: one forward pass per pair, log-softmax over the whole (length, vocab) logits."""
    out = []
    for x, y in pairs:
        logits = model(input_ids=torch.tensor([x + y])).logits[0].float()
        logps = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(x + y)[1:, None])[:, 0]
        out.append(logps[len(x) - 1 : len(x) - 1 + len(y)])
    return out


@pytest.mark.parametrize(("batch_size", "chunk_size"), [(1, 64), (4, 64), (4, 2), (2, 1)])
def test_token_logprobs_equal_a_full_forward_pass(model, batch_size, chunk_size):
    got = token_logprobs(model, PAIRS, batch_size=batch_size, chunk_size=chunk_size)
    for a, b, (_, y) in zip(got, full_forward_logprobs(model, PAIRS), PAIRS, strict=True):
        assert a.shape == (len(y),) and a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_the_lm_head_sees_one_block_of_positions_at_a_time(model):
    """The memory property: the head (vocab-sized output) never runs on more than chunk_size positions."""
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    try:
        token_logprobs(model, PAIRS, batch_size=4, chunk_size=2)
        response_certainty(model, PAIRS, batch_size=4, chunk_size=2)
    finally:
        handle.remove()
    vocab = model.config.vocab_size
    assert seen and all(len(s) == 2 and s[0] <= 2 and s[1] == vocab for s in seen)
    assert sum(s[0] for s in seen) == 2 * sum(len(y) for _, y in PAIRS)  # each response position once per call


def test_self_certainty_by_blocks_equals_the_pure_function(model):
    ids, mask = right_pad([x + y for x, y in PAIRS], 0)
    logits = model(input_ids=ids, attention_mask=mask).logits
    scored = torch.zeros_like(mask)
    for r, (x, y) in enumerate(PAIRS):
        scored[r, len(x) - 1 : len(x) - 1 + len(y)] = 1
    expected = self_certainty(logits, scored).tolist()
    assert response_certainty(model, PAIRS, batch_size=3, chunk_size=2) == pytest.approx(expected, abs=1e-5)


def test_a_model_that_transforms_its_logits_after_the_head_falls_back_to_the_full_forward(model):
    """A soft-capped model's logits are not its head's output: the blocks come from the full forward instead, so
    the values stay right."""
    model.config.final_logit_softcapping = 1.0  # Llama ignores it: the full forward's logits stay the same
    try:
        heads = []
        handle = model.get_output_embeddings().register_forward_hook(lambda m, i, o: heads.append(o.shape))
        got = token_logprobs(model, PAIRS, batch_size=4)
        handle.remove()
    finally:
        del model.config.final_logit_softcapping
    assert heads and all(s[1] == max(len(x) + len(y) for x, y in PAIRS) for s in heads)  # whole sequences
    for a, b in zip(got, full_forward_logprobs(model, PAIRS), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_an_empty_prompt_is_refused(model):
    with pytest.raises(ValueError, match="empty prompt"):
        list(response_logit_chunks(model, [([], [5, 6])]))
