"""GenCLS++ (2025) applied to the model's own judge: a `judge_train` stage before round 1 that trains the policy as a
generative classifier of its responses, as SRLM's seed evaluation-fine-tuning data trains its judge.

On when the recipe has a `gencls:` section; the classifier it trains is `rewards.gencls` (its prompt, labels and
decoding; `selfalign.rewards.gencls`), which the rounds can then rank by (`pairs.reward: gencls`) — or, with the
sandbox's default template and labels 1–5, the `expected`-mode `judge`, which reads the same "|Score:" digit.

The stage, once, after seed SFT and before round 0's evaluation (round_0/judge_model/, the M_0 of the rounds):

1. labelled judgments `{prompt, response, label}` from `data` (`selfalign.data.seed.load_judge_labels`), or with
   `responses: own` the starting model's own samples (`own_samples` per prompt at `own_temperature`) of the data's
   prompts, labelled with the sandbox rubric's score (sandbox data only: the seed annotator, never used in rounds);
   the last `eval_examples` prompts' rows are held out;
2. SFT warm-up (TRL's `SFTTrainer`): the classifier prompt → its label, loss on the label only, mixed with
   `policy_data` instruction examples so the policy keeps its skill; with `sft_loss: example` (default) every
   example weighs the same in the loss, with `token` TRL's mean over tokens (where a one-token label next to
   solutions of ~25 tokens barely counts: on the sandbox the judge then stays at 0.55);
3. GRPO (TRL's `GRPOTrainer`) with the rule reward `label_reward` (1 for the right label, `uncertain_reward` for
   "uncertain", else 0), the label written directly (completions of the labels' length, no reasoning step);
4. before, after SFT and after GRPO, on the held-out rows: accuracy (argmax of the labels' likelihoods, GenCLS++'s
   perplexity-based decoding), and the within-prompt pairwise accuracy of the classifier's reward — how often, of
   two responses to one prompt with different labels, the better-labelled one scores higher (ties half);
   `top_pairwise` only compares top-labelled responses (right, on the sandbox) with the others.

Where the sources are silent (GenCLS++'s exact reward and RL algorithm are not confirmed): the reward is 0/1 and the
algorithm GRPO, both options here; the SFT phase mixes in policy data (ours: without it the 1M-parameter sandbox
model forgets how to solve, greedy accuracy 0.75 → 0.05 in a plain judge-only run).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from selfalign import models, sandbox
from selfalign.artifacts import write_dir
from selfalign.config import ConfigError, SeedSFTConfig, opt
from selfalign.data.seed import load_judge_labels, load_seed_examples
from selfalign.methods.base import Method
from selfalign.rewards import reward_config
from selfalign.rewards.gencls import (
    GenCLSReward,
    label_logprobs,
    load_examples,
    render,
    shown_label,
    shown_labels,
)


@dataclass
class JudgeTrainConfig:
    """The judge-training stage (GenCLS++): labelled judgments → SFT warm-up → GRPO with the label reward."""

    data: str = "sandbox://arith-judge"  # labelled judgments (prompt, response, label)
    max_examples: int = opt(4096, lo=1)  # rows read from `data` (with `responses: own`: prompts)
    eval_examples: int = opt(512, lo=0)  # rows (own: prompts) held out to measure the classifier
    responses: str = "data"  # "data" (as given) or "own" (the starting model's samples, sandbox data only)
    own_samples: int = opt(4, lo=1)
    own_temperature: float = opt(1.0, lo=0.0, lo_open=True)
    policy_data: str | None = None  # instruction rows mixed into the SFT warm-up (e.g. sandbox://arith)
    policy_examples: int = opt(2048, lo=1)
    sft_epochs: float = opt(2.0, lo=0.0)  # 0: no SFT warm-up
    sft_learning_rate: float = opt(3e-4, lo=0.0, lo_open=True)
    sft_batch_size: int = opt(64, lo=1)
    sft_loss: str = "example"  # "example": every example weighs the same (a label as much as a solution); "token"
    rl_epochs: float = opt(1.0, lo=0.0)  # 0: no RL
    rl_learning_rate: float = opt(1e-5, lo=0.0, lo_open=True)
    rl_batch_size: int = opt(64, lo=1)  # completions per step (prompts × num_generations)
    rl_num_generations: int = opt(8, lo=2)
    rl_temperature: float = opt(1.0, lo=0.0, lo_open=True)
    rl_beta: float = opt(0.0, lo=0.0)  # KL coefficient to the SFT model (TRL's beta)
    rl_max_examples: int = opt(2048, lo=1)  # training rows given to GRPO
    uncertain_reward: float = opt(0.0, lo=0.0, hi=1.0)


class GenCLS(Method):
    name = "gencls"
    title = "GenCLS++ (judge training)"
    section = "gencls"
    config = JudgeTrainConfig
    algorithm = None  # trains the judge before round 1; any algorithm follows
    seed_stages = ("judge_train",)

    def classifier(self):
        return reward_config("gencls", self.recipe.rewards.gencls, "rewards")

    def check(self) -> None:
        cfg = self.cfg
        if cfg.responses not in ("data", "own"):
            raise ConfigError(f"gencls.responses: {cfg.responses!r}; expected data or own")
        if cfg.responses == "own" and not cfg.data.startswith("sandbox://"):
            raise ConfigError("gencls.responses: own labels the model's samples with the sandbox rubric; it needs "
                              "sandbox data (give labelled judgments of your model's responses as a file instead)")
        if cfg.sft_loss not in ("example", "token"):
            raise ConfigError(f"gencls.sft_loss: {cfg.sft_loss!r}; expected example or token")
        if cfg.rl_batch_size % cfg.rl_num_generations:
            raise ConfigError(f"gencls.rl_batch_size: {cfg.rl_batch_size} is not a multiple of "
                              f"rl_num_generations {cfg.rl_num_generations}")
        clf = self.classifier()
        rows = load_judge_labels(cfg.data, 8, self.recipe.seed)
        for r in rows:
            if cfg.responses == "data" and r["label"] not in clf.labels:
                raise ConfigError(f"{cfg.data}: label {r['label']!r} is not one of rewards.gencls.labels "
                                  f"{clf.labels}")

    # ----------------------------------------------------------------------------- the stage

    def labelled(self, ctx, model, tokenizer) -> tuple[list[dict], list[dict]]:
        """(training rows, held-out rows) of labelled judgments, split by prompt."""
        cfg, seed = self.cfg, self.recipe.seed
        rows = load_judge_labels(cfg.data, cfg.max_examples + cfg.eval_examples, seed)
        if cfg.responses == "own":
            import torch

            from selfalign.generation import generate

            prompts = list(dict.fromkeys(r["prompt"] for r in rows))
            torch.manual_seed(seed)
            g = self.recipe.generation
            out = generate(model, tokenizer, prompts, num_samples=cfg.own_samples, temperature=cfg.own_temperature,
                           top_p=1.0, max_new_tokens=g.max_new_tokens, batch_size=g.batch_size, with_logprobs=False)
            rows = [{"prompt": p, "response": s.text, "label": str(sandbox.score(p, s.text))}
                    for p, ss in zip(prompts, out, strict=True) for s in ss]
        prompts = list(dict.fromkeys(r["prompt"] for r in rows))
        held = set(prompts[len(prompts) - min(cfg.eval_examples, len(prompts) - 1):]) if cfg.eval_examples else set()
        return [r for r in rows if r["prompt"] not in held], [r for r in rows if r["prompt"] in held]

    def run_stage(self, ctx, t, name):
        import torch

        from selfalign.trainers.gencls import train_label_grpo
        from selfalign.trainers.sft import train_sft

        cfg, clf, store, seed = self.cfg, self.classifier(), ctx.store, self.recipe.seed
        start = ctx.run.round_dir(0) / "model" if store.has_seed_sft else models.base_model_path(self.recipe.model)
        parts = ctx.run.parts_dir(0, "judge_train")
        tokenizer = store.tokenizer
        model = models.load_model(str(start), self.recipe.model, store.device)
        examples = load_examples(clf, seed)
        train, held = self.labelled(ctx, model.eval(), tokenizer)
        stats = {"examples": len(train), "held_out": len(held),
                 "labels": {k: sum(r["label"] == k for r in train) for k in clf.labels}, "before": None}
        stats["before"] = classifier_quality(model, tokenizer, clf, held, examples)
        rendered = [{"prompt": render(clf, r["prompt"], r["response"], examples),
                     "target": shown_label(clf, r["label"])} for r in train]
        sft_dir = parts / "sft_model"
        if cfg.sft_epochs > 0:
            if not sft_dir.exists():
                rows = [{"prompt": r["prompt"], "completion": r["target"]} for r in rendered]
                if cfg.policy_data:
                    rows += load_seed_examples(cfg.policy_data, cfg.policy_examples, seed)
                random.Random(seed).shuffle(rows)
                sft = SeedSFTConfig(enabled=True, epochs=cfg.sft_epochs, learning_rate=cfg.sft_learning_rate,
                                    batch_size=cfg.sft_batch_size)
                trainer = train_sft(model, tokenizer, rows, sft, parts / "sft", seed,
                                    checkpoint_steps=self.recipe.train.checkpoint_steps,
                                    lr_key="gencls.sft_learning_rate", per_example=cfg.sft_loss == "example")
                write_dir(sft_dir, lambda tmp: (trainer.save_model(str(tmp)), tokenizer.save_pretrained(str(tmp))))
                del trainer
            model = models.load_model(str(sft_dir), self.recipe.model, store.device)
            stats["after_sft"] = classifier_quality(model, tokenizer, clf, held, examples)
        out = ctx.run.round_dir(0) / "judge_model"
        if cfg.rl_epochs > 0:
            rng = random.Random(seed + 1)
            rl_rows = rng.sample(rendered, min(cfg.rl_max_examples, len(rendered)))
            trainer = train_label_grpo(model, tokenizer, rl_rows, shown_labels(clf), cfg, parts / "rl", seed,
                                       checkpoint_steps=self.recipe.train.checkpoint_steps)
            store.save_trained(trainer, out, with_tokenizer=True)
            model = trainer.model
            rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
            stats["rl_reward_first_last"] = [rewards[0], rewards[-1]] if rewards else None
            del trainer
            stats["after_rl"] = classifier_quality(model, tokenizer, clf, held, examples)
        else:
            write_dir(out, lambda tmp: (model.save_pretrained(str(tmp)), tokenizer.save_pretrained(str(tmp))))
        store.release()
        torch.manual_seed(seed)
        return out, stats


def classifier_quality(model, tokenizer, clf, rows: list[dict], examples: list[dict]) -> dict | None:
    """On labelled rows: accuracy of the labels' likelihood argmax, and the within-prompt pairwise accuracy of the
    classifier's reward over pairs with different label values (`pairwise`) and top label vs the rest
    (`top_pairwise`); None without rows."""
    if not rows:
        return None
    model.eval()
    labels = shown_labels(clf)
    prompts = [render(clf, r["prompt"], r["response"], examples) for r in rows]
    picked = label_logprobs(model, tokenizer, prompts, labels, clf.batch_size).argmax(-1).tolist()
    reward = GenCLSReward(model, tokenizer, clf, examples=examples)
    scores = reward.score([{"prompt": r["prompt"]} for r in rows], [r["response"] for r in rows]).scores
    value = dict(zip(clf.labels, reward.values, strict=False))
    top = max(value.values())
    by_prompt: dict[str, list[tuple[float, float]]] = {}
    for r, s in zip(rows, scores, strict=True):
        by_prompt.setdefault(r["prompt"], []).append((s, value[r["label"]]))
    right = [labels[i] == shown_label(clf, r["label"]) for i, r in zip(picked, rows, strict=True)]
    return {"accuracy": statistics.fmean(right),
            "pairwise": pairwise(by_prompt, lambda a, b: a > b),
            "top_pairwise": pairwise(by_prompt, lambda a, b: a == top and b < top)}


def pairwise(groups: dict[str, list[tuple[float, float]]], better) -> float | None:
    """P(score of x > score of y) over the pairs (x, y) of one group with better(value x, value y); ties half."""
    wins = n = 0.0
    for group in groups.values():
        for sx, vx in group:
            for sy, vy in group:
                if better(vx, vy):
                    n += 1
                    wins += 1.0 if sx > sy else 0.5 if sx == sy else 0.0
    return wins / n if n else None
