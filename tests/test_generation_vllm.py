"""generation.backend vllm: the one-line errors where vLLM cannot run, and vLLM outputs read as `Sample`s.

vLLM itself needs an NVIDIA GPU, which CI does not have; the conversion is tested on objects with the fields of
vLLM's `CompletionOutput` (text, token_ids, logprobs, finish_reason, stop_reason)."""

from __future__ import annotations

import sys
import types
from types import SimpleNamespace

import pytest
import yaml

from selfalign.config import ConfigError
from selfalign.generation_vllm import check_available, to_sample
from selfalign.recipe import recipe_from_dict
from selfalign.sandbox.tokenizer import build_char_tokenizer

VLLM = {"generation": {"backend": "vllm"}}


def test_error_when_vllm_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(ConfigError, match=r"^generation.backend: vllm is not installed; pip install -e '.\[vllm\]'"):
        check_available(recipe_from_dict(VLLM).generation, 1)


def test_error_without_a_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ConfigError, match="^generation.backend: vllm needs a CUDA GPU and none is visible"):
        check_available(recipe_from_dict(VLLM).generation, 1)


def test_tensor_parallel_needs_a_single_process(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    recipe = recipe_from_dict({"generation": {"backend": "vllm", "tensor_parallel_size": 2}})
    check_available(recipe.generation, 1)
    with pytest.raises(ConfigError, match="^generation.tensor_parallel_size: 2 GPUs per vLLM engine needs a single"):
        check_available(recipe.generation, 4)


def test_transformers_backend_needs_nothing():
    check_available(recipe_from_dict({}).generation, 8)


def test_cli_stops_before_any_stage(tiny_model, tmp_path, monkeypatch, capsys):
    from conftest import tiny_recipe

    from selfalign.cli import main

    monkeypatch.setitem(sys.modules, "vllm", None)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tiny_model, **{"generation.backend": "vllm",
                                                                "tracking.wandb.enabled": False})))
    assert main(["run", str(path), "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("selfalign: error: generation.backend: vllm is not installed")
    assert not (tmp_path / "run/manifest.json").exists()


def completion(tok, text, finish, stop_reason=None, eos=False, extra=""):
    ids = tok(text + extra, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
    lps = [{i: SimpleNamespace(logprob=-0.1 * (k + 1))} for k, i in enumerate(ids)]
    return SimpleNamespace(text=text, token_ids=ids, logprobs=lps, finish_reason=finish, stop_reason=stop_reason)


def test_eos_completion_keeps_the_eos_logprob():
    tok = build_char_tokenizer()
    s = to_sample(completion(tok, "1+2=3", "stop", eos=True), tok, (), True)
    assert s.finish_reason == "eos" and s.text == "1+2=3"
    assert s.token_ids == tok("1+2=3", add_special_tokens=False)["input_ids"]
    assert len(s.logprobs) == len(s.token_ids) + 1 and s.logprobs[-1] == pytest.approx(-0.1 * (len(s.token_ids) + 1))


def test_length_completion_is_kept_whole():
    tok = build_char_tokenizer()
    s = to_sample(completion(tok, "12+30=4", "length"), tok, (), True)
    assert (s.finish_reason, s.text, len(s.token_ids), len(s.logprobs)) == ("length", "12+30=4", 7, 7)


def test_stop_string_cuts_tokens_and_logprobs_with_the_text():
    """vLLM cuts the text before the stop string but its token ids run through it: both are cut to the text."""
    tok = build_char_tokenizer()
    s = to_sample(completion(tok, "7+8=15", "stop", stop_reason="\n\n", extra="\n\n"), tok, ("\n\n",), True)
    assert s.finish_reason == "stop" and s.text == "7+8=15"
    assert s.token_ids == tok("7+8=15", add_special_tokens=False)["input_ids"]
    assert s.logprobs == pytest.approx([-0.1 * (k + 1) for k in range(6)])


def test_without_logprobs():
    tok = build_char_tokenizer()
    s = to_sample(SimpleNamespace(text="5", token_ids=tok("5", add_special_tokens=False)["input_ids"], logprobs=None,
                                  finish_reason="length", stop_reason=None), tok, (), False)
    assert s.logprobs == [] and s.text == "5"
