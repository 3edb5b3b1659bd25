"""Built things selfalign keeps between runs, under `$SELFALIGN_CACHE` (default `~/.cache/selfalign`): a directory
per key, which appears only complete (built in a temporary sibling, then renamed) and is built once even when
several processes ask for it at the same time (a file lock)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

COMPLETE = ".complete"  # written last into a built directory


def cache_root() -> Path:
    return Path(os.environ.get("SELFALIGN_CACHE", Path.home() / ".cache" / "selfalign")).expanduser()


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_dir(root: Path, key: str, build: Callable[[Path], object], complete: Callable[[Path], bool],
               what: str = "directory") -> Path:
    """`root/key`, made by `build(tmp_dir)` on first use. `complete(dir)` tells a finished directory from a partial
    one (a killed build leaves only a temporary sibling, which the next build removes)."""
    final = root / key
    if complete(final):
        return final
    with file_lock(root / f".{key}.lock"):
        if complete(final):
            return final
        for stale in root.glob(f".{key}.tmp-*"):  # holding the lock: leftovers of killed builds can go
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # incomplete (should not happen with rename); replace it
            shutil.rmtree(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=root))
        try:
            log.info("building %s %s into %s (first use)", what, key, final)
            build(tmp)
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; others on a shared machine may read the cache
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
