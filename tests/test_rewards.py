"""Tests of the reward math (judge parsing and expectation, implicit and likelihood rewards, the verifier,
pairwise judge accuracy) and of teacher-forced scoring and the judge on the tiny random model."""

from __future__ import annotations

import math

import pytest
import torch

from selfalign.rewards.implicit import implicit_reward
from selfalign.rewards.judge import JudgeConfig, JudgeReward, expected_score, mean_score, parse_score
from selfalign.rewards.likelihood import sequence_score
from selfalign.rewards.verifier import VerifierReward, extract_answer, is_correct
from selfalign.scoring import token_logprobs
from selfalign.stages.reward import pairwise_accuracy as judge_pairwise_accuracy

# ---------------------------------------------------------------------------------------------
# judge: parsing and averaging


@pytest.mark.parametrize(("text", "expected"), [
    ("Score: 4", 4),
    ("Score:5", 5),
    ("Score:\n 2", 2),
    ("The response is relevant and mostly right.\nScore: 3\nThanks!", 3),
    ("Score: 2 at first, but on reflection Score: 5", 5),  # the last one counts
    ("47+38=85o;85+15=100o;A:100o|Score:5</s>", 5),  # sandbox written judgment
    ("Score: 1.", 1),
    ("no score here", None),
    ("", None),
    ("Score: 7", None),  # out of range
    ("Score: 0", None),
    ("Score: 45", None),  # not a single digit
    ("score: 4", None),  # case-sensitive
    ("Score: 3 ... Score: 9", 3),  # the out-of-range one is not a score, so the last valid one counts
])
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_mean_score():
    assert mean_score([4, 5, 3]) == 4.0  # (4 + 5 + 3) / 3
    assert mean_score([4, None, 5]) == 4.5  # failures are dropped: (4 + 5) / 2
    assert mean_score([None, 2]) == 2.0
    assert mean_score([None, None]) is None
    assert mean_score([]) is None


def test_expected_score_uniform_is_the_mean_of_1_to_5():
    # softmax of equal logits is 1/5 each: (1 + 2 + 3 + 4 + 5) / 5 = 3
    out = expected_score(torch.zeros(2, 5))
    assert out.shape == (2,)
    assert torch.allclose(out, torch.tensor([3.0, 3.0]))


def test_expected_score_hand_computed():
    # logits [0, 0, 0, 0, log 3] → weights (1, 1, 1, 1, 3) / 7 → (1 + 2 + 3 + 4 + 5·3) / 7 = 25/7
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, math.log(3.0)]])
    assert expected_score(logits).item() == pytest.approx(25 / 7, abs=1e-6)
    # logits [log 1, log 2, log 3, log 4, log 0.0001 ≈ -inf] → weights (1, 2, 3, 4) / 10 on scores 1..4:
    # (1·1 + 2·2 + 3·3 + 4·4) / 10 = 30 / 10 = 3.0
    logits = torch.tensor([[0.0, math.log(2), math.log(3), math.log(4), -1e9]])
    assert expected_score(logits).item() == pytest.approx(3.0, abs=1e-6)


def test_expected_score_large_logits_are_stable():
    # softmax is shift-invariant: adding 1000 changes nothing, and nothing overflows
    logits = torch.tensor([[1000.0, 1000.0, 1000.0, 1000.0, 1000.0 + math.log(3.0)],
                           [5000.0, 0.0, 0.0, 0.0, 0.0],
                           [-1e4, -1e4, -1e4, -1e4, 1e4]])
    out = expected_score(logits)
    assert torch.isfinite(out).all()
    # float32 stores 1000 + log 3 only to ~6e-5, hence the tolerance on the first row
    assert out.tolist() == pytest.approx([25 / 7, 1.0, 5.0], abs=1e-4)


def test_expected_score_half_precision_input_and_custom_scores():
    out = expected_score(torch.zeros(1, 5, dtype=torch.bfloat16))
    assert out.dtype == torch.float32 and out.item() == pytest.approx(3.0)
    # scores (0, 10) with logits (0, log 4): weights (1, 4) / 5 → 10·4/5 = 8
    assert expected_score(torch.tensor([[0.0, math.log(4.0)]]), scores=(0, 10)).item() == pytest.approx(8.0)


# ---------------------------------------------------------------------------------------------
# implicit and likelihood rewards


def test_implicit_reward_sums_the_last_dim_and_scales_by_beta():
    policy = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.1, -0.1]])
    ref = torch.tensor([[-1.5, -1.5, -1.5], [-0.2, -0.3, -0.4]])
    # row 0: Σpolicy = -3.5, Σref = -4.5 → 1.0; row 1: -0.3 − (-0.9) = 0.6
    assert implicit_reward(policy, ref).tolist() == pytest.approx([1.0, 0.6])
    assert implicit_reward(policy, ref, beta=0.1).tolist() == pytest.approx([0.1, 0.06])
    assert implicit_reward(policy, ref, beta=2.0).tolist() == pytest.approx([2.0, 1.2])


