"""P(True): the option-probability math, the prompt layout, the single-token check, and the reward on
the tiny random model against the next-token logits read directly."""

from __future__ import annotations

import math

import pytest
import torch

from selfalign.rewards.ptrue import (
    PTRUE_TEMPLATE,
    FewShotExample,
    PTrueConfig,
    PTrueReward,
    option_token_ids,
    ptrue_score,
)


def test_ptrue_score_hand_computed():
    # [log 3, 0]: p(A) ∝ 3, p(B) ∝ 1 → 3/4; equal logits → 1/2; only the difference matters
    logits = torch.tensor([[math.log(3), 0.0], [0.0, 0.0], [100.0, 100.0 + math.log(3)]])
    assert ptrue_score(logits).tolist() == pytest.approx([0.75, 0.5, 0.25], abs=1e-5)
    extreme = ptrue_score(torch.tensor([[1e4, -1e4]], dtype=torch.bfloat16))
    assert extreme.dtype == torch.float32 and extreme.item() == 1.0


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model)


ROWS = [{"id": "0", "prompt": "Q:12+34|S:", "prompt_text": "Q:12+34|S:"},
        {"id": "1", "prompt": "Q:47+38+15|S:", "prompt_text": "Q:47+38+15|S:"}]
RESPONSES = ["12+34=46;A:46", "47+38=85;85+15=101;A:101"]


def test_prompt_layout_and_few_shot():
    reward = PTrueReward(None, None)
    assert reward.ptrue_prompts(ROWS[:1], RESPONSES[:1]) == [
        "Question: Q:12+34|S:\nProposed Answer: 12+34=46;A:46\nIs the proposed answer:\n (A) True\n (B) False\n"
        "The proposed answer is: ("]
    shots = [FewShotExample("Q:1+1|S:", "1+1=2;A:2", True), FewShotExample("Q:2+2|S:", "2+2=5;A:5", False)]
    cfg = PTrueConfig(template="{prompt} -> {response}? (", few_shot=shots)
    assert PTrueReward(None, None, cfg).ptrue_prompts(ROWS[:1], ["x"]) == [
        "Q:1+1|S: -> 1+1=2;A:2? (A)\n\nQ:2+2|S: -> 2+2=5;A:5? (B)\n\nQ:12+34|S: -> x? ("]


def test_option_tokens_must_be_single_tokens(model_and_tokenizer):
    _, tok = model_and_tokenizer
    ids = option_token_ids(tok, PTRUE_TEMPLATE, ("A", "B"))
    assert ids == [tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("B")]
    with pytest.raises(ValueError, match=r"P\(True\) option: 'True' is not a single token after the prompt"):
        option_token_ids(tok, "The proposed answer is: ", ("True", "False"))
    with pytest.raises(ValueError, match="map to the same token"):
        option_token_ids(tok, "(", ("A", "A"))
    with pytest.raises(ValueError, match="not a single token"):
        PTrueReward(*model_and_tokenizer, PTrueConfig(options=("Yes", "No"))).score(ROWS, RESPONSES)


class MergingTokenizer:
    """One token per character, except that "(A" is one token (as a BPE vocabulary may have it)."""

    def __call__(self, text: str) -> dict:
        ids, i = [], 0
        while i < len(text):
            merged = text.startswith("(A", i)
            ids.append(1000 if merged else ord(text[i]))
            i += 2 if merged else 1
        return {"input_ids": ids}


def test_option_merging_with_the_template_end_raises():
    # "(" + "A" is one token more than "(", but it is not "(" followed by "A": reading the logit of the
    # merged token after "(" would be wrong
    with pytest.raises(ValueError, match="'A' merges with the end of the template"):
        option_token_ids(MergingTokenizer(), "The proposed answer is: (", ("A", "B"))
    assert option_token_ids(MergingTokenizer(), "The proposed answer is: [", ("A", "B")) == [ord("A"), ord("B")]


def test_bad_config_raises():
    with pytest.raises(ValueError, match=r"\{prompt\} and \{response\}"):
        PTrueReward(None, None, PTrueConfig(template="Is {response} right? ("))
    with pytest.raises(ValueError, match="two options"):
        PTrueReward(None, None, PTrueConfig(options=("A", "B", "C")))


def test_reward_equals_hand_computation_on_the_tiny_model(model_and_tokenizer):
    model, tok = model_and_tokenizer
    reward = PTrueReward(model, tok, PTrueConfig(batch_size=2))
    out = reward.score(ROWS, RESPONSES)
    id_a, id_b = tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("B")
    for prompt, score, detail in zip(reward.ptrue_prompts(ROWS, RESPONSES), out.scores, out.details, strict=True):
        assert 0.0 < score < 1.0
        with torch.no_grad():
            last = model(input_ids=torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1]
        p = torch.softmax(last.double(), dim=-1)
        assert score == pytest.approx((p[id_a] / (p[id_a] + p[id_b])).item(), abs=1e-5)
        assert detail["option_logits"] == pytest.approx([last[id_a].item(), last[id_b].item()], abs=1e-4)
    # the two prompts have different lengths: one per batch gives the same numbers as padded together
    alone = PTrueReward(model, tok, PTrueConfig(batch_size=1)).score(ROWS, RESPONSES)
    assert alone.scores == pytest.approx(out.scores, abs=1e-5)
    assert PTrueReward(model, tok).score([], []).scores == []


