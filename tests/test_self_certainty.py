"""Self-certainty: the KL(U ‖ p) math against hand-computed values, masking, chunking, and the reward
on the tiny random model against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch

from selfalign.rewards.self_certainty import SelfCertaintyReward, self_certainty
from selfalign.scoring import tokenize_pair


def kl_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(U ‖ softmax(z)) = Σ_v (1/V) log((1/V) / p_v), from the definition. Shape: (..., V) → (...)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    v = logits.shape[-1]
    return (-math.log(v) - logp).mean(dim=-1)


def test_uniform_logits_give_zero():
    # every p_v = 1/V: KL(U ‖ U) = 0, whatever the constant logit
    logits = torch.cat([torch.zeros(1, 4, 7), torch.full((1, 4, 7), 123.0)])
    out = self_certainty(logits, torch.ones(2, 4))
    assert out.shape == (2,) and out.dtype == torch.float32
    assert out.tolist() == pytest.approx([0.0, 0.0], abs=1e-5)


def test_hand_computed_two_token_vocab():
    # z = [log 3, 0]: logsumexp = log 4, mean = ½ log 3, so KL = log 4 − ½ log 3 − log 2 = log 2 − ½ log 3.
    # z = [0, 0]: 0. Sequence 0 averages both positions (its third is padding); sequence 1 has only the first.
    a = math.log(2) - 0.5 * math.log(3)
    logits = torch.tensor([[[math.log(3), 0.0], [0.0, 0.0], [9.0, -9.0]],
                           [[math.log(3), 0.0], [5.0, 5.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert self_certainty(logits, mask).tolist() == pytest.approx([a / 2, a], abs=1e-6)


def test_one_large_logit():
    # V − 1 logits at 0 and one at L: logsumexp = log(e^L + V − 1), mean = L / V.
    # With L = log 3, V = 4: log 6 − (log 3) / 4 − log 4.
    v = 4
    logits = torch.zeros(1, 1, v)
    logits[0, 0, 2] = math.log(3)
    expected = math.log(6) - math.log(3) / 4 - math.log(4)
    assert self_certainty(logits, torch.ones(1, 1)).item() == pytest.approx(expected, abs=1e-6)
    # A near-one-hot distribution is far from uniform: KL(U ‖ p) ≈ L (1 − 1/V) − log V grows without bound
    # (it is KL(p ‖ U) = log V − H(p) that tends to log V), and stays finite in float32.
    big = torch.zeros(1, 3, v)
    big[0, :, 1] = torch.tensor([10.0, 100.0, 1000.0])
    per_position = [self_certainty(big[:, i : i + 1], torch.ones(1, 1)).item() for i in range(3)]
    for L, got in zip((10.0, 100.0, 1000.0), per_position, strict=True):
        assert got == pytest.approx(L * (1 - 1 / v) - math.log(v), rel=1e-4)
    assert per_position[0] < per_position[1] < per_position[2]
    assert all(p > math.log(v) for p in per_position)


def test_matches_the_definition_on_random_logits():
    torch.manual_seed(0)
    logits = 3 * torch.randn(3, 5, 11)
    mask = torch.ones(3, 5)
    assert torch.allclose(self_certainty(logits, mask).double(), kl_uniform(logits).mean(dim=-1), atol=1e-5)
    assert (self_certainty(logits, mask) >= 0).all()  # a KL divergence


def test_padding_positions_change_nothing():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 9)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 1, 1, 0, 1, 0]])
    out = self_certainty(logits, mask)
    garbage = logits.clone()
    garbage[mask == 0] = torch.tensor([float("inf"), float("nan"), -float("inf"), 1e30, 0, 0, 0, 0, 0])
    assert torch.equal(self_certainty(garbage, mask), out)
    # the same as scoring only the kept positions
    assert out[0].item() == pytest.approx(self_certainty(logits[:1, :4], torch.ones(1, 4)).item(), abs=1e-6)
    kept = logits[1:, [1, 2, 4]]
    assert out[1].item() == pytest.approx(self_certainty(kept, torch.ones(1, 3)).item(), abs=1e-6)
    # a bool mask reads the same as an integer one
    assert torch.equal(self_certainty(logits, mask.bool()), out)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 8, 100])
def test_chunked_equals_one_pass(chunk_size):
    torch.manual_seed(2)
    logits = 4 * torch.randn(3, 8, 13)
    mask = (torch.rand(3, 8) > 0.3).long()
    one_pass = self_certainty(logits, mask, chunk_size=8)
    assert torch.allclose(self_certainty(logits, mask, chunk_size=chunk_size), one_pass, atol=1e-6)


def test_all_zero_mask_gives_zero():
    logits = torch.randn(2, 3, 5)
    out = self_certainty(logits, torch.tensor([[0, 0, 0], [1, 1, 1]]))
    assert out[0].item() == 0.0
    assert out[1].item() > 0.0
    assert self_certainty(torch.zeros(1, 0, 5), torch.zeros(1, 0)).tolist() == [0.0]


def test_stable_for_large_and_half_precision_logits():
    torch.manual_seed(3)
    logits = torch.randn(2, 4, 10)
    mask = torch.ones(2, 4)
    base = self_certainty(logits, mask)
    # shift invariance: adding 1e4 to every logit changes nothing (up to float32 rounding of the shift)
    assert torch.allclose(self_certainty(logits + 1e4, mask), base, atol=2e-3)
    half = self_certainty(logits.bfloat16(), mask)
    assert half.dtype == torch.float32
    assert torch.allclose(half, self_certainty(logits.bfloat16().float(), mask), atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="mask"):
        self_certainty(torch.zeros(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="chunk_size"):
        self_certainty(torch.zeros(2, 3, 4), torch.ones(2, 3), chunk_size=0)


# ---------------------------------------------------------------------------------------------
# the reward on the tiny model


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model)


def direct_certainty(model, prompt_ids, response_ids) -> float:
    seq = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(input_ids=seq).logits[0]
    p = len(prompt_ids)
    # the distribution over response token j sits at position p − 1 + j
    return kl_uniform(logits[p - 1 : p - 1 + len(response_ids)]).mean().item()


def test_reward_equals_direct_computation(model_and_tokenizer):
    model, tok = model_and_tokenizer
    rows = [{"id": "0", "prompt": "Q:12+34|S:", "prompt_text": "Q:12+34|S:"},
            {"id": "1", "prompt": "Q:47+38+15|S:", "prompt_text": "Q:47+38+15|S:"}]
    responses = ["12+34=46;A:46", "47+38=85;85+15=100;A:100"]
    reward = SelfCertaintyReward(model, tok, batch_size=2, chunk_size=3)
    assert reward.name == "self_certainty"
    out = reward.score(rows, responses)
    expected = [direct_certainty(model, *tokenize_pair(tok, r["prompt_text"], y)) for r, y in zip(rows, responses,
                                                                                                   strict=True)]
    assert out.scores == pytest.approx(expected, abs=1e-5)
    assert [d["tokens"] for d in out.details] == [len(responses[0]) + 1, len(responses[1]) + 1]  # chars + EOS
    # one per batch gives the same numbers as both in one right-padded batch
    alone = SelfCertaintyReward(model, tok, batch_size=1).score(rows, responses)
    assert alone.scores == pytest.approx(out.scores, abs=1e-5)


def test_reward_restores_training_mode(model_and_tokenizer):
    model, tok = model_and_tokenizer
    model.train()
    try:
        rows = [{"prompt": "Q:1+2|S:", "prompt_text": "Q:1+2|S:"}]
        SelfCertaintyReward(model, tok).score(rows, ["1+2=3;A:3"])
        assert model.training
    finally:
        model.eval()


class BigramLogits(torch.nn.Module):
    """A 'model' whose logits at each position depend only on the token there: row `table[token]`."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.table[input_ids])


