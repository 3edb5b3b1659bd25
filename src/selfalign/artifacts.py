"""The run directory: atomic JSON/JSONL writes, resumable chunked stages, and the manifest.

Every artifact is written to a temporary sibling and moved into place with `os.replace`, so a
reader (or a resumed run) sees either the whole file or none of it, whatever moment the writer
was killed at. A write that fails (disk full, no permission) removes its temporary file and raises
`selfalign.errors.WriteFailed`, one line naming the file. Artifacts get the permissions the user's
umask gives a new file (0644 / 0755 with the usual 022, so teammates on a shared machine can read a
run), not the 0600 / 0700 of temporary files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from selfalign.errors import WriteFailed

_REASONS = {errno.ENOSPC: ("no space left on the device", "free some space"),
            errno.EDQUOT: ("disk quota exceeded", "free some space"),
            errno.EACCES: ("permission denied", "make it writable"),
            errno.EPERM: ("operation not permitted", "make it writable"),
            errno.EROFS: ("read-only file system", "write the run to a writable disk")}
#: the errors of a write that the user can fix (a full disk, a missing permission)
WRITE_ERRORS = frozenset(_REASONS)


def raise_write_error(path: str | Path, e: OSError) -> None:
    """Raise `WriteFailed` naming `path` when `e` is one of `WRITE_ERRORS`; the caller re-raises any other error."""
    if e.errno in WRITE_ERRORS:
        raise write_failed(path, e) from None


def write_failed(path: str | Path, e: OSError, cleaned: bool = True) -> WriteFailed:
    """The one-line error of a failed write of `path`; `cleaned`: whatever was half-written has been removed."""
    reason, fix = _REASONS.get(e.errno, (e.strerror or type(e).__name__, "fix it"))
    kept = "; nothing half-written was kept" if cleaned else ""
    return WriteFailed(f"{path}: cannot write ({reason}){kept}: {fix} and run the same command again (a run resumes "
                       "where it stopped)", str(path), e.errno)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> None:
    """Give `path` (a file, or a directory and everything in it) the permissions a new file or directory gets
    under the umask: temporary files are 0600 (mkstemp, safetensors) and temporary directories 0700 (mkdtemp);
    an executable file keeps its execute bits (as far as the umask allows)."""
    mask = current_umask()
    path = Path(path)
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in entries:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode & 0o777
        full = 0o777 if p.is_dir() or mode & 0o111 else 0o666
        os.chmod(p, full & ~mask)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise_write_error(path, e)
        raise
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes it 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise_write_error(path, e)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one line (the metrics logs). A failed or short write is cut off again, so the file never ends in a
    partial line."""
    path = Path(path)
    data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise_write_error(path, e)
        raise
    try:
        start = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as e:
            os.ftruncate(fd, start)
            raise_write_error(path, e)
            raise
    finally:
        os.close(fd)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written directory into place (the old one, if any, is removed once the new one is there), its
    permissions those the umask gives (a trainer's safetensors are written 0600). When the move fails, the old
    directory stays, the temporary one is removed (and on a full disk or without permission `WriteFailed` names
    the directory)."""
    old = final_dir.with_name(f".{final_dir.name}.old")
    try:
        follow_umask(tmp_dir)
        shutil.rmtree(old, ignore_errors=True)
        if final_dir.exists():
            os.replace(final_dir, old)
        try:
            os.replace(tmp_dir, final_dir)
        except OSError:
            if old.exists():
                os.replace(old, final_dir)
            raise
    except OSError as e:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise_write_error(final_dir, e)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_dir(final_dir: Path, write: Callable[[Path], Any]) -> None:
    """`write(tmp)` fills a temporary sibling of `final_dir`, which then replaces it whole (`replace_dir`). When
    writing fails, the temporary directory is removed (a full disk or a missing permission: `WriteFailed` naming
    `final_dir`)."""
    tmp = final_dir.with_name(f".{final_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise_write_error(final_dir, e)
        raise
    replace_dir(tmp, final_dir)


def run_in_chunks(
    items: Sequence[Any],
    chunk_size: int,
    parts_dir: Path,
    compute: Callable[[int, Sequence[Any]], list[dict]],
) -> list[dict]:
    """Process `items` chunk by chunk, writing each chunk's rows to `parts_dir/NNNNN.jsonl` atomically.

    A chunk whose part file exists is read back instead of recomputed, so a stage killed halfway
    resumes at its first missing chunk; rows are never duplicated or lost. `compute(i, chunk)` gets
    the chunk index (for seeding) and must be deterministic in it, so the rows do not depend on how
    many processes share the work: under `accelerate launch` process r computes chunks r, r + N, ...
    (distributed.py), the processes meet at a barrier, and each returns all rows in chunk order. The main process
    shows the stage's progress as chunks finish (`selfalign.progress`).
    """
    from selfalign import distributed
    from selfalign.progress import ChunkProgress

    starts = range(0, len(items), chunk_size)
    if 0 < len(starts) < distributed.world_size() and distributed.is_main():
        logging.getLogger(__name__).warning("%s: %d chunks for %d processes, so some processes wait; use smaller "
                                            "chunks", parts_dir.name, len(starts), distributed.world_size())
    progress = ChunkProgress(parts_dir, len(items), chunk_size)
    for i, start in enumerate(starts):
        part = parts_dir / f"{i:05d}.jsonl"
        if distributed.owns(i) and not part.exists():
            chunk = items[start : start + chunk_size]
            rows = compute(i, chunk)
            write_jsonl(part, rows)
            progress.chunk_done(chunk, rows)
    distributed.barrier()
    progress.close()
    rows: list[dict] = []
    for i in range(len(starts)):
        rows.extend(read_jsonl(parts_dir / f"{i:05d}.jsonl"))
    return rows


class RunDir:
    """OUTPUT_DIR layout (DESIGN.md, "Run directory") and the manifest of finished stages."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest_path = self.root / "manifest.json"
        self.metrics_path = self.root / "metrics.jsonl"
        self.summary_path = self.root / "summary.json"
        self.recipe_path = self.root / "recipe.yaml"
        self.train_steps_path = self.root / "train_steps.jsonl"
        self._manifest = read_json(self.manifest_path) if self.manifest_path.exists() else {"stages": {}}

    def round_dir(self, t: int) -> Path:
        return self.root / f"round_{t}"

    def parts_dir(self, t: int, stage: str) -> Path:
        return self.round_dir(t) / ".parts" / stage

    @staticmethod
    def key(t: int, stage: str) -> str:
        return f"round_{t}/{stage}"

    def is_done(self, t: int, stage: str) -> bool:
        return self.key(t, stage) in self._manifest["stages"]

    def stage_info(self, t: int, stage: str) -> dict:
        return self._manifest["stages"][self.key(t, stage)]

    def reload(self) -> None:
        """Re-read the manifest another process wrote (a non-main process, after a stage's barrier)."""
        self._manifest = read_json(self.manifest_path) if self.manifest_path.exists() else {"stages": {}}

    def trainer_dir(self, t: int) -> Path:
        """Where round t's trainer (seed SFT in round 0) keeps its checkpoints while the stage runs."""
        return self.round_dir(t) / "trainer"

    def mark_done(self, t: int, stage: str, artifact: Path | None, seconds: float, **info: Any) -> None:
        """Record a finished stage; then its resumable chunks and, for a training stage, its checkpoints go."""
        entry = {"finished_at": time.time(), "seconds": round(seconds, 3), **info}
        if artifact is not None:
            entry["artifact"] = str(artifact.relative_to(self.root))
            entry["sha256"] = file_sha256(artifact)
        manifest = {**self._manifest, "stages": {**self._manifest["stages"], self.key(t, stage): entry}}
        write_json(self.manifest_path, manifest)
        self._manifest = manifest
        scratch = [self.round_dir(t) / ".parts" / stage] + ([self.trainer_dir(t)] if stage in ("train", "seed_sft")
                                                             else [])
        for path in scratch:
            if path.exists():
                shutil.rmtree(path)

    def check_artifact(self, t: int, stage: str) -> None:
        """Raise if a finished stage's artifact went missing or changed since it was written."""
        entry = self.stage_info(t, stage)
        if "artifact" not in entry:
            return
        path = self.root / entry["artifact"]
        if not path.exists():
            raise RuntimeError(f"{path}: recorded as finished in manifest.json but missing")
        if file_sha256(path) != entry["sha256"]:
            raise RuntimeError(f"{path}: changed since it was written (sha256 differs from manifest.json)")

    def get(self, key: str, default: Any = None) -> Any:
        return self._manifest.get(key, default)

    def set(self, key: str, value: Any) -> None:
        manifest = {**self._manifest, key: value}
        write_json(self.manifest_path, manifest)
        self._manifest = manifest
