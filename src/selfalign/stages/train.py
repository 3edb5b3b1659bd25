"""Train: the method that trains (DPO, or GRPO) makes M_t from M_{t-1}; the model (full fine-tuning) or the LoRA
adapter is saved atomically to round_t/model/ or round_t/adapter/. The trainer checkpoints every
train.checkpoint_steps steps under round_t/trainer/ (removed once the stage is recorded as done), so a killed stage
resumes from its last checkpoint (`selfalign.trainers.checkpoints`)."""

from __future__ import annotations

import gc

from selfalign import distributed
from selfalign.context import RoundContext


def run(ctx: RoundContext, t: int):
    ctx.store.release()  # the trainer loads its own models
    trainer, stats = ctx.methods.algorithm.train(ctx, t)
    if trainer is None:
        return None, stats
    lora = ctx.recipe.train.lora is not None
    out = ctx.run.round_dir(t) / ("adapter" if lora else "model")
    ctx.store.save_trained(trainer, out, with_tokenizer=not lora)
    stats = {**stats, "learning_rate": ctx.recipe.train.learning_rate, **distributed.training_setup(trainer)}
    del trainer
    gc.collect()
    return out, stats
