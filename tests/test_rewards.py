"""Tests of the reward math (judge parsing and expectation, implicit and likelihood rewards, the verifier,
pairwise judge accuracy) and of teacher-forced scoring and the judge on the tiny random model."""

from __future__ import annotations

import math

import pytest
import torch

from selfalign.rewards.implicit import implicit_reward
from selfalign.rewards.judge import (
    SANDBOX_SCORES,
    SRLM_SCORES,
    JudgeConfig,
    JudgeReward,
    expected_score,
    mean_score,
    parse_score,
    score_range,
)
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
    ("Score: 0", 0),  # the additive rubric gives 0 points to a response meeting no criterion
    ("Score: 7", None),  # out of range
    ("Score: 45", None),  # not a score of the range
    ("Score: 05", None),  # not written as a score
    ("Score: 4a", None),  # the number runs into a word
    ("Score: -3", None),
    ("Score: 3 ... Score: 9", 3),  # the out-of-range one is not a score, so the last valid one counts
    ("score: 4", 4),  # any case
    ("SCORE: 4", 4),
    ("Final score: 2", 2),
    ("Score: **4**", 4),  # markdown
    ("**Score:** 4", 4),
    ("**Score: 4**", 4),
    ("**Score**: 4", 4),
    ("*Score:* *3*", 3),
    ("Score:\n\n**5**", 5),
    ("Score: 4/5", 4),
    ("Score: 4 / 5", 4),
    ("Score: 4.5", 4),  # the integer part
    ("Score: 4.9", 4),
    ("Score: 0.5", 0),
    ("Score: 4.5/5", 4),
    ("**Score: 3**\nOn reflection, **Score:** 1", 1),
])
def test_parse_score(text, expected):
    assert parse_score(text) == expected  # default: the srlm range 0..5
    assert parse_score(text, SRLM_SCORES) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Score: 0", None),  # the sandbox judge scores 1..5
    ("Score: 3 ... Score: 0", 3),
    ("Score: 0.5", None),
    ("Score: **4**", 4),
    ("...|Score:2</s>", 2),
    ("Score: 6", None),
])
def test_parse_score_sandbox_range(text, expected):
    assert parse_score(text, SANDBOX_SCORES) == expected


def old_sandbox_parse(text: str) -> int | None:
    """The parser before issue 12 (case-sensitive `Score:\\s*([1-5])\\b`, the last match)."""
    import re

    found = re.findall(r"Score:\s*([1-5])\b", text)
    return int(found[-1]) if found else None


def test_parse_score_is_unchanged_on_sandbox_judgments():
    """With the sandbox range, every judgment the sandbox judge is trained to write (correct and noisy ones, every
    prefix of them as a cut-off generation would be) and random texts over its judgment alphabet parse as before."""
    import random

    from selfalign.sandbox import task as sandbox

    rng = random.Random(0)
    texts = []
    for prompt, response in [("Q:12+34|S:", "12+34=46;A:46"), ("Q:47+38+15|S:", "47+38=86;86+15=101;A:101"),
                             ("Q:47+38+15|S:", "junk"), ("Q:1+2|S:", "")]:
        for judged in (sandbox.judgment(prompt, response), sandbox.noisy_judgment(prompt, response, rng)):
            full = judged + "</s>"
            texts += [full[:k] for k in range(len(full) + 1)]
    pieces = ["Score:", "Score: ", "|", ";", "o", "n", "A:", "=", "+", "</s>", " ", "\n", ".", "/", "a", "_", "-",
              "0", "1", "3", "5", "6", "9", "45", "4.5", "Score:\n"]
    texts += ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(3000)]
    assert sum(old_sandbox_parse(t) is not None for t in texts) > 150  # many texts hold a score
    for t in texts:
        assert parse_score(t, SANDBOX_SCORES) == old_sandbox_parse(t), t


def test_score_range_of_each_template():
    assert score_range(JudgeConfig(template="srlm")) == (0, 1, 2, 3, 4, 5)
    assert score_range(JudgeConfig(template="sandbox")) == (1, 2, 3, 4, 5)
    assert score_range(JudgeConfig(template="Rate {prompt} -> {response}")) == (0, 1, 2, 3, 4, 5)


def test_mean_score():
    assert mean_score([4, 5, 3]) == 4.0  # (4 + 5 + 3) / 3
    assert mean_score([4, None, 5]) == 4.5  # failures are dropped: (4 + 5) / 2
    assert mean_score([None, 2]) == 2.0
    assert mean_score([None, None]) is None
    assert mean_score([]) is None


