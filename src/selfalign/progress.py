"""What a run shows while it works, on the main process only (stderr; the per-round table goes to stdout).

Three modes, chosen once by the command line (`configure`):

- `bar` (stderr is a terminal): a tqdm bar per chunked stage (generate, reward, eval, the token scoring of some
  pairs stages) with samples/s, tokens/s and the ETA, and TRL's own training bar and per-step logs;
- `lines` (stderr is a file or a pipe: CI, Slurm logs): the same information as one plain line per chunk and per
  training step, no carriage returns;
- `quiet` (`--quiet`): none of it; the per-round table and warnings only.

Under `accelerate launch` only the main process shows progress; it counts the part files every process writes, so
its bar covers the whole stage.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

Mode = Literal["bar", "lines", "quiet"]
_mode: Mode | None = None


def configure(choice: Mode | Literal["auto"] = "auto") -> Mode:
    """Set the mode for this process (`auto`: a bar when stderr is a terminal, plain lines otherwise)."""
    global _mode
    _mode = ("bar" if stream().isatty() else "lines") if choice == "auto" else choice
    return _mode


def mode() -> Mode:
    """The configured mode; a library user who never configured it gets `auto`."""
    return _mode if _mode is not None else configure("auto")


def _shown() -> bool:
    from selfalign import distributed

    return mode() != "quiet" and distributed.is_main()


def _world_size() -> int:
    from selfalign import distributed

    return distributed.world_size()


def format_seconds(seconds: float) -> str:
    """12 s, 3m05s, 2h07m."""
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def stream():
    """Where progress goes: stderr (stdout carries the per-round table and the commands' results)."""
    return sys.stderr


def _emit(line: str) -> None:
    print(line, file=stream(), flush=True)


def count_output(items: Sequence[Any], rows: list[dict]) -> tuple[int, int]:
    """(samples, tokens) of one computed chunk: its rows are samples (generate, reward); an eval row holds one
    response per mode (`greedy_response`, `sampled_response`), an eval-samples row K `responses`. Tokens: each row's
    `token_ids` or `*_tokens` counts (what was generated), else the input items' `token_ids` (what was scored)."""
    samples = tokens = 0
    for r in rows:
        modes = [k for k in r if k.endswith("_response")]
        samples += len(r["responses"]) if isinstance(r.get("responses"), list) else len(modes) or 1
        if "token_ids" in r:
            tokens += len(r["token_ids"])
        tokens += sum(v for k, v in r.items() if k.endswith("_tokens") and isinstance(v, int))
    if tokens == 0:
        tokens = sum(len(x["token_ids"]) for x in items if isinstance(x, dict) and "token_ids" in x)
    return samples, tokens


_UNITS = {"generate": "prompts", "eval": "prompts", "eval_samples": "prompts", "reward": "samples"}


class ChunkProgress:
    """Progress of one chunked stage, shown on the main process. `parts_dir` is `round_t/.parts/<stage>`: its name
    and round label the bar, and its part files (written by every process) say how much of the stage is done."""

    def __init__(self, parts_dir: Path, n_items: int, chunk_size: int):
        self.parts_dir, self.n_items, self.chunk_size = Path(parts_dir), n_items, chunk_size
        self.n_chunks = math.ceil(n_items / chunk_size) if chunk_size else 0
        stage = self.parts_dir.name
        match = re.fullmatch(r"round_(\d+)", self.parts_dir.parent.parent.name)
        self.label = f"round {match.group(1)} {stage}" if match else stage
        self.unit = _UNITS.get(stage, "items")
        self.shown = _shown() and self.n_chunks > 0
        self.whose = " (main process)" if _world_size() > 1 else ""  # its own chunks' rate
        self.start = time.perf_counter()
        self.resumed = self._done_chunks()
        self.samples = self.tokens = 0
        self.computed = 0
        self.finished_line = False  # the last line said 100%
        self.bar = None
        if self.shown and mode() == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=n_items, desc=self.label, unit=self.unit[:-1], dynamic_ncols=True, file=stream(),
                            initial=min(self.resumed * chunk_size, n_items))
        elif self.shown and self.resumed:
            _emit(f"{self.label}: resuming at chunk {self.resumed + 1}/{self.n_chunks}")

    def _done_chunks(self) -> int:
        return sum(1 for _ in self.parts_dir.glob("*.jsonl")) if self.parts_dir.exists() else 0

    def chunk_done(self, items: Sequence[Any], rows: list[dict]) -> None:
        """After this process wrote one chunk's part file."""
        if not self.shown:
            return
        samples, tokens = count_output(items, rows)
        self.samples, self.tokens, self.computed = self.samples + samples, self.tokens + tokens, self.computed + 1
        done = min(self._done_chunks(), self.n_chunks)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = f"{self.samples / elapsed:.1f} samples/s, {self.tokens / elapsed:,.0f} tok/s" + self.whose
        if self.bar is not None:
            self.bar.n = min(done * self.chunk_size, self.n_items)
            self.bar.set_postfix_str(rate, refresh=False)
            self.bar.refresh()
            return
        new = max(done - self.resumed, 1)
        eta = (self.n_chunks - done) * elapsed / new
        self.finished_line = done == self.n_chunks
        _emit(f"{self.label}: chunk {done}/{self.n_chunks} ({100 * done / self.n_chunks:.0f}%), "
              f"{min(done * self.chunk_size, self.n_items)}/{self.n_items} {self.unit}, {rate}, "
              f"elapsed {format_seconds(elapsed)}, ETA {format_seconds(eta)}")

    def close(self) -> None:
        """After the stage's barrier: every chunk is written."""
        if self.bar is not None:
            self.bar.n = self.n_items
            self.bar.refresh()
            self.bar.close()
        elif self.shown and self.computed and not self.finished_line:
            elapsed = time.perf_counter() - self.start
            _emit(f"{self.label}: done, {self.n_items} {self.unit} in {format_seconds(elapsed)}")


# ------------------------------------------------------------------------------------------------ training


def trainer_args() -> dict:
    """The progress arguments of a TRL config: its tqdm bar in `bar` mode only."""
    return {"disable_tqdm": mode() != "bar"}


def trainer_label(output_dir: str | os.PathLike) -> str:
    """`round 1 train` for a trainer writing under round_1/trainer, `round 1 train (cdpo/.trainer_positive)` for one
    under round_1/cdpo/.trainer_positive, `round 0 seed SFT` for round_0's, `round 0 judge_train (sft)` for one under
    round_0/.parts/judge_train/sft."""
    t, rest = trainer_round(output_dir)
    if t is None:
        return "train"
    if rest.startswith(".parts/"):  # a method's own stage training under round_t/.parts/<stage>/<phase>
        stage, _, phase = rest[len(".parts/"):].partition("/")
        return f"round {t} {stage}" + (f" ({phase})" if phase else "")
    name = "seed SFT" if t == 0 else "train"
    return f"round {t} {name}" + (f" ({rest})" if rest not in ("", "trainer") else "")


def trainer_round(output_dir: str | os.PathLike) -> tuple[int | None, str]:
    """(round, the trainer's directory inside the round) of a trainer whose output_dir is under round_t/."""
    parts = Path(output_dir).parts
    idx = next((i for i in range(len(parts) - 1, -1, -1) if re.fullmatch(r"round_\d+", parts[i])), None)
    if idx is None:
        return None, Path(output_dir).name
    return int(parts[idx][len("round_"):]), "/".join(parts[idx + 1:])
