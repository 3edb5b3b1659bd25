"""Where the sandbox model comes from.

The model of the default build settings ships with the package (``sandbox/weights/``, about 4 MB): it is what
``selfalign sandbox build`` builds with the default settings on the machine that built it (2 CPU threads; builds on
other CPUs differ, as float summation does), so every machine starts from the same model at once. Any other
settings (``model.sandbox`` in a recipe) are built on first use into ``$SELFALIGN_CACHE/sandbox/<config hash>``
(default ``~/.cache/selfalign``), atomically (temp dir + rename) and under a file lock; ``selfalign sandbox build``
always builds into that cache, the default settings included.
"""

from __future__ import annotations

import json
from pathlib import Path

from selfalign.cache import cache_root, cached_dir
from selfalign.sandbox.config import SandboxModelConfig, config_hash
from selfalign.sandbox.model import build_sandbox_model

#: the shipped build of the default settings
SHIPPED = Path(__file__).parent / "weights"


def shipped_model_path(cfg: SandboxModelConfig | None = None) -> Path | None:
    """The shipped model directory when ``cfg`` is the configuration it was built with, else None."""
    meta = SHIPPED / "sandbox.json"
    if not meta.is_file() or not (SHIPPED / "model.safetensors").is_file():
        return None
    return SHIPPED if json.loads(meta.read_text())["hash"] == config_hash(cfg or SandboxModelConfig()) else None


def sandbox_model_path(cfg: SandboxModelConfig | None = None, num_threads: int | None = None,
                       shipped: bool = True) -> Path:
    """The directory of the sandbox model for ``cfg`` (default config if None): the shipped one when it was built
    with ``cfg`` (unless ``shipped`` is False), else the cached build, built on first use (``selfalign.cache``)."""
    cfg = cfg or SandboxModelConfig()
    if shipped and (path := shipped_model_path(cfg)) is not None:
        return path
    return cached_dir(cache_root() / "sandbox", config_hash(cfg),
                      lambda tmp: build_sandbox_model(cfg, tmp, num_threads=num_threads),
                      lambda d: (d / "sandbox.json").is_file(), what="sandbox model")