def test_expected_score_uniform_is_the_mean_of_the_range():
    # softmax of equal logits is 1/5 each: (1 + 2 + 3 + 4 + 5) / 5 = 3
    out = expected_score(torch.zeros(2, 5), SANDBOX_SCORES)
    assert out.shape == (2,)
    assert torch.allclose(out, torch.tensor([3.0, 3.0]))
    # srlm range 0..5: 1/6 each, (0 + 1 + 2 + 3 + 4 + 5) / 6 = 2.5
    assert torch.allclose(expected_score(torch.zeros(1, 6), SRLM_SCORES), torch.tensor([2.5]))
    # logits (log 3, 0, 0, 0, 0, log 2) on 0..5: weights (3, 1, 1, 1, 1, 2) / 9 → (0 + 1 + 2 + 3 + 4 + 10) / 9 = 20/9
    logits = torch.tensor([[math.log(3.0), 0.0, 0.0, 0.0, 0.0, math.log(2.0)]])
    assert expected_score(logits, SRLM_SCORES).item() == pytest.approx(20 / 9, abs=1e-6)
    with pytest.raises(ValueError, match="5 score logits for the 6 scores"):
        expected_score(torch.zeros(1, 5), SRLM_SCORES)


def test_expected_score_hand_computed():
    # logits [0, 0, 0, 0, log 3] → weights (1, 1, 1, 1, 3) / 7 → (1 + 2 + 3 + 4 + 5·3) / 7 = 25/7
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, math.log(3.0)]])
    assert expected_score(logits, SANDBOX_SCORES).item() == pytest.approx(25 / 7, abs=1e-6)
    # logits [log 1, log 2, log 3, log 4, log 0.0001 ≈ -inf] → weights (1, 2, 3, 4) / 10 on scores 1..4:
    # (1·1 + 2·2 + 3·3 + 4·4) / 10 = 30 / 10 = 3.0
    logits = torch.tensor([[0.0, math.log(2), math.log(3), math.log(4), -1e9]])
    assert expected_score(logits, SANDBOX_SCORES).item() == pytest.approx(3.0, abs=1e-6)


def test_expected_score_large_logits_are_stable():
    # softmax is shift-invariant: adding 1000 changes nothing, and nothing overflows
    logits = torch.tensor([[1000.0, 1000.0, 1000.0, 1000.0, 1000.0 + math.log(3.0)],
                           [5000.0, 0.0, 0.0, 0.0, 0.0],
                           [-1e4, -1e4, -1e4, -1e4, 1e4]])
    out = expected_score(logits, SANDBOX_SCORES)
    assert torch.isfinite(out).all()
    # float32 stores 1000 + log 3 only to ~6e-5, hence the tolerance on the first row
    assert out.tolist() == pytest.approx([25 / 7, 1.0, 5.0], abs=1e-4)


def test_expected_score_half_precision_input_and_custom_scores():
    out = expected_score(torch.zeros(1, 5, dtype=torch.bfloat16), SANDBOX_SCORES)
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


def test_score_tokens_follow_the_template_range(model_and_tokenizer):
    """The installed (sandbox character) tokenizer: every score digit, 0 included, is one token after the judge
    prompt, and `expected` mode reads one logit per score of the template's range."""
    _, tok = model_and_tokenizer
    ctx = "Q:12+34|S:12+34=46;A:46|Score:"
    for template, digits in [("sandbox", "12345"), ("srlm", "012345"), ("{prompt}{response}|Score:", "012345")]:
        ids = JudgeReward(None, tok, JudgeConfig(mode="expected", template=template)).score_token_ids(ctx)
        assert ids == [tok.convert_tokens_to_ids(d) for d in digits]
        assert ids == [tok(ctx + d)["input_ids"][-1] for d in digits]
        assert all(len(tok(ctx + d)["input_ids"]) == len(tok(ctx)["input_ids"]) + 1 for d in digits)
    # after "Score: " (the chat prefix) too
    ids = JudgeReward(None, tok, JudgeConfig(mode="expected", template="srlm")).score_token_ids(ctx + " ")
    assert tok.convert_ids_to_tokens(ids) == list("012345")


