"""InfAlign, inference-aware alignment (Balashankar et al., ICML 2025, https://arxiv.org/abs/2412.19792): train for
the win rate of best-of-N (or worst-of-N) decoding against the reference policy by ordinary RL on a calibrated and
transformed reward, Φ_t(C(r)) (`selfalign.rewards.infalign`: the math and the registered reward `infalign`).

On when `rewards.infalign` is set in a DPO recipe (`pairs.reward: infalign` ranks by it) or a GRPO term has
`source: infalign` (its options: `rewards.infalign` updated with the term's keys). Each round starts with its
`reference` stage: m samples per training prompt from the *frozen* reference π_ref (`reference: start`, the round's
starting model M_{t-1}, or `initial`, M_0), with generation's temperature / top-p / length, scored by the base
reward r computed on that same frozen model (round_t/reference.jsonl; resumable chunks). The round's rewards then
calibrate every sample against its prompt's reference scores: the reward stage (DPO) and GRPO's reward functions
get them as `RewardContext.inputs["infalign"]`.

Where it departs from the paper: r is the base reward as the frozen reference model computes it (an internal reward
of the model, not a separately trained reward model), so r stays one fixed function through the round, also while
GRPO's policy moves; the reference set is drawn once per round (m per prompt), not per training step.
"""

from __future__ import annotations

import statistics

import torch

from selfalign.artifacts import read_jsonl, run_in_chunks, write_jsonl
from selfalign.config import ConfigError, build
from selfalign.context import chunk_seed
from selfalign.methods.base import Method
from selfalign.rewards import RewardContext, build_reward, reward_spec
from selfalign.rewards.infalign import Calibration, InfAlignConfig
from selfalign.rewards.verifier import is_correct
from selfalign.rows import generation, row_of


def _term(recipe):
    """(index, term) of the GRPO reward term with source infalign, or None."""
    return next(((k, s) for k, s in enumerate(recipe.train.grpo_rewards) if s.source == "infalign"), None)