def test_implicit_reward_of_a_single_sequence_and_of_identical_models():
    lp = torch.tensor([-0.7, -1.3])
    assert implicit_reward(lp, lp, beta=5.0).item() == 0.0
    # (-0.7 − 1.3) − (-3.0) = 1.0; × 0.5 = 0.5
    assert implicit_reward(lp, torch.tensor([-1.0, -2.0]), beta=0.5).item() == pytest.approx(0.5)
    assert implicit_reward(lp, torch.tensor([-1.0, -2.0]), beta=0.5).shape == ()


def test_sequence_score():
    lp = torch.tensor([-1.0, -2.0, -3.0])
    assert sequence_score(lp, normalize=False) == pytest.approx(-6.0)  # -1 − 2 − 3
    assert sequence_score(lp, normalize=True) == pytest.approx(-2.0)  # -6 / 3
    assert sequence_score(torch.tensor([-0.5]), normalize=True) == pytest.approx(-0.5)
    empty = torch.tensor([])
    assert sequence_score(empty, normalize=True) == 0.0
    assert sequence_score(empty, normalize=False) == 0.0


# ---------------------------------------------------------------------------------------------
# verifier


@pytest.mark.parametrize(("response", "expected"), [
    ("47+38=85;85+15=100;A:100", "100"),
    ("A: 3 then A: 42 ", "42"),  # after the last A:
    ("blah\n#### 72", "72"),
    ("A:", None),
    ("####   ", None),
    ("The total is 1,234 apples.", "1234"),
    ("from -3 to 2.5", "2.5"),
    ("x = -17", "-17"),
    ("no digits", None),
    ("", None),
])
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


def test_extract_answer_gsm8k_marker_with_thousands_separator():
    assert is_correct({"prompt": "How many?", "answer": "1234"}, "so #### 1,234")


def test_is_correct_sandbox_rows():
    row = {"id": "0", "prompt": "Q:47+38+15|S:", "answer": "100"}
    assert is_correct(row, "47+38=85;85+15=100;A:100")
    assert is_correct(row, "47+38=85;85+15=100;A:100</s>")
    assert is_correct(row, "47+38=86;86+15=100;A:100")  # only the final answer counts
    assert not is_correct(row, "47+38=85;85+15=101;A:101")
    assert not is_correct(row, "47+38=85;85+15=100")  # no A:
    # A sandbox-tagged row uses the sandbox verifier even without an answer.
    assert is_correct({"task": "sandbox", "prompt": "Q:1+2|S:"}, "1+2=3;A:3")


def test_is_correct_generic_rows():
    row = {"id": "g1", "prompt": "What is 6 times 7?", "answer": "42"}
    assert is_correct(row, "6 times 7 is 42")
    assert is_correct(row, "Reasoning...\n#### 42")
    assert is_correct({**row, "answer": " 42 "}, "A: 42")
    assert not is_correct(row, "It is 41, not 40")
    assert not is_correct(row, "no idea")
    with pytest.raises(ValueError, match="'g2'"):
        is_correct({"id": "g2", "prompt": "What?"}, "42")


def test_verifier_reward():
    rows = [{"prompt": "Q:1+2|S:"}, {"prompt": "Q:1+2|S:"}, {"prompt": "Sum?", "answer": "5"}]
    out = VerifierReward().score(rows, ["1+2=3;A:3", "1+2=4;A:4", "It is 5"])
    assert out.scores == [1.0, 0.0, 1.0]


# ---------------------------------------------------------------------------------------------
# pairwise judge accuracy


def test_judge_pairwise_accuracy_hand_example():
    groups = [
        # right {5}, wrong {3, 5}: 5 > 3 → 1, 5 = 5 → 0.5
        [(5.0, True), (3.0, False), (5.0, False)],
        # right {2}, wrong {4}: 0
        [(2.0, True), (4.0, False)],
        # the unscored right sample is ignored: no pair
        [(None, True), (1.0, False)],
        # all right: no pair
        [(4.0, True), (1.0, True)],
        # right {4, 3}, wrong {None ignored, 1}: 1 + 1
        [(4.0, True), (3.0, True), (None, False), (1.0, False)],
    ]
    acc, n = judge_pairwise_accuracy(groups)
    # (1 + 0.5 + 0 + 1 + 1) / 5 = 3.5 / 5 = 0.7
    assert n == 5
    assert acc == pytest.approx(0.7)


def test_judge_pairwise_accuracy_no_pairs():
    assert judge_pairwise_accuracy([]) == (None, 0)
    assert judge_pairwise_accuracy([[(1.0, True)], [(2.0, False)]]) == (None, 0)
    assert judge_pairwise_accuracy([[(3.0, True), (3.0, False)]]) == (0.5, 1)  # a tie counts half