def test_window_is_the_positions_that_predict_the_response():
    from selfalign.rewards.self_certainty import response_certainty

    # V = 2. Token 7 → logits (log 9, 0): p = (0.9, 0.1), KL(U ‖ p) = −½ log(0.09) − log 2 = log(5/3).
    # Token 8 → (log 4, 0): p = (0.8, 0.2), KL = −½ log(0.16) − log 2 = log(5/4). Every other token → (0, 0): 0.
    table = torch.zeros(10, 2)
    table[7] = torch.tensor([math.log(9.0), 0.0])
    table[8] = torch.tensor([math.log(4.0), 0.0])
    model = BigramLogits(table)
    # prompt [5, 7], response [6, 8]: positions 0..3 hold tokens 5, 7, 6, 8
    # selfalign: positions 1, 2 (predicting the response tokens 6, 8): (log(5/3) + 0) / 2
    # released code (positions 2, 3: from the first response token to the last): (0 + log(5/4)) / 2
    (got,) = response_certainty(model, [([5, 7], [6, 8])], pad_token_id=0)
    assert got == pytest.approx(math.log(5 / 3) / 2, abs=1e-6)
    assert got != pytest.approx(math.log(5 / 4) / 2, abs=1e-3)
    # padded in a batch with a longer sequence: the same window
    out = response_certainty(model, [([5, 7], [6, 8]), ([5, 5, 5, 7], [6, 6, 6])], batch_size=2, pad_token_id=0)
    assert out == pytest.approx([math.log(5 / 3) / 2, math.log(5 / 3) / 3], abs=1e-6)
