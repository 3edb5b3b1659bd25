"""What determines a built sandbox model (``model.sandbox`` in a recipe): a plain dataclass, importable without
torch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from selfalign.sandbox.task import ArithTask


@dataclass
class SandboxModelConfig:
    """Everything that determines the built model (all fields enter the cache hash).

    Training has two phases. Phase 1 (curriculum) trains on correct solutions only until the
    model solves ``solve_target`` of a held-out validation set greedily (checked every
    ``check_every`` steps; at most ``solve_max_steps`` steps): when a small transformer learns
    the digit-wise algorithm is abrupt and varies with the seed, so the switch is made on
    measured skill rather than at a fixed step. The phase-1 model then samples (T=1) one
    solution for each of ``own_samples`` fresh problems. Phase 2 trains ``steps`` steps on the
    full corpus (``sandbox.corpus``): solutions, planted-error solutions (``error_rate``) and
    judge examples (``judge_fraction``), a share ``sample_fraction`` of the solution and judge
    examples built on the own samples. Training on its own samples holds the model's solving
    skill near where phase 1 left it (otherwise it saturates: greedy accuracy near 1, nothing
    left to improve), and judging its own samples teaches the judge the errors the model really
    makes. The learning rate warms up, stays constant, and decays (cosine, to ``min_lr_ratio``)
    over the last ``decay_fraction`` of phase 2.
    """

    seed: int = 0
    # task
    terms: int = 3
    digits: int = 2
    # model (LlamaConfig)
    layers: int = 4
    hidden: int = 128
    heads: int = 8
    intermediate: int = 512
    # phase 1: correct solutions until the model solves solve_target of the validation problems
    solve_target: float = 0.6
    solve_max_steps: int = 1500
    check_every: int = 50
    # phase 2: the full corpus, partly built on the phase-1 model's own samples
    steps: int = 1300
    own_samples: int = 4096  # T=1 samples of the phase-1 model on fresh problems
    sample_fraction: float = 0.7  # share of solution / judge examples built on own samples
    # optimisation
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 100
    decay_fraction: float = 0.5
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    # corpus (see sandbox.corpus)
    error_rate: float = 0.3
    judge_fraction: float = 0.4
    judge_noise: float = 0.03
    written_fraction: float = 0.8
    judge_error_fraction: float = 0.5
    verdict_weight: float = 3.0  # loss weight of the check marks (o/n) and the score digit

    def task(self) -> ArithTask:
        """The task the model is trained for: the default-seed task of its shape (its eval split is
        the one the corpus excludes; ``seed`` varies the corpus and the init, not the task)."""
        return ArithTask(terms=self.terms, digits=self.digits)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SandboxModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown SandboxModelConfig keys {sorted(unknown)}; allowed: {sorted(names)}")
        return cls(**d)


#: Bump when the corpus or training code changes what a config builds (invalidates the cache).
BUILD_VERSION = 3


def config_hash(cfg: SandboxModelConfig) -> str:
    payload = json.dumps({"v": BUILD_VERSION, **cfg.to_dict()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
