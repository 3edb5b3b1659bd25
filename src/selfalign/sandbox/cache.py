"""The cached sandbox model: ``$SELFALIGN_CACHE/sandbox/<config hash>`` (default ``~/.cache/selfalign``), built on
first use, atomically (temp dir + rename) and under a file lock."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

from selfalign.sandbox.config import SandboxModelConfig, config_hash
from selfalign.sandbox.model import build_sandbox_model

logger = logging.getLogger(__name__)

def cache_root() -> Path:
    return Path(os.environ.get("SELFALIGN_CACHE", Path.home() / ".cache" / "selfalign")).expanduser()


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _complete(d: Path) -> bool:
    return (d / "sandbox.json").is_file()


def sandbox_model_path(cfg: SandboxModelConfig | None = None, num_threads: int | None = None) -> Path:
    """The directory of the built sandbox model for ``cfg`` (default config if None), building it
    on first use. The directory appears only complete (built in a temporary sibling, then renamed);
    a file lock keeps concurrent processes from building the same config twice."""
    cfg = cfg or SandboxModelConfig()
    h = config_hash(cfg)
    root = cache_root() / "sandbox"
    final = root / h
    if _complete(final):
        return final
    with _file_lock(root / f".{h}.lock"):
        if _complete(final):
            return final
        # holding the lock: leftovers of killed builds of this config can go
        for stale in root.glob(f".{h}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # incomplete (should not happen with rename); replace it
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{h}.tmp-", dir=root))
        try:
            logger.info("building sandbox model %s into %s (first use)", h, final)
            build_sandbox_model(cfg, tmp, num_threads=num_threads)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