def test_custom_options(model_and_tokenizer):
    model, tok = model_and_tokenizer
    cfg = PTrueConfig(template="{prompt}{response} correct? [", options=("Y", "N"))
    out = PTrueReward(model, tok, cfg).score(ROWS, RESPONSES)
    assert all(0.0 < s < 1.0 for s in out.scores)


# ---------------------------------------------------------------------------------------------
# P(True) with brainstorming: the other samples of the prompt shown


def test_brainstorm_prompt_layout_by_hand():
    rows = [ROWS[0], ROWS[1], ROWS[0], ROWS[0]]
    responses = ["A:46", "A:101", "A:47", "A:{ideas}"]
    prompts = PTrueReward(None, None, PTrueConfig(brainstorm=True)).ptrue_prompts(rows, responses)
    tail = "Is the proposed answer:\n (A) True\n (B) False\nThe proposed answer is: ("
    assert prompts[0] == ("Question: Q:12+34|S:\nHere are some brainstormed ideas:\nA:47\nA:{ideas}\n"
                          "Proposed Answer: A:46\n" + tail)
    assert prompts[2] == ("Question: Q:12+34|S:\nHere are some brainstormed ideas:\nA:46\nA:{ideas}\n"
                          "Proposed Answer: A:47\n" + tail)
    assert prompts[3].startswith("Question: Q:12+34|S:\nHere are some brainstormed ideas:\nA:46\nA:47\n"
                                 "Proposed Answer: A:{ideas}\n")  # a response's braces are not a placeholder
    # a prompt with one sample has no ideas
    assert prompts[1] == "Question: Q:47+38+15|S:\nHere are some brainstormed ideas:\n\nProposed Answer: A:101\n" + tail
    cfg = PTrueConfig(brainstorm=True, brainstorm_template="{prompt}|{ideas}|{response}(", idea_separator=" / ",
                      few_shot=[FewShotExample("Q:1+1|S:", "A:2", True)])
    assert PTrueReward(None, None, cfg).ptrue_prompts(rows[:3], responses[:3])[0] == \
        "Question: Q:1+1|S:\nProposed Answer: A:2\nIs the proposed answer:\n (A) True\n (B) False\n" \
        "The proposed answer is: (A)\n\nQ:12+34|S:|A:47|A:46("  # few-shot examples keep the plain template


def test_brainstorm_is_a_grouped_option_with_its_check():
    from selfalign.config import ConfigError
    from selfalign.recipe import recipe_from_dict
    from selfalign.rewards import REWARDS
    from selfalign.rewards.ptrue import check_config

    spec = REWARDS["ptrue"]
    assert not spec.is_grouped() and not spec.is_grouped(PTrueConfig())
    assert spec.is_grouped(PTrueConfig(brainstorm=True))
    with pytest.raises(ConfigError, match=r"^rewards.ptrue.brainstorm_template: needs \{prompt\}, \{ideas\} and "
                                          r"\{response\}$"):
        check_config(PTrueConfig(brainstorm=True, brainstorm_template="{prompt} {response} ("))
    with pytest.raises(ConfigError, match=r"^recipe: eval.evaluators.bon_win_rate.reward: ptrue scores a sample "
                                          r"against the other samples of its prompt"):
        recipe_from_dict({"eval": {"evaluators": {"bon_win_rate": {
            "samples": 2, "best_of": [1, 2], "reward": "ptrue", "reward_options": {"brainstorm": True}}}}})


def test_brainstorm_scores_equal_the_hand_computation(model_and_tokenizer):
    model, tok = model_and_tokenizer
    rows = [ROWS[0], ROWS[0], ROWS[0]]
    responses = ["12+34=46;A:46", "12+34=47;A:47", "A:46"]
    reward = PTrueReward(model, tok, PTrueConfig(brainstorm=True, batch_size=2))
    out = reward.score(rows, responses)
    id_a, id_b = tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("B")
    plain = PTrueReward(model, tok)
    for k, score in enumerate(out.scores):
        others = [y for j, y in enumerate(responses) if j != k]
        prompt = plain.fill(rows[k]["prompt"], "").split("Proposed Answer:")[0] + \
            "Here are some brainstormed ideas:\n" + "\n".join(others) + f"\nProposed Answer: {responses[k]}\n" \
            "Is the proposed answer:\n (A) True\n (B) False\nThe proposed answer is: ("
        with torch.no_grad():
            last = model(input_ids=torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1]
        p = torch.softmax(last.double(), dim=-1)
        assert score == pytest.approx((p[id_a] / (p[id_a] + p[id_b])).item(), abs=1e-5)
    assert out.scores != pytest.approx(plain.score(rows, responses).scores, abs=1e-6)  # the ideas change the input
