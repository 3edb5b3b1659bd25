"""The stages of a round, one module each; each is `run(ctx, t) -> (artifact path or None, statistics)`."""

from __future__ import annotations

from selfalign.stages import evaluate, generate, pairs, reward, seed_sft, train

STAGES = {
    "seed_sft": seed_sft.run,
    "generate": generate.run,
    "reward": reward.run,
    "pairs": pairs.run,
    "train": train.run,
    "eval": evaluate.run,
}
