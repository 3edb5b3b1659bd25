"""The sandbox model's training corpus: worked solutions, planted-error solutions and judge examples
(written checks and bare scores), optionally built on the model's own samples (``selfalign.sandbox.task``
defines the problems, the judgments and the errors)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from selfalign.sandbox.task import (
    EOS,
    JUDGE_EXPECTED_TEMPLATE,
    JUDGE_TEMPLATE,
    ArithTask,
    format_prompt,
    judgment,
    noisy_judgment,
    plant_error,
    score,
    solve,
)


def corpus(
    n: int,
    seed: int | random.Random = 0,
    error_rate: float = 0.2,
    judge_fraction: float = 0.3,
    judge_noise: float = 0.03,
    *,
    task: ArithTask | None = None,
    written_fraction: float = 0.75,
    judge_error_fraction: float = 0.5,
    samples: Sequence[tuple[str, str]] | None = None,
    sample_fraction: float = 0.0,
    start: int = 0,
    eos: str = EOS,
) -> list[dict]:
    """Training examples for the base model, as prompt-completion rows
    ``{"prompt": context, "completion": target + eos, "kind": ...}`` (train on the completion).

    Example ``start + i`` is a deterministic function of (seed, index, samples), drawn from a
    private problem stream disjoint from the first 4096 eval problems:

    * with probability ``judge_fraction`` a judge example. It judges, with probability
      ``sample_fraction``, one of ``samples`` (``(prompt, response)`` pairs: a model's own
      solutions, so the judge learns on the errors the model really makes); otherwise a
      planted-error solution (probability ``judge_error_fraction``) or the correct one. A
      fraction ``written_fraction`` of judge examples use ``JUDGE_TEMPLATE`` (target: written
      check + score), the rest ``JUDGE_EXPECTED_TEMPLATE`` (target: the score digit). With
      probability ``judge_noise`` the label is noisy (one check mark flipped and the score
      recomputed from the marks; a random other score for the bare template). Kinds
      ``judge_written`` / ``judge_expected``.
    * otherwise a solution: with probability ``sample_fraction`` one of ``samples`` as is (kind
      ``sample``: self-distillation, which keeps the model's solving skill where it is), else
      with probability ``error_rate`` one with a planted error (kind ``planted``), else the
      correct one (kind ``solution``).

    ``seed`` may be an int or a ``random.Random`` (one int is drawn from it).
    """
    if isinstance(seed, random.Random):
        seed = seed.getrandbits(63)
    task = task or ArithTask()
    if sample_fraction and not samples:
        raise ValueError("corpus: sample_fraction > 0 needs samples")
    rows = []
    for idx in range(start, start + n):
        rng = random.Random(f"selfalign-corpus:{seed}:{idx}")
        prompt = format_prompt(task.terms_at(idx, f"corpus{seed}"))
        is_judge = rng.random() < judge_fraction
        if sample_fraction and rng.random() < sample_fraction:
            prompt, response = samples[rng.randrange(len(samples))]
            kind = "sample"
        elif is_judge:
            response = plant_error(prompt, rng)[0] if rng.random() < judge_error_fraction else solve(prompt)
        elif rng.random() < error_rate:
            response, kind = plant_error(prompt, rng)[0], "planted"
        else:
            response, kind = solve(prompt), "solution"
        if not is_judge:
            rows.append({"prompt": prompt, "completion": response + eos, "kind": kind})
            continue
        noisy = rng.random() < judge_noise
        if rng.random() < written_fraction:
            target = noisy_judgment(prompt, response, rng) if noisy else judgment(prompt, response)
            rows.append(
                {
                    "prompt": JUDGE_TEMPLATE.format(prompt=prompt, response=response),
                    "completion": target + eos,
                    "kind": "judge_written",
                }
            )
        else:
            k = score(prompt, response)
            if noisy:
                k = rng.choice([j for j in range(1, 6) if j != k])
            rows.append(
                {
                    "prompt": JUDGE_EXPECTED_TEMPLATE.format(prompt=prompt, response=response),
                    "completion": f"{k}{eos}",
                    "kind": "judge_expected",
                }
            )
    return rows