# ---------------------------------------------------------------------------------------------
# on the tiny model


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, torch_dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model)


def direct_logprobs(model, prompt_ids, response_ids):
    seq = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=seq).logits.float()[0], dim=-1)
    # the token at position t is predicted at position t − 1
    p = len(prompt_ids)
    return torch.stack([logps[p - 1 + j, tok] for j, tok in enumerate(response_ids)])


def test_token_logprobs_equals_direct_log_softmax_with_padding(model_and_tokenizer):
    model, tok = model_and_tokenizer
    short = (tok("Q:12+34|S:")["input_ids"], tok("12+34=46;A:46")["input_ids"] + [tok.eos_token_id])
    long = (tok("Q:11+22+33+44|S:")["input_ids"], tok("11+22=33;33+33=66;66+44=110;A:110")["input_ids"])
    assert len(short[0]) + len(short[1]) < len(long[0]) + len(long[1])
    expected_short = direct_logprobs(model, *short)
    expected_long = direct_logprobs(model, *long)

    out = token_logprobs(model, [short, long], batch_size=2, pad_token_id=tok.pad_token_id)
    assert [t.shape[0] for t in out] == [len(short[1]), len(long[1])]  # in input order, one per response token
    assert out[0].dtype == torch.float32
    assert torch.allclose(out[0], expected_short, atol=1e-5)
    assert torch.allclose(out[1], expected_long, atol=1e-5)
    assert (out[0] < 0).all()
    # one at a time gives the same numbers
    alone = token_logprobs(model, [short], batch_size=1, pad_token_id=tok.pad_token_id)
    assert torch.allclose(alone[0], out[0], atol=1e-5)


def sandbox_rows():
    prompts = ["Q:12+34|S:", "Q:47+38+15|S:"]
    return [{"id": str(i), "prompt": p, "prompt_text": p} for i, p in enumerate(prompts)]


def test_judge_expected_mode_on_the_tiny_model(model_and_tokenizer):
    model, tok = model_and_tokenizer
    rows = sandbox_rows()
    responses = ["12+34=46;A:46", "47+38=85;85+15=1"]
    judge = JudgeReward(model, tok, JudgeConfig(mode="expected", template="sandbox", batch_size=2))
    assert judge.judge_prompts(rows, responses, expected=True) == ["Q:12+34|S:12+34=46;A:46|Score:",
                                                                   "Q:47+38+15|S:47+38=85;85+15=1|Score:"]
    out = judge.score(rows, responses)
    assert len(out.scores) == len(out.details) == 2
    for s, d in zip(out.scores, out.details, strict=True):
        assert 1.0 <= s <= 5.0
        probs = d["score_probs"]
        assert len(probs) == 5 and all(p >= 0 for p in probs)
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)  # rounded to 5 decimals each
        assert s == pytest.approx(sum(k * p for k, p in zip(range(1, 6), probs, strict=True)), abs=1e-3)
    # one row per batch gives the same scores as both rows in one right-padded batch
    one = JudgeReward(model, tok, JudgeConfig(mode="expected", template="sandbox", batch_size=1))
    assert one.score(rows, responses).scores == pytest.approx(out.scores, abs=1e-5)


def test_judge_generate_mode_counts_parse_failures(model_and_tokenizer):
    model, tok = model_and_tokenizer
    torch.manual_seed(0)
    judge = JudgeReward(model, tok, JudgeConfig(mode="generate", template="sandbox", num_judgments=2,
                                                temperature=1.0, top_p=1.0, max_new_tokens=8, batch_size=4))
    out = judge.score(sandbox_rows(), ["12+34=46;A:46", "junk"])
    # a random character-level model does not write "Score: k" in 8 tokens
    assert out.scores == [None, None]
    for d in out.details:
        assert len(d["judgments"]) == 2 and all(isinstance(j, str) for j in d["judgments"])
        assert d["parsed"] == [None, None]
        assert d["parse_failures"] == 2


def test_majority_agreement_scores_by_prompt():
    from selfalign.rewards.majority import MajorityReward, agreement_scores

    # answers 5,5,7,None: 5 is shared by 2 of 4 samples → 0.5; 7 by 1 of 4 → 0.25; no answer → 0
    assert agreement_scores(["5", "5", "7", None]) == [0.5, 0.5, 0.25, 0.0]
    rows = [{"id": "a", "prompt": "Q:1+2|S:"}] * 3 + [{"id": "b", "prompt": "Q:2+2|S:"}] * 2
    out = MajorityReward().score(rows, ["1+2=3;A:3", "1+2=4;A:4", "1+2=3;A:3", "2+2=4;A:4", "2+2=5;A:5"])
    assert out.scores == pytest.approx([2 / 3, 1 / 3, 2 / 3, 0.5, 0.5])
