"""Seed SFT (optional, once before round 1, as SRLM and CREAM start): TRL's `SFTTrainer` on seed instruction data
and judge-training examples, from the weights at model.path; writes round_0/model/."""

from __future__ import annotations

from selfalign.context import RoundContext
from selfalign.data.seed import load_seed_examples


def run(ctx: RoundContext, t: int):
    from selfalign.trainers.sft import train_sft

    cfg, store = ctx.recipe.seed_sft, ctx.store
    examples = []
    for source in (cfg.data, cfg.judge_data):
        if source:
            examples += load_seed_examples(source, cfg.max_examples, ctx.recipe.seed)
    model = store.pretrained()
    out = ctx.run.round_dir(0) / "model"
    trainer = train_sft(model, store.tokenizer, examples, cfg, ctx.run.trainer_dir(0), ctx.recipe.seed,
                        checkpoint_steps=ctx.recipe.train.checkpoint_steps)
    store.save_trained(trainer, out, with_tokenizer=True)
    store.release()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return out, {"examples": len(examples), "loss": sum(losses) / max(len(losses), 1)}
