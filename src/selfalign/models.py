"""Loading the policy of a round, its reference, and the tokenizer (transformers + PEFT).

A run's model of round t is the base model (t = 0) or `round_t/model/` after full fine-tuning; with
LoRA, round t saves only `round_t/adapter/` and the model is rebuilt by merging the adapters of
rounds 1..t into the base, in order.
"""

from __future__ import annotations

import re
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def load_tokenizer(path: str, cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer at `path`; without a pad token it pads with its EOS token (generation pads on the left and
    masks the padding). ConfigError when it cannot be loaded or has neither token."""
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, a tokenizers exception, ...: one line for the user
        raise ConfigError(f"model.path: cannot load a tokenizer from {path!r} ({_first_line(e)})") from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ConfigError(f"model.path: the tokenizer at {path!r} has neither a pad token nor an EOS token; set "
                              "eos_token (and pad_token) in its tokenizer_config.json")
        tok.pad_token = tok.eos_token
    return tok


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")  # owner/name


def check_model(cfg: ModelConfig) -> tuple[PreTrainedTokenizerBase, int | None]:
    """Before any stage runs: model.path is a model directory (or a hub id) whose config and tokenizer load and
    whose weights are safetensors; returns the tokenizer and the model's context length (None when its config has
    no max_position_embeddings). Loads no weights."""
    from transformers import AutoConfig

    path = base_model_path(cfg)
    local = Path(path)
    if local.exists():
        if not local.is_dir():
            raise ConfigError(f"model.path: {path!r} is a file; give a model directory (config.json, safetensors "
                              "weights, tokenizer)")
        if not (local / "config.json").is_file():
            raise ConfigError(f"model.path: {path!r} is not a model directory (no config.json)")
        if not any((local / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
            raise ConfigError(f"model.path: {path!r} has no safetensors weights (model.safetensors); selfalign loads "
                              "safetensors only")
    elif path.startswith((".", "/", "~")) or not _HUB_ID.match(path):
        raise ConfigError(f"model.path: {path!r}: no such model directory (give a model directory, a hub id, "
                          "'sandbox' or 'smollm2-135m-instruct')")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, revision=cfg.revision)
    except Exception as e:  # noqa: BLE001 - a missing hub id, a malformed config.json, ...: one line for the user
        raise ConfigError(f"model.path: cannot read the model config of {path!r} ({_first_line(e)})") from None
    context = getattr(config, "max_position_embeddings", None)
    return load_tokenizer(path, cfg), context if isinstance(context, int) else None


def load_model(path: str, cfg: ModelConfig, device: str | torch.device | None = None) -> PreTrainedModel:
    """A causal LM from `path` (safetensors only; remote code only when the recipe allows it)."""
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_DTYPES[cfg.dtype], trust_remote_code=cfg.trust_remote_code, revision=cfg.revision,
            use_safetensors=True,
        )
    except (OSError, ValueError) as e:
        raise ConfigError(f"model.path: cannot load a causal LM from {path!r} ({_first_line(e)})") from None
    if device is not None:
        model.to(device)
    return model


def load_for_eval(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model at `name` (a path, `sandbox` or `smollm2-135m-instruct`) on the default device in eval mode, with
    its tokenizer: what `selfalign eval` and the measurement scripts score with."""
    cfg = ModelConfig(path=name)
    path = base_model_path(cfg)
    tokenizer = load_tokenizer(path, cfg)
    return load_model(path, cfg, default_device()).eval(), tokenizer


def round_model_dir(run_root: Path, t: int) -> Path:
    """M_t's full weights; round 0: the judge-trained model (`methods/gencls.py`) when the run has one, else the
    seed-SFT model."""
    if t == 0 and (run_root / "round_0" / "judge_model").exists():
        return run_root / "round_0" / "judge_model"
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
