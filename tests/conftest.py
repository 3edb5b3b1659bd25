"""Shared fixtures: a tiny random Llama with the sandbox's character tokenizer, saved and loaded
through the normal `from_pretrained` path (no network)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_tiny_model(path, seed: int = 0, hidden: int = 32, layers: int = 2) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfalign.sandbox.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def tiny_recipe(model_path: str, **overrides) -> dict:
    """A one-round recipe on the tiny model that runs every stage in seconds."""
    recipe = {
        "model": {"path": model_path},
        "seed": 0,
        "rounds": 1,
        "prompts": {"source": "sandbox://arith?terms=3&digits=2", "train_per_round": 8, "eval_prompts": 8},
        "generation": {"samples_per_prompt": 4, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 24,
                       "batch_size": 16, "chunk_prompts": 2},
        "rewards": {"likelihood": {}},
        "pairs": {"reward": "likelihood"},
        "train": {"learning_rate": 1e-3, "batch_size": 4, "beta": 0.1},
        "eval": {"batch_size": 4, "max_new_tokens": 24},
        "tracking": {"wandb": {"mode": "offline"}, "log_samples": 4},
    }
    for key, value in overrides.items():
        node = recipe
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return recipe


def load_script(name: str):
    """A script under scripts/ imported as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trainable_weights_moved(trainer, base_model_path: str, lora: bool) -> bool:
    """Whether training changed the trainable weights: a LoRA B matrix left zero, or any tensor of the base."""
    import torch
    from transformers import AutoModelForCausalLM

    if lora:  # LoRA's B starts at zero
        return any(p.abs().max() > 0 for n, p in trainer.model.named_parameters() if "lora_B" in n)
    base = AutoModelForCausalLM.from_pretrained(base_model_path).state_dict()
    return any(not torch.equal(p, base[n]) for n, p in trainer.model.state_dict().items())


@pytest.fixture(scope="session")
def smollm2() -> str:
    """SmolLM2-135M-Instruct as `model.path: smollm2-135m-instruct` resolves it (converted once, then cached)."""
    from selfalign import models
    from selfalign.config import ModelConfig

    return models.base_model_path(ModelConfig(path="smollm2-135m-instruct"))