class InfAlign(Method):
    name = "infalign"
    title = "InfAlign"
    algorithm = None  # a reward transform in front of DPO's pairs or GRPO's rewards
    before_stages = ("reference",)

    @classmethod
    def active(cls, recipe) -> bool:
        if recipe.train.algorithm == "grpo":
            return _term(recipe) is not None
        return recipe.rewards.infalign is not None

    @property
    def where(self) -> str:
        term = _term(self.recipe) if self.recipe.train.algorithm == "grpo" else None
        return f"train.grpo_rewards[{term[0]}]" if term else "rewards.infalign"

    def options(self) -> InfAlignConfig:
        """The infalign reward's options: rewards.infalign (DPO), or it updated with the GRPO term's own keys."""
        term = _term(self.recipe) if self.recipe.train.algorithm == "grpo" else None
        if term is None:
            return self.recipe.rewards.infalign
        from selfalign.trainers.reward_functions import term_config

        return term_config(term[1], self.recipe.rewards, self.where)

    def check(self) -> None:
        """The base reward: registered, scoring a sample alone, not infalign itself; its options."""
        cfg, where = self.options(), self.where
        spec = reward_spec(cfg.reward, f"{where}.reward")
        if "inputs" in spec.needs:
            raise ConfigError(f"{where}.reward: {cfg.reward} cannot be InfAlign's base reward; name the reward to "
                              "calibrate, e.g. likelihood")
        if spec.grouped:
            raise ConfigError(f"{where}.reward: {cfg.reward} scores a sample against the other samples of its prompt; "
                              "calibration needs a reward that scores a sample alone")
        self.base_config()

    # ----------------------------------------------------------------------------- the reference set

    def _source(self, t: int) -> int:
        """The round whose model is π_ref in round t."""
        return t - 1 if self.options().reference == "start" else 0

    def base_config(self):
        """The base reward's options (its dataclass), checked."""
        cfg = self.options()
        spec, where = reward_spec(cfg.reward, f"{self.where}.reward"), f"{self.where}.reward_options"
        options = build(spec.config, cfg.reward_options, where)
        if spec.check is not None:
            spec.check(options, where)
        return options

    def base_reward(self, ctx, t: int):
        """The base reward r on the frozen reference model of round t."""
        cfg = self.options()
        return build_reward(cfg.reward, self.base_config(),
                            RewardContext(ctx.store.tokenizer, policy=ctx.store.model(self._source(t)),
                                          models=ctx.store.roles(t), seed=self.recipe.seed,
                                          max_new_tokens=self.recipe.generation.max_new_tokens,
                                          where=f"{self.where}.reward"))

    def run_stage(self, ctx, t, name):
        """`reference`: m samples per training prompt of round t from π_ref, then their base reward
        (round_t/reference.jsonl: prompt_id, sample, response, finish_reason, score), both in resumable chunks."""
        cfg, g, seed = self.options(), self.recipe.generation, self.recipe.seed
        rows = ctx.methods.train_prompts(ctx, t)
        source = self._source(t)

        def sample(ci: int, chunk: list[dict]) -> list[dict]:
            out = ctx.store.sample(source, [r["prompt_text"] for r in chunk], chunk_seed(seed, t, "reference", ci),
                                   num_samples=cfg.m, temperature=g.temperature, top_p=g.top_p,
                                   max_new_tokens=g.max_new_tokens, batch_size=g.batch_size, stop=g.stop)
            return [{k: v for k, v in generation(r, k_, s).items() if k not in ("token_ids", "logprobs")}
                    for r, ss in zip(chunk, out, strict=True) for k_, s in enumerate(ss)]

        gens = run_in_chunks(rows, g.chunk_prompts, ctx.run.parts_dir(t, "reference"), sample)
        base = self.base_reward(ctx, t)

        def score(ci: int, chunk: list[dict]) -> list[dict]:
            torch.manual_seed(chunk_seed(seed, t, "reference_score", ci))
            scores = base.score([row_of(x) for x in chunk], [x["response"] for x in chunk]).scores
            return [{**x, "score": s} for x, s in zip(chunk, scores, strict=True)]

        out = run_in_chunks(gens, g.chunk_prompts * cfg.m, ctx.run.parts_dir(t, "reference_score"), score)
        path = ctx.run.round_dir(t) / "reference.jsonl"
        if ctx.main:
            write_jsonl(path, out)
        return path, reference_stats(out, cfg.m, source)

    def reward_inputs(self, ctx, t):
        """`infalign`: the round's reference scores per prompt and the base reward on the frozen reference."""
        scores: dict[str, list[float]] = {}
        for r in read_jsonl(ctx.run.round_dir(t) / "reference.jsonl"):
            if r["score"] is not None:
                scores.setdefault(str(r["prompt_id"]), []).append(r["score"])
        return {"infalign": Calibration(scores, self.base_reward(ctx, t))}


def reference_stats(rows: list[dict], m: int, source: int) -> dict:
    """Of the reference set: its size, the base reward's mean / std and unscored samples, the mean number of distinct
    scores per prompt (ties coarsen the calibration) and, with ground truth, its accuracy."""
    values = [r["score"] for r in rows if r["score"] is not None]
    by_prompt: dict = {}
    for r in rows:
        if r["score"] is not None:
            by_prompt.setdefault(r["prompt_id"], set()).add(r["score"])
    stats = {"reference_round": source, "m": m, "prompts": len({r["prompt_id"] for r in rows}), "samples": len(rows),
             "score_mean": statistics.fmean(values) if values else None,
             "score_std": statistics.pstdev(values) if len(values) > 1 else None,
             "unscored": len(rows) - len(values),
             "distinct_scores": statistics.fmean(len(v) for v in by_prompt.values()) if by_prompt else None}
    if rows and all(r.get("answer") is not None for r in rows):
        stats["sample_accuracy"] = statistics.fmean(float(is_correct(row_of(r), r["response"])) for r in rows)
    return stats
