"""The round loop: seed SFT (optional) → round 0 eval → rounds of generate → reward → pairs → train → eval.

    selfalign run recipes/quickstart.yaml

Round t (t ≥ 1) starts from M_{t-1}, samples and rewards with it, trains M_t, evaluates M_t. With
train.algorithm grpo a round is train → eval: GRPO samples and rewards online, inside its train stage
(trainers/grpo.py), which also writes the rollouts it sampled. Every stage reads its inputs from and
writes its outputs to the run directory; a finished stage (listed in manifest.json) is never
recomputed, and the long stages write resumable chunks, so the same command after a kill continues
where the run stopped.
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import time
from pathlib import Path

import torch
import yaml

from selfalign import distributed, models
from selfalign.artifacts import (
    RunDir,
    atomic_write_text,
    read_json,
    read_jsonl,
    replace_dir,
    run_in_chunks,
    write_json,
    write_jsonl,
)
from selfalign.config import ConfigError, Recipe, dump_recipe, to_dict
from selfalign.data.answer_pairs import answer_frequency_pairs
from selfalign.data.pairs import build_pairs
from selfalign.data.prompts import load_prompts, render_prompt
from selfalign.data.scir_pairs import agreement, candidate_pairs, implicit_preference
from selfalign.generation import generate
from selfalign.rewards import build_rewards
from selfalign.rewards.consistency import CONSISTENCY
from selfalign.rewards.judge import SCORES, JudgeReward
from selfalign.rewards.likelihood import LikelihoodReward
from selfalign.rewards.pairwise_judge import PairwiseJudge
from selfalign.rewards.preference import empirical_distribution, preference_strength
from selfalign.rewards.verifier import is_correct
from selfalign.tracking import Tracker

log = logging.getLogger(__name__)

ROUND_STAGES = ("generate", "reward", "pairs", "train", "eval")
GRPO_STAGES = ("train", "eval")  # GRPO samples and rewards online, inside its train stage


def chunk_seed(seed: int, t: int, stage: str, chunk: int) -> int:
    return (seed * 1_000_003 + t * 10_007 + sum(map(ord, stage)) * 101 + chunk) % (2**31)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def peak_memory() -> dict:
    """This process's peak resident memory since it started (MB), and its GPU's peak allocation when it has one;
    recorded per process with every finished stage."""
    import resource

    info = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        info["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return info


def judge_pairwise_accuracy(groups: list[list[tuple[float | None, bool]]]) -> tuple[float | None, int]:
    """P(score(right) > score(wrong)) over (right, wrong) sample pairs of the same prompt; ties count half."""
    wins, n = 0.0, 0
    for samples in groups:
        right = [s for s, ok in samples if ok and s is not None]
        wrong = [s for s, ok in samples if not ok and s is not None]
        for r in right:
            for w in wrong:
                wins += 1.0 if r > w else 0.5 if r == w else 0.0
                n += 1
    return (wins / n if n else None), n


class Engine:
    def __init__(self, recipe: Recipe, output_dir: str | Path):
        self.recipe = recipe
        self.run = RunDir(output_dir)
        self._models: dict[int, torch.nn.Module] = {}
        self._vllm: tuple[int, object] | None = None  # (round, vllm.LLM) with generation.backend vllm
        self._tokenizer = None
        self.device = models.default_device()
        self.main = distributed.is_main()  # under `accelerate launch`, only the main process writes the run dir

    # ----------------------------------------------------------------------------- set-up

    def _check_recipe(self) -> None:
        """A resumed run must use the recipe it started with (rounds and tracking may change)."""
        current = to_dict(self.recipe)
        if self.run.recipe_path.exists():
            saved = yaml.safe_load(self.run.recipe_path.read_text()) or {}
            diffs = [k for k in current if k not in ("rounds", "tracking") and current[k] != saved.get(k)]
            if diffs:
                raise ConfigError(f"{self.run.root}: this run directory was started with a different recipe "
                                  f"(differs in: {', '.join(diffs)}); use another --output-dir")
        if self.main:
            atomic_write_text(self.run.recipe_path, dump_recipe(self.recipe))

    def _check_launch(self) -> None:
        """What this launch cannot do, said in one line before any stage runs."""
        from selfalign.generation_vllm import check_available

        check_available(self.recipe, distributed.world_size())
        if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not torch.cuda.is_available():
            log.warning("FSDP was asked for, but accelerate enables it on GPUs only: this CPU launch trains with DDP")
        if self.recipe.cdpo is not None and distributed.zero_stage() == 3:
            raise ConfigError("cdpo: its contrast adapters are trained and then score tokens in the same stage, which "
                              "ZeRO-3's partitioned weights do not allow; launch with deepspeed_zero2.yaml or "
                              "multi_gpu.yaml (the adapters and the LoRA policy are small)")

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = models.load_tokenizer(self.base_path, self.recipe.model)
        return self._tokenizer

    @property
    def base_path(self) -> str:
        path = self.run.root / "round_0" / "model"
        return str(path) if path.exists() else models.base_model_path(self.recipe.model)

    def model(self, t: int) -> torch.nn.Module:
        """M_t in eval mode, cached; older models are dropped unless a reward needs them."""
        if t not in self._models:
            self._release_vllm()  # scoring and training need the GPU memory vLLM holds
            m = models.load_round_model(self.recipe.model, self.run.root, t, self.device)
            m.eval()
            self._models[t] = m
        return self._models[t]

    def _release_models(self) -> None:
        self._models.clear()
        self._release_vllm()
        gc.collect()

    def _release_vllm(self) -> None:
        if self._vllm is not None:
            from selfalign.generation_vllm import release_engine

            release_engine(self._vllm[1])
            self._vllm = None

    def _vllm_engine(self, t: int):
        """A vLLM engine on M_t, kept while consecutive stages sample from M_t (round t's eval, round t+1's
        generate). LoRA rounds are merged into whole weights under .vllm/ first (main process)."""
        from selfalign.generation_vllm import load_engine

        if self._vllm is not None and self._vllm[0] == t:
            return self._vllm[1]
        self._release_models()
        path, adapters = models.round_weights(self.recipe.model, self.run.root, t)
        if adapters:
            merged = self.run.root / ".vllm" / f"round_{t}"
            if self.main and not merged.exists():
                tmp = merged.with_name(f".round_{t}.tmp")
                models.load_round_model(self.recipe.model, self.run.root, t).save_pretrained(str(tmp))
                self.tokenizer.save_pretrained(str(tmp))
                replace_dir(tmp, merged)
            distributed.barrier()
            path = str(merged)
        self._vllm = (t, load_engine(path, self.recipe, distributed.world_size()))
        return self._vllm[1]

    def _sample(self, t: int, prompts: list[str], seed: int, *, batch_size: int, **kwargs):
        """Responses of M_t with the recipe's backend; `seed` makes them a function of the chunk alone."""
        if self.recipe.generation.backend == "vllm":
            from selfalign.generation_vllm import generate_vllm

            return generate_vllm(self._vllm_engine(t), self.tokenizer, prompts, seed=seed, **kwargs)
        torch.manual_seed(seed)
        return generate(self.model(t), self.tokenizer, prompts, batch_size=batch_size, **kwargs)

    def _prompt_rows(self, rows: list[dict]) -> list[dict]:
        for r in rows:
            r["prompt_text"] = render_prompt(self.tokenizer, r, self.recipe.prompts.chat_template)
        return rows

    def train_prompts(self, t: int) -> list[dict]:
        p = self.recipe.prompts
        ps = load_prompts(p.source, split=p.split, field=p.field, answer_field=p.answer_field,
                          on_bad_row=p.on_bad_row, start=(t - 1) * p.train_per_round, limit=p.train_per_round)
        return self._prompt_rows(ps.rows)

    def eval_prompts(self) -> list[dict]:
        p = self.recipe.prompts
        if p.eval_source is None and p.source.startswith("sandbox://"):
            ps = load_prompts(p.source, sandbox_split="eval", limit=p.eval_prompts)
        elif p.eval_source is None:
            # Held out: the last eval_prompts rows of the source, which train slices never reach.
            ps = load_prompts(p.source, split=p.split, field=p.field, answer_field=p.answer_field,
                              on_bad_row=p.on_bad_row)
            if len(ps.rows) < p.eval_prompts + self.recipe.rounds * p.train_per_round:
                raise ConfigError(f"prompts.source: {len(ps.rows)} rows cannot hold {self.recipe.rounds} rounds × "
                                  f"{p.train_per_round} train prompts plus {p.eval_prompts} held-out eval prompts; "
                                  "set prompts.eval_source or lower the counts")
            ps.rows = ps.rows[len(ps.rows) - p.eval_prompts:]
        else:
            ps = load_prompts(p.eval_source, split=p.split, field=p.field, answer_field=p.answer_field,
                              on_bad_row=p.on_bad_row, sandbox_split="eval", limit=p.eval_prompts)
        return self._prompt_rows(ps.rows)

    # ----------------------------------------------------------------------------- the loop

    @property
    def round_stages(self) -> tuple[str, ...]:
        return GRPO_STAGES if self.recipe.train.algorithm == "grpo" else ROUND_STAGES

    def run_all(self) -> dict:
        self._check_recipe()
        self._check_launch()
        self.tracker = Tracker(self.run, self.recipe.tracking, to_dict(self.recipe), is_main=self.main)
        try:
            if self.recipe.seed_sft.enabled:
                self._stage(0, "seed_sft", self.seed_sft)
            self._stage(0, "eval", self.evaluate)
            self._report(0)
            for t in range(1, self.recipe.rounds + 1):
                for stage in self.round_stages:
                    self._stage(t, stage, getattr(self, stage if stage != "eval" else "evaluate"))
                self._report(t)
        finally:
            self.tracker.finish()
        distributed.barrier()  # the main process has written the last round's summary
        return read_json(self.run.summary_path)

    def _stage(self, t: int, stage: str, fn) -> None:
        if self.run.is_done(t, stage):
            self.run.check_artifact(t, stage)
            return
        log.info("round %d: %s", t, stage)
        start = time.time()
        artifact, info = fn(t)
        memory = distributed.gather(peak_memory())  # also a barrier: every process is done with the stage ...
        if self.main:
            per_process = {k: [m.get(k) for m in memory] for k in memory[0]}
            self.run.mark_done(t, stage, artifact, time.time() - start, **info, **per_process)
        distributed.barrier()  # ... and the manifest lists it before any process moves on
        if not self.main:
            self.run.reload()

    # ----------------------------------------------------------------------------- stages

    def seed_sft(self, t: int):
        from selfalign.data.seed import load_seed_examples
        from selfalign.trainers.sft import train_sft

        cfg = self.recipe.seed_sft
        examples = []
        for source in (cfg.data, cfg.judge_data):
            if source:
                examples += load_seed_examples(source, cfg.max_examples, self.recipe.seed)
        model = models.load_model(models.base_model_path(self.recipe.model), self.recipe.model, self.device)
        out = self.run.round_dir(0) / "model"
        trainer = train_sft(model, self.tokenizer, examples, cfg, self.run.round_dir(0) / "trainer", self.recipe.seed)
        self._save(trainer, out, with_tokenizer=True)
        self._models.clear()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return out, {"examples": len(examples), "loss": sum(losses) / max(len(losses), 1)}

    def generate(self, t: int):
        g = self.recipe.generation
        rows = self.train_prompts(t)

        def compute(ci: int, chunk: list[dict]) -> list[dict]:
            samples = self._sample(t - 1, [r["prompt_text"] for r in chunk], chunk_seed(self.recipe.seed, t,
                                   "generate", ci), num_samples=g.samples_per_prompt, temperature=g.temperature,
                                   top_p=g.top_p, max_new_tokens=g.max_new_tokens, batch_size=g.batch_size,
                                   stop=g.stop)
            return [{"prompt_id": r["id"], "prompt": r["prompt"], "prompt_text": r["prompt_text"],
                     "answer": r.get("answer"), "sample": k, "response": s.text, "token_ids": s.token_ids,
                     "logprobs": [round(x, 5) for x in s.logprobs], "finish_reason": s.finish_reason}
                    for r, ss in zip(chunk, samples, strict=True) for k, s in enumerate(ss)]

        out_rows = run_in_chunks(rows, g.chunk_prompts, self.run.parts_dir(t, "generate"), compute)
        path = self.run.round_dir(t) / "generations.jsonl"
        if self.main:
            write_jsonl(path, out_rows)
        return path, {"prompts": len(rows), "samples": len(out_rows)}

    def _base(self):
        """The weights at model.path, before seed SFT (CREAM's M_0)."""
        if not self.run.is_done(0, "seed_sft"):
            return self.model(0)
        if -1 not in self._models:
            self._models[-1] = models.load_model(models.base_model_path(self.recipe.model), self.recipe.model,
                                                 self.device).eval()
        return self._models[-1]

    def _previous(self, t: int):
        """The model before round t's scoring policy M_{t-1}: M_{t-2}, the pre-SFT base, or None."""
        if t >= 2:
            return self.model(t - 2)
        return self._base() if self.run.is_done(0, "seed_sft") else None

    def _reference(self, t: int):
        cfg = self.recipe.rewards.implicit
        if cfg is None:
            return None
        if cfg.reference == "previous":
            return self._previous(t) or self.model(t - 1)
        return self._base() if cfg.reference == "base" else self.model(0)

    def _previous_ranking(self, t: int, rows: list[dict], responses: list[str]) -> list[float | None] | None:
        """CREAM: the previous model's scores of the same samples, by the same reward as pairs.reward.

        When the previous model is the implicit reward's own reference (r ≡ 0), it ranks by its
        length-normalised likelihood instead, as CREAM's code does at the first iteration.
        """
        prev = self._previous(t)
        if prev is None:
            return None
        name = self.recipe.pairs.reward
        if name == "implicit" and prev is self._reference(t):
            return LikelihoodReward(prev, self.tokenizer, True, self.recipe.rewards.implicit.batch_size).score(
                rows, responses).scores
        return build_rewards(self.recipe.rewards, prev, self.tokenizer, self._reference(t),
                             self.recipe.seed)[name].score(rows, responses).scores

    def reward(self, t: int):
        gens = read_jsonl(self.run.round_dir(t) / "generations.jsonl")
        rewards = build_rewards(self.recipe.rewards, self.model(t - 1), self.tokenizer, self._reference(t),
                                self.recipe.seed)
        k = self.recipe.generation.samples_per_prompt

        def compute(ci: int, chunk: list[dict]) -> list[dict]:
            torch.manual_seed(chunk_seed(self.recipe.seed, t, "reward", ci))
            rows = [{"id": g["prompt_id"], "prompt": g["prompt"], "prompt_text": g["prompt_text"],
                     "answer": g.get("answer")} for g in chunk]
            responses = [g["response"] for g in chunk]
            out = [{"prompt_id": g["prompt_id"], "sample": g["sample"], "scores": {}, "details": {}} for g in chunk]
            for name, rm in rewards.items():
                result = rm.score(rows, responses)
                for o, s, d in zip(out, result.scores, result.details or [{}] * len(out), strict=True):
                    o["scores"][name] = s
                    if d:
                        o["details"][name] = d
            if self.recipe.consistency is not None:
                previous = self._previous_ranking(t, rows, responses)
                for o, s in zip(out, previous or [None] * len(out), strict=True):
                    o["scores"]["previous"] = s
            return out

        chunk = self.recipe.generation.chunk_prompts * k
        out_rows = run_in_chunks(gens, chunk, self.run.parts_dir(t, "reward"), compute)
        path = self.run.round_dir(t) / "rewards.jsonl"
        if self.main:
            write_jsonl(path, out_rows)
        return path, self._reward_stats(gens, out_rows)

    def _reward_stats(self, gens: list[dict], rewards: list[dict]) -> dict:
        stats: dict = {}
        for name in self.recipe.rewards.enabled():
            values = [r["scores"][name] for r in rewards if r["scores"].get(name) is not None]
            stats[f"{name}_mean"], stats[f"{name}_std"] = _mean_std(values)
            stats[f"{name}_unscored"] = len(rewards) - len(values)
        if self.recipe.rewards.judge is not None and self.recipe.rewards.judge.mode == "generate":
            stats["judge_parse_failures"] = sum(r["details"].get("judge", {}).get("parse_failures", 0)
                                                for r in rewards)
        src = self.recipe.pairs.reward
        stats["mean"], stats["std"] = stats.get(f"{src}_mean"), stats.get(f"{src}_std")
        if self.recipe.rewards.judge is not None and all(g.get("answer") is not None for g in gens):
            # How well the judge separates right from wrong samples (ground truth used only to measure).
            groups: dict = {}
            for g, r in zip(gens, rewards, strict=True):
                groups.setdefault(g["prompt_id"], []).append(
                    (r["scores"].get("judge"), is_correct({"prompt": g["prompt"], "answer": g["answer"]},
                                                           g["response"])))
            stats["judge_pairwise_accuracy"], stats["judge_pairs"] = judge_pairwise_accuracy(list(groups.values()))
            flat = [ok for grp in groups.values() for _, ok in grp]
            stats["sample_accuracy"] = sum(flat) / len(flat)
        return stats

    def pairs(self, t: int):
        from selfalign.rewards.treg import add_treg_rewards
        from selfalign.trainers.token_dpo import check_token_columns

        gens = read_jsonl(self.run.round_dir(t) / "generations.jsonl")
        rewards = read_jsonl(self.run.round_dir(t) / "rewards.jsonl")
        groups: dict[str, dict] = {}
        for g, r in zip(gens, rewards, strict=True):
            grp = groups.setdefault(g["prompt_id"], {"row": {"id": g["prompt_id"], "prompt_text": g["prompt_text"],
                                                             "answer": g.get("answer"), "prompt": g["prompt"]},
                                                     "samples": []})
            grp["samples"].append({"response": g["response"], "scores": r["scores"], "details": r["details"]})
        p = self.recipe.pairs
        if self.recipe.scir is not None:
            pairs, info = self._scir_pairs(t, groups)
            if self.recipe.consistency is not None:
                info.update(self._consistency_labels(groups, pairs))
        elif self.recipe.cdpo is not None:
            pairs, info, grades = answer_frequency_pairs(list(groups.values()), self.recipe.cdpo.grading)
        else:
            pairs, dropped = build_pairs(list(groups.values()), p.reward, p.min_margin, p.rule, p.length_control,
                                         p.max_pairs_per_prompt)
            info = {"kept": len(pairs), "dropped_ties": dropped}
            if self.recipe.consistency is not None:
                info.update(self._consistency_labels(groups, pairs))
            if p.label == "judge_strength":
                info.update(self._judge_strength_labels(groups, pairs))
        trained = [q for q in pairs if q.get("weight", 1.0) > 0]
        if trained and all(grp["row"]["answer"] is not None for grp in groups.values()):
            rows = {pid: grp["row"] for pid, grp in groups.items()}
            right = [(is_correct(rows[q["prompt_id"]], q["chosen"]), is_correct(rows[q["prompt_id"]], q["rejected"]))
                     for q in trained]
            info["chosen_correct"] = sum(c for c, _ in right) / len(right)
            info["rejected_correct"] = sum(r for _, r in right) / len(right)
        if pairs:
            info["chosen_chars"] = statistics.fmean(len(q["chosen"]) for q in trained) if trained else None
            info["rejected_chars"] = statistics.fmean(len(q["rejected"]) for q in trained) if trained else None
        if pairs and self.recipe.cdpo is not None:
            info.update(self._critical_token_weights(t, groups, grades, pairs))
        if pairs and self.recipe.treg is not None:
            info.update(add_treg_rewards(self.model(t - 1), self.tokenizer, pairs,
                                         [groups[q["prompt_id"]]["row"]["prompt"] for q in pairs], self.recipe.treg,
                                         self.recipe.prompts.chat_template, self.run.parts_dir(t, "pairs") / "treg",
                                         self.recipe.generation.chunk_prompts))
        check_token_columns(self.tokenizer, pairs, f"round {t} pairs")  # never train on shifted token values
        path = self.run.round_dir(t) / "pairs.jsonl"
        if self.main:
            write_jsonl(path, pairs)
        return path, info

    def _critical_token_weights(self, t: int, groups: dict[str, dict], grades: dict, pairs: list[dict]) -> dict:
        """cDPO: positive / negative adapters on a fresh copy of M_{t-1} (the only one in memory), rejected tokens
        weighted by 1 − s_t."""
        from selfalign.rewards.critical import add_critical_token_weights

        self._release_models()
        base = models.load_round_model(self.recipe.model, self.run.root, t - 1, self.device)
        info = add_critical_token_weights(base, self.tokenizer, groups, grades, pairs, self.recipe.cdpo,
                                          self.run.round_dir(t) / "cdpo", self.run.parts_dir(t, "pairs") / "critical",
                                          self.recipe.seed + t, self.recipe.generation.chunk_prompts)
        del base
        gc.collect()
        return info

    def _judge_distribution(self, sample: dict) -> torch.Tensor | None:
        """The judge's score distribution for one sample: softmax (expected mode) or the parsed scores' shares."""
        detail = sample["details"].get("judge", {})
        if "score_probs" in detail:
            return torch.tensor(detail["score_probs"], dtype=torch.float64)
        parsed = [s for s in detail.get("parsed", []) if s is not None]
        return empirical_distribution(parsed, SCORES) if parsed else None

    def _judge_strength_labels(self, groups: dict[str, dict], pairs: list[dict]) -> dict:
        """OSP: each pair's label = the judge's P(chosen ≻ rejected) from the two samples' score distributions."""
        missing = 0
        for q in pairs:
            samples = groups[q["prompt_id"]]["samples"]
            pc, pr = (self._judge_distribution(samples[q[k]]) for k in ("chosen_sample", "rejected_sample"))
            if pc is None or pr is None:
                missing += 1  # no parsed judgment: the pair keeps the hard label
                continue
            q["label"] = float(preference_strength(pc, pr))
        labels = [q["label"] for q in pairs if "label" in q]
        return {"label_mean": statistics.fmean(labels) if labels else None, "label_missing": missing}

    def _scir_pairs(self, t: int, groups: dict[str, dict]) -> tuple[list[dict], dict]:
        """SCIR: every candidate pair, P_J and P_I from the round-start model, DPO weight 1 where they agree."""
        cfg, judge_cfg = self.recipe.scir, self.recipe.rewards.judge
        cands = []
        for pid, grp in groups.items():  # candidates by pairs.reward: largest gaps first, unscored samples left out
            ranked = [s["scores"].get(self.recipe.pairs.reward) for s in grp["samples"]]
            ranked = [None if s["scores"].get("implicit") is None else x for s, x in zip(grp["samples"], ranked,
                                                                                        strict=True)]
            cands += [(pid, i, j) for i, j in candidate_pairs(ranked, self.recipe.pairs.max_pairs_per_prompt)]
        if not cands:
            return [], {"candidates": 0, "kept": 0}
        rows = [groups[pid]["row"] for pid, _, _ in cands]
        y1 = [groups[pid]["samples"][i]["response"] for pid, i, _ in cands]
        y2 = [groups[pid]["samples"][j]["response"] for pid, _, j in cands]
        r1 = [groups[pid]["samples"][i]["scores"]["implicit"] for pid, i, _ in cands]
        r2 = [groups[pid]["samples"][j]["scores"]["implicit"] for pid, _, j in cands]
        if cfg.judge_format == "pointwise":
            judge = JudgeReward(None, self.tokenizer, judge_cfg)
            j1, j2 = judge.judge_prompts(rows, y1, expected=True), judge.judge_prompts(rows, y2, expected=True)
            p_judge = [float(preference_strength(self._judge_distribution(groups[pid]["samples"][i]),
                                                 self._judge_distribution(groups[pid]["samples"][j])))
                       for pid, i, j in cands]
        else:
            judge = PairwiseJudge(self.tokenizer, cfg.pairwise_template, cfg.options)
            j1, j2 = judge.prompts(rows, y1, y2), judge.prompts(rows, y2, y1)
            p_judge = judge.probability(self.model(t - 1), rows, y1, y2, cfg.batch_size).tolist()
        p_implicit = [implicit_preference(a, b) for a, b in zip(r1, r2, strict=True)]
        pairs, agreed = [], 0
        for k, (pid, i, j) in enumerate(cands):
            p_impl = p_implicit[k]
            side = agreement(p_judge[k], p_impl, cfg.margin)
            agreed += side != 0
            if side == 0 and cfg.regularize == "agreed":
                continue
            swap = side == -1  # both prefer y2: it becomes the chosen response
            a, b = (j, i) if swap else (i, j)
            pj = 1 - p_judge[k] if swap else p_judge[k]
            pairs.append({
                "prompt_id": pid, "prompt": rows[k]["prompt_text"],
                "chosen": groups[pid]["samples"][a]["response"], "rejected": groups[pid]["samples"][b]["response"],
                "chosen_sample": a, "rejected_sample": b,
                "label": pj if self.recipe.pairs.label == "judge_strength" else 1.0, "weight": float(side != 0),
                "judge_1": j2[k] if swap else j1[k], "judge_2": j1[k] if swap else j2[k],
                "reward0_chosen": r2[k] if swap else r1[k], "reward0_rejected": r1[k] if swap else r2[k],
                "p_judge": pj, "p_implicit": 1 - p_impl if swap else p_impl,
            })
        gap = statistics.fmean(abs(a - b) for a, b in zip(p_judge, p_implicit, strict=True))
        return pairs, {"candidates": len(cands), "kept": len(pairs), "agreed": agreed,
                       "agreement_rate": agreed / len(cands), "mean_abs_disagreement": gap}

    def _consistency_labels(self, groups: dict[str, dict], pairs: list[dict]) -> dict:
        """The ranking consistency (CREAM) per prompt and on average; unless consistency.label is false, it becomes
        each pair's soft label: dataset C (avg) or c_j (dyn)."""
        cfg, name = self.recipe.consistency, self.recipe.pairs.reward
        per_prompt = {}
        for pid, grp in groups.items():
            both = [(s["scores"][name], s["scores"].get("previous")) for s in grp["samples"]]
            both = [(a, b) for a, b in both if a is not None and b is not None]
            if len(both) >= 2:
                per_prompt[pid] = CONSISTENCY[cfg.method]([a for a, _ in both], [b for _, b in both])
        if not per_prompt:
            log.warning("no previous ranking to compare with (round 1 without seed SFT): labels stay 1.0")
            return {"consistency": None}
        dataset_c = statistics.fmean(per_prompt.values())
        for p in pairs:
            p["consistency"] = per_prompt.get(p["prompt_id"])
            if cfg.label:
                p["label"] = dataset_c if cfg.variant == "avg" or p["consistency"] is None else p["consistency"]
        return {"consistency": dataset_c, "consistency_std": statistics.pstdev(per_prompt.values())}

    def train(self, t: int):
        if self.recipe.train.algorithm == "grpo":
            return self.train_grpo(t)
        from selfalign.trainers.dpo import dpo_config, train_dpo, train_stats
        from selfalign.trainers.scir import SCIRTrainer
        from selfalign.trainers.soft_dpo import SoftLabelDPOTrainer
        from selfalign.trainers.token_dpo import TOKEN_COLUMNS, TokenWeightedDPOTrainer

        pairs = read_jsonl(self.run.round_dir(t) / "pairs.jsonl")
        if not pairs:
            log.warning("round %d: no preference pairs; the model is carried over unchanged", t)
            return None, {"skipped": True}
        cfg = self.recipe.train
        self._release_models()
        out_dir, seed = self.run.round_dir(t) / "trainer", self.recipe.seed + t
        # Full fine-tuning: the trainer's arguments come first, so that under ZeRO-3 the policy and the reference
        # are partitioned as they load (zero.Init). LoRA merges the earlier rounds' adapters into whole weights.
        args = None if cfg.lora else dpo_config(cfg, out_dir, seed)
        policy = models.load_round_model(self.recipe.model, self.run.root, t - 1, self.device)
        ref = None if cfg.lora else models.load_round_model(self.recipe.model, self.run.root, t - 1, self.device)
        soft = any("label" in p or "weight" in p for p in pairs)
        extra = ("judge_1", "judge_2", "reward0_chosen", "reward0_rejected") if self.recipe.scir else ()
        rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"],
                 **({"label": p.get("label", 1.0), "weight": p.get("weight", 1.0)} if soft else {}),
                 **{k: p[k] for k in extra}, **{k: p[k] for k in TOKEN_COLUMNS if k in p}} for p in pairs]
        trainer_cls, kwargs = (SoftLabelDPOTrainer if soft else None), None
        if self.recipe.scir is not None:
            trainer_cls, kwargs = SCIRTrainer, self._scir_trainer_kwargs(pairs[0])
        if self.recipe.treg is not None or self.recipe.cdpo is not None:
            trainer_cls = TokenWeightedDPOTrainer
            kwargs = {"reduction": self.recipe.cdpo.reduction if self.recipe.cdpo else "sum",
                      "treg_alpha": self.recipe.treg.alpha if self.recipe.treg else 0.0}
        trainer = train_dpo(policy, self.tokenizer, rows, cfg, out_dir, seed, ref_model=ref, trainer_cls=trainer_cls,
                            trainer_kwargs=kwargs, args=args)
        out = self.run.round_dir(t) / ("adapter" if cfg.lora else "model")
        self._save(trainer, out, with_tokenizer=not cfg.lora)
        stats = {**train_stats(trainer.state.log_history), **distributed.training_setup(trainer)}
        del trainer, policy, ref
        gc.collect()
        return out, stats

    def train_grpo(self, t: int):
        """GRPO from M_{t-1} on the round's prompts, sampling and rewarding online; writes the model (or adapter)
        as DPO does, plus rollouts.jsonl: every sampled completion with its rewards."""
        from selfalign.trainers.grpo import grpo_train_stats, rollout_stats, train_grpo

        rows = self.train_prompts(t)
        self._release_models()
        policy = models.load_round_model(self.recipe.model, self.run.root, t - 1, self.device)
        trainer = train_grpo(policy, self.tokenizer, rows, self.recipe, self.run.round_dir(t) / "trainer",
                             self.recipe.seed + t)
        if self.main:
            write_jsonl(self.run.round_dir(t) / "rollouts.jsonl", trainer.rollouts)
        out = self.run.round_dir(t) / ("adapter" if self.recipe.train.lora else "model")
        self._save(trainer, out, with_tokenizer=not self.recipe.train.lora)
        stats = {**grpo_train_stats(trainer.state.log_history), **rollout_stats(trainer.rollouts),
                 **distributed.training_setup(trainer)}
        del trainer, policy
        gc.collect()
        return out, stats

    def _save(self, trainer, out: Path, with_tokenizer: bool) -> None:
        """The trained model (or adapter) to `out`, atomically. Every process calls the trainer's save (under
        ZeRO-3 it gathers the partitioned weights into full 16-bit tensors); the main process writes."""
        tmp = out.with_name(f".{out.name}.tmp")
        trainer.save_model(str(tmp))
        distributed.forget_zero3()  # the next stages load whole models for inference
        if self.main:
            if with_tokenizer:
                self.tokenizer.save_pretrained(str(tmp))
            replace_dir(tmp, out)

    def _scir_trainer_kwargs(self, pair: dict) -> dict:
        cfg = self.recipe.scir
        if cfg.judge_format == "pointwise":
            option_ids = JudgeReward(None, self.tokenizer, self.recipe.rewards.judge).score_token_ids(pair["judge_1"])
        else:
            option_ids = PairwiseJudge(self.tokenizer, cfg.pairwise_template, cfg.options).option_ids(pair["judge_1"])
        return {"judge_format": cfg.judge_format, "option_ids": option_ids,
                "implicit_beta": self.recipe.rewards.implicit.beta, "lambda_cons": cfg.lambda_cons,
                "lambda_conf": cfg.lambda_conf}

    def evaluate(self, t: int):
        e, g = self.recipe.eval, self.recipe.generation
        rows = self.eval_prompts()
        verifiable = all(r.get("answer") is not None for r in rows)
        modes = [m for m, on in (("greedy", e.greedy), ("sampled", e.sampled)) if on]

        def compute(ci: int, chunk: list[dict]) -> list[dict]:
            out = [{"prompt_id": r["id"]} for r in chunk]
            for mode in modes:  # greedy draws no random numbers: the sampled mode sees the chunk's seed either way
                samples = self._sample(t, [r["prompt_text"] for r in chunk], chunk_seed(self.recipe.seed, t, "eval",
                                       ci), num_samples=1,
                                       temperature=0.0 if mode == "greedy" else e.temperature, top_p=e.top_p,
                                       max_new_tokens=e.max_new_tokens or g.max_new_tokens, batch_size=e.batch_size,
                                       stop=g.stop, with_logprobs=False)
                for o, r, (s,) in zip(out, chunk, samples, strict=True):
                    o[f"{mode}_response"] = s.text
                    o[f"{mode}_tokens"] = len(s.token_ids)
                    if verifiable:
                        o[f"{mode}_correct"] = is_correct(r, s.text)
            return out

        results = run_in_chunks(rows, e.batch_size, self.run.parts_dir(t, "eval"), compute)
        metrics: dict = {"prompts": len(rows)}
        for mode in modes:
            if verifiable:
                metrics[f"accuracy_{mode}"] = sum(r[f"{mode}_correct"] for r in results) / max(len(results), 1)
        length_mode = "sampled" if e.sampled else "greedy"
        if modes:
            metrics["mean_response_tokens"] = statistics.fmean(r[f"{length_mode}_tokens"] for r in results)
        path = self.run.round_dir(t) / "eval.json"
        if self.main:
            write_json(path, metrics)
            write_jsonl(self.run.round_dir(t) / "eval_samples.jsonl", results)
        return path, {}

    # ----------------------------------------------------------------------------- reporting

    def _report(self, t: int) -> None:
        """summary.json, metrics.jsonl / W&B and a console line for round t (idempotent on resume); main process."""
        if not self.main:
            return
        summary = read_json(self.run.summary_path) if self.run.summary_path.exists() else {"rounds": []}
        entry: dict = {"round": t, "eval": read_json(self.run.round_dir(t) / "eval.json")}
        stages = ("seed_sft", "eval") if t == 0 else self.round_stages
        seconds = {s: self.run.stage_info(t, s)["seconds"] for s in stages if self.run.is_done(t, s)}
        for s in ("generate", "reward", "pairs", "train", "seed_sft"):
            if self.run.is_done(t, s):
                info = {k: v for k, v in self.run.stage_info(t, s).items()
                        if k not in ("finished_at", "seconds", "artifact", "sha256") and not k.startswith("peak_")}
                entry[{"reward": "rewards", "generate": "generation"}.get(s, s)] = info
        entry["seconds"] = seconds
        entry["peak_rss_mb"] = {s: self.run.stage_info(t, s).get("peak_rss_mb") for s in seconds}  # per process
        summary["rounds"] = [r for r in summary["rounds"] if r["round"] != t] + [entry]
        summary["rounds"].sort(key=lambda r: r["round"])
        write_json(self.run.summary_path, summary)

        flat: dict = {f"eval/{k}": v for k, v in entry["eval"].items()}
        for section, prefix in (("rewards", "reward"), ("pairs", "pairs"), ("train", "train")):
            flat.update({f"{prefix}/{k}": v for k, v in entry.get(section, {}).items()
                         if isinstance(v, int | float) and not isinstance(v, bool)})
        flat.update({f"time/{k}": v for k, v in seconds.items()})
        flat["time/round"] = sum(seconds.values())
        flat.update({f"memory/{s}_peak_rss_mb": max(v) for s, v in entry["peak_rss_mb"].items() if v})
        if self.run.get("reported_round", -1) < t:
            self.tracker.log(t, flat)
            self.tracker.log_samples(t, self._sample_table(t))
            self.run.set("reported_round", t)
        self.tracker.console_row({"round": t, **flat})

    def _sample_table(self, t: int) -> list[dict]:
        n = self.recipe.tracking.log_samples
        if t == 0 or n == 0:
            return []
        if self.recipe.train.algorithm == "grpo":  # the round's last rollouts: what the policy writes at its end
            return [{"prompt": r["prompt"], "response": r["response"],
                     **{f"score/{k}": v for k, v in r["scores"].items()}}
                    for r in read_jsonl(self.run.round_dir(t) / "rollouts.jsonl")[-n:]]
        gens = read_jsonl(self.run.round_dir(t) / "generations.jsonl")[:n]
        rewards = read_jsonl(self.run.round_dir(t) / "rewards.jsonl")[:n]
        return [{"prompt": g["prompt"], "response": g["response"],
                 **{f"score/{k}": v for k, v in r["scores"].items()}} for g, r in zip(gens, rewards, strict=True)]