def test_judge_expected_mode_with_a_custom_template_reads_0_to_5(model_and_tokenizer):
    model, tok = model_and_tokenizer
    rows, responses = sandbox_rows(), ["12+34=46;A:46", "47+38=85;85+15=1"]
    cfg = JudgeConfig(mode="expected", template="{prompt}{response}|J:", expected_template="{prompt}{response}|Score:",
                      batch_size=2)
    judge = JudgeReward(model, tok, cfg)
    out = judge.score(rows, responses)
    prompts = judge.judge_prompts(rows, responses, expected=True)
    for s, d, prompt in zip(out.scores, out.details, prompts, strict=True):
        probs = d["score_probs"]
        assert len(probs) == 6
        assert s == pytest.approx(sum(k * p for k, p in zip(range(6), probs, strict=True)), abs=1e-3)
        # by hand: the softmax over the logits of "0".."5" at the last position, Σ k·p(k)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1]
        p = torch.softmax(logits[[tok.convert_tokens_to_ids(k) for k in "012345"]], dim=-1)
        assert probs == pytest.approx(p.tolist(), abs=1e-4)
        assert s == pytest.approx(float((p * torch.arange(6.0)).sum()), abs=1e-5)


@pytest.mark.parametrize(("template", "parsed", "score"), [
    ("srlm", [0, 4, None], 2.0),  # (0 + 4) / 2; "Score: 9" fails
    ("sandbox", [None, 4, None], 4.0),  # 0 is not a sandbox score
])
def test_judge_generate_mode_parses_the_template_range(model_and_tokenizer, monkeypatch, template, parsed, score):
    from selfalign.generation import Sample
    from selfalign.rewards import judge as judge_module

    _, tok = model_and_tokenizer
    texts = ["No criterion met. Score: 0", "**Score:** 4", "Score: 9"]

    def fake_generate(model, tokenizer, prompts, **kwargs):
        assert kwargs["num_samples"] == 3
        return [[Sample(text=t, token_ids=[], logprobs=[], finish_reason="eos") for t in texts] for _ in prompts]

    monkeypatch.setattr(judge_module, "generate", fake_generate)
    judge = JudgeReward(None, tok, JudgeConfig(mode="generate", template=template, num_judgments=3))
    out = judge.score(sandbox_rows()[:1], ["12+34=46;A:46"])
    assert out.scores == [score]
    assert out.details == [{"judgments": texts, "parsed": parsed, "parse_failures": parsed.count(None)}]


def test_majority_agreement_scores_by_prompt():
    from selfalign.rewards.majority import MajorityReward, agreement_scores

    # answers 5,5,7,None: 5 is shared by 2 of 4 samples → 0.5; 7 by 1 of 4 → 0.25; no answer → 0
    assert agreement_scores(["5", "5", "7", None]) == [0.5, 0.5, 0.25, 0.0]
    rows = [{"id": "a", "prompt": "Q:1+2|S:"}] * 3 + [{"id": "b", "prompt": "Q:2+2|S:"}] * 2
    out = MajorityReward().score(rows, ["1+2=3;A:3", "1+2=4;A:4", "1+2=3;A:3", "2+2=4;A:4", "2+2=5;A:5"])
    assert out.scores == pytest.approx([2 / 3, 1 / 3, 2 / 3, 0.5, 0.5])


def test_expected_mode_without_a_chat_template_asks_for_the_score(tiny_model):
    """A tokenizer without a chat template: the SRLM rubric (or a custom template) is followed by "\\nScore: ", so
    the next token is the score; a custom expected_template is taken as it is."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert not getattr(tok, "chat_template", None)
    rows, responses = [{"prompt": "Q:1+2+3|S:", "prompt_text": "Q:1+2+3|S:"}], ["1+2=3;3+3=6;A:6"]
    srlm = JudgeReward(None, tok, JudgeConfig(mode="expected", template="srlm"))
    (prompt,) = srlm.judge_prompts(rows, responses, expected=True)
    assert prompt.endswith("points based on the outlined criteria.\nScore: ")
    (generate,) = srlm.judge_prompts(rows, responses, expected=False)
    assert generate.endswith("outlined criteria.")
    custom = JudgeReward(None, tok, JudgeConfig(mode="expected", template="{prompt}{response} rate:",
                                                expected_template="{prompt}{response} rating="))
    assert custom.judge_prompts(rows, responses, expected=True) == ["Q:1+2+3|S:1+2=3;3+3=6;A:6 rating="]
    plain = JudgeReward(None, tok, JudgeConfig(mode="expected", template="{prompt}{response} rate:"))
    assert plain.judge_prompts(rows, responses, expected=True) == ["Q:1+2+3|S:1+2=3;3+3=6;A:6 rate:\nScore: "]
