"""Loading the policy of a round, its reference, and the tokenizer (transformers + PEFT).

A run's model of round t is the base model (t = 0) or `round_t/model/` after full fine-tuning; with
LoRA, round t saves only `round_t/adapter/` and the model is rebuilt by merging the adapters of
rounds 1..t into the base, in order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from selfalign.config import ConfigError, ModelConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def base_model_path(cfg: ModelConfig) -> str:
    """The directory of model.path: the built-in `sandbox` or `smollm2-135m-instruct` (made on first use), or the
    path / hub id as given."""
    if cfg.path == "sandbox":
        from selfalign.sandbox.cache import sandbox_model_path

        return str(sandbox_model_path(cfg.sandbox))
    if cfg.path == "smollm2-135m-instruct":
        from selfalign import smollm2

        return str(smollm2.model_path())
    return cfg.path


def load_tokenizer(path: str, cfg: ModelConfig) -> PreTrainedTokenizerBase:
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
    except OSError as e:
        raise ConfigError(f"model.path: cannot load a tokenizer from {path!r} ({str(e).splitlines()[0]})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, cfg: ModelConfig, device: str | torch.device | None = None) -> PreTrainedModel:
    """A causal LM from `path` (safetensors only; remote code only when the recipe allows it)."""
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_DTYPES[cfg.dtype], trust_remote_code=cfg.trust_remote_code, revision=cfg.revision,
            use_safetensors=True,
        )
    except OSError as e:
        raise ConfigError(f"model.path: cannot load a causal LM from {path!r} ({str(e).splitlines()[0]})") from None
    if device is not None:
        model.to(device)
    return model


def round_model_dir(run_root: Path, t: int) -> Path:
    return run_root / f"round_{t}" / "model"


def round_adapter_dir(run_root: Path, t: int) -> Path:
    return run_root / f"round_{t}" / "adapter"


def round_weights(cfg: ModelConfig, run_root: Path, t: int) -> tuple[str, list[Path]]:
    """Where M_t's weights come from: the latest full weights up to round t, and the LoRA adapters after them
    (in order) that are merged into them."""
    full = [s for s in range(t + 1) if round_model_dir(run_root, s).exists()]
    base_t = max(full, default=0)
    path = str(round_model_dir(run_root, base_t)) if full else base_model_path(cfg)
    return path, [round_adapter_dir(run_root, s) for s in range(base_t + 1, t + 1)
                  if round_adapter_dir(run_root, s).exists()]


def load_round_model(cfg: ModelConfig, run_root: Path, t: int, device=None) -> PreTrainedModel:
    """The policy after round t. Round 0 is the base model (or its seed-SFT version in round_0/model/).

    A round with model/ holds full weights; with adapter/, a LoRA adapter merged into the model before
    it; with neither (no pairs were kept), the model is carried over unchanged.
    """
    path, adapters = round_weights(cfg, run_root, t)
    model = load_model(path, cfg, device)
    for adapter in adapters:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model


def default_device() -> torch.device:
    from selfalign import distributed

    return distributed.device()
