"""`selfalign env`: what a bug report needs to know about this machine, one `name: value` line each.

    selfalign env            # paste the output into the issue
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

#: (shown name, distribution name) of the packages a run depends on or may use
PACKAGES = [
    ("torch", "torch"), ("transformers", "transformers"), ("trl", "trl"), ("peft", "peft"),
    ("accelerate", "accelerate"), ("datasets", "datasets"), ("deepspeed", "deepspeed"), ("vllm", "vllm"),
    ("lm-eval", "lm_eval"), ("gguf", "gguf"), ("huggingface_hub", "huggingface_hub"), ("wandb", "wandb"),
    ("tokenizers", "tokenizers"), ("safetensors", "safetensors"),
]


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report() -> list[tuple[str, str]]:
    """(name, value) pairs: selfalign, Python, the platform, every package in PACKAGES, CUDA and the GPUs, and the
    launcher variables when run under one."""
    from selfalign import __version__

    rows = [("selfalign", __version__), ("Python", f"{platform.python_version()} ({sys.executable})"),
            ("platform", platform.platform()), ("CPUs", str(os.cpu_count()))]
    rows += [(name, version_of(dist)) for name, dist in PACKAGES]
    rows += _accelerator()
    for var in ("WORLD_SIZE", "CUDA_VISIBLE_DEVICES", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_MIXED_PRECISION"):
        if var in os.environ:
            rows.append((var, os.environ[var]))
    return rows


def _accelerator() -> list[tuple[str, str]]:
    try:
        import torch
    except ImportError:
        return [("CUDA", "unknown (torch is not installed)")]
    if torch.version.cuda is None:
        rows = [("CUDA", "not available (a CPU build of torch)")]
    elif not torch.cuda.is_available():
        rows = [("CUDA", f"{torch.version.cuda} (torch build); no GPU visible")]
    else:
        rows = [("CUDA", f"{torch.version.cuda} (torch build), cuDNN {torch.backends.cudnn.version()}")]
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    rows.append(("GPUs", str(gpus)))
    for i in range(gpus):
        p = torch.cuda.get_device_properties(i)
        rows.append((f"GPU {i}", f"{p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}"))
    if gpus and torch.cuda.is_bf16_supported():
        rows.append(("bf16", "supported"))
    return rows


def format_report(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name + ':':<{width + 1}} {value}" for name, value in rows)
