"""P(IK), "the probability that I know the answer" (Kadavath et al. 2022, https://arxiv.org/abs/2207.05221: "we
train models to predict whether they know the answer to a question"), estimated for free from the K samples a
round already has, and used as a prompt filter (`pik:`).

Per prompt, p̂ = the fraction of its K samples judged right: by the verifier where the prompts carry answers
(`grading: verifier`, or `auto` with answers), else by agreement with the prompt's majority final answer
(`majority`, TTRL's label; `auto` without answers). A prompt is kept when p̂ lies in `keep` (interval notation,
default "(0, 1)": a group whose samples are all right or all wrong carries no within-group signal about
correctness). Every prompt's p̂ is written to round_t/p_hat.jsonl, and the round logs how many prompts were dropped
and why (all right, all wrong, or another p̂ outside the range).

- DPO: before any pair is built, the prompts outside `keep` are removed from the round's groups (pairs stage).
- GRPO: the filter uses only the groups GRPO has already sampled, never extra samples: each group is graded as it
  is rewarded, and a group outside `keep` gets advantage 0 for all its completions (TRL's own treatment of an
  unscorable completion), so it adds no policy-gradient term; it still counts in the loss's normalisation, and
  with train.grpo.beta > 0 its KL term remains. Its p̂ and whether it was kept are in rollouts.jsonl.

The P(IK) probe (`probe: true`; `fit_probe`, also `scripts/pik_probe.py`): logistic regression of p̂ on the
reference model's last prompt-token hidden state, fitted on the p̂ of the earlier rounds' prompts, predicts P(IK) of
round t's prompts before any sample is drawn (its `pik_screen` stage, first in every round: round_t/pik_screen.jsonl,
prompt_id and p_ik). The prompts whose P(IK) lies outside `screen` are not sampled at all (generate stage, GRPO and
InfAlign's reference set). The reference model is the round's sampling model M_{t-1}, whose features are refitted
every round. A round with fewer than `probe_min_prompts` earlier prompts screens nothing (round 1 always). The probe
is scored where the round's p̂ are known: `pik_probe_auroc`, its P(IK) against each sample being right (Kadavath et
al.'s measure, the p̂·K right and (1 − p̂)·K wrong samples of each prompt), and `pik_probe_auroc_mixed`, against the
group being mixed (0 < p̂ < 1); for a DPO round in its pairs stage, for a GRPO round in the next round's screen.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from selfalign.artifacts import read_jsonl, write_jsonl
from selfalign.config import ConfigError, opt
from selfalign.methods.base import Method
from selfalign.rewards.majority import majority_match
from selfalign.rewards.verifier import extract_answer, is_correct

log = logging.getLogger(__name__)

_INTERVAL = re.compile(r"^\s*([(\[])\s*([^,\s]+)\s*,\s*([^,\s\])]+)\s*([)\]])\s*$")


@dataclass(frozen=True)
class Interval:
    """lo < x < hi with open ends, lo <= x <= hi with closed ones."""

    lo: float
    hi: float
    lo_closed: bool = False
    hi_closed: bool = False

    def __contains__(self, x: float) -> bool:
        above = x >= self.lo if self.lo_closed else x > self.lo
        below = x <= self.hi if self.hi_closed else x < self.hi
        return above and below

    def __str__(self) -> str:
        return f"{'[' if self.lo_closed else '('}{self.lo:g}, {self.hi:g}{']' if self.hi_closed else ')'}"


def parse_interval(text: str, where: str) -> Interval:
    """"(0, 1)", "[0, 1)", "[0.25, 0.75]", ... (inf and -inf allowed, open there); ConfigError naming `where`."""
    m = _INTERVAL.match(text) if isinstance(text, str) else None
    try:
        lo, hi = (float(m.group(2)), float(m.group(3))) if m else (math.nan, math.nan)
    except ValueError:
        lo = hi = math.nan
    if not m or math.isnan(lo) or math.isnan(hi):
        raise ConfigError(f"{where}: {text!r} is not an interval; write e.g. '(0, 1)' or '[0, 1)'")
    interval = Interval(lo, hi, m.group(1) == "[", m.group(4) == "]")
    if lo > hi or (lo == hi and not (interval.lo_closed and interval.hi_closed)):
        raise ConfigError(f"{where}: {text!r} is empty")
    return interval


def p_hat(correct: list[bool]) -> float:
    """The fraction of a prompt's samples judged right; ValueError for no samples."""
    if not correct:
        raise ValueError("p_hat: a prompt with no samples")
    return sum(map(bool, correct)) / len(correct)


def grade(row: dict, responses: list[str], grading: str) -> tuple[list[bool], str]:
    """Each response right or wrong, and how it was judged: `verifier` (the row's answer), `majority` (its final
    answer is the group's majority answer; no answer is wrong), `auto` (verifier when the row has an answer)."""
    use = ("verifier" if row.get("answer") is not None else "majority") if grading == "auto" else grading
    if use == "verifier":
        if row.get("answer") is None:
            raise ConfigError(f"pik.grading: verifier, but prompt {row.get('id')!r} has no answer; use majority or "
                              "auto")
        return [is_correct(row, y) for y in responses], use
    return [bool(s) for s in majority_match([extract_answer(y) for y in responses])], use


def drop_reason(p: float, keep: Interval) -> str | None:
    """None when p is in `keep`; otherwise why it was dropped: all_right (p = 1), all_wrong (p = 0), outside."""
    if p in keep:
        return None
    return "all_right" if p == 1 else "all_wrong" if p == 0 else "outside"


REASONS = ("all_right", "all_wrong", "outside")


class PHatFilter:
    """One prompt's group → {"p_hat", "grading", "keep", "reason"} (the GRPO trainer's group filter)."""

    name = "pik"

    def __init__(self, grading: str, keep: Interval):
        self.grading, self.keep = grading, keep

    def __call__(self, row: dict, responses: list[str]) -> dict:
        correct, used = grade(row, responses, self.grading)
        p = p_hat(correct)
        reason = drop_reason(p, self.keep)
        return {"p_hat": p, "grading": used, "keep": reason is None, "reason": reason}


def filter_stats(records: list[dict], keep: Interval, prefix: str = "pik") -> dict:
    """How many prompts the filter saw and dropped, by reason, and their mean p̂."""
    stats = {f"{prefix}_prompts": len(records), f"{prefix}_dropped": sum(not r["keep"] for r in records),
             f"{prefix}_p_hat_mean": statistics.fmean(r["p_hat"] for r in records) if records else None,
             f"{prefix}_keep": str(keep)}
    stats.update({f"{prefix}_dropped_{k}": sum(r["reason"] == k for r in records) for k in REASONS})
    return stats


@dataclass
class PIKConfig:
    grading: Literal["auto", "verifier", "majority"] = "auto"  # how a sample is judged right
    keep: str = "(0, 1)"  # the p̂ range of the prompts trained on, in interval notation
    probe: bool = False  # screen each round's prompts before sampling by the P(IK) probe
    screen: str = "[0.05, 0.95]"  # the probe's P(IK) range of the prompts sampled, in interval notation
    probe_min_prompts: int = opt(64, lo=2)  # earlier prompts with p̂ needed to fit the probe
    probe_l2: float = opt(1e-2, lo=0.0)
    batch_size: int = opt(32, lo=1)  # prompts per forward pass of the features


class PIK(Method):
    name = "pik"
    title = "P(IK) prompt filter"
    section = "pik"
    config = PIKConfig
    algorithm = None  # DPO and GRPO

    @property
    def keep(self) -> Interval:
        return parse_interval(self.cfg.keep, "pik.keep")

    def __init__(self, recipe):
        super().__init__(recipe)
        self.before_stages = ("pik_screen",) if self.cfg.probe else ()

    def check(self) -> None:
        self.keep  # noqa: B018 (parsed for its ConfigError)
        parse_interval(self.cfg.screen, "pik.screen")

    # ----------------------------------------------------------------------------- the probe's screen

    def run_stage(self, ctx, t, name):
        """`pik_screen`: fit the probe on the earlier rounds' p̂ (features from M_{t-1}), predict round t's prompts,
        write round_t/pik_screen.jsonl; scores the previous round's screen when that round was GRPO."""
        from selfalign.data.prompts import train_rows

        cfg, tok = self.cfg, ctx.store.tokenizer
        rows = train_rows(self.recipe.prompts, t, tok)
        texts, targets = {}, {}
        for s in range(1, t):
            observed = observed_p_hats(ctx.run, s)
            for r in train_rows(self.recipe.prompts, s, tok):
                if str(r["id"]) in observed:
                    texts[str(r["id"])], targets[str(r["id"])] = r["prompt_text"], observed[str(r["id"])][0]
        stats = {"pik_probe_train_prompts": len(targets), "pik_screen": cfg.screen}
        if t > 1 and not (ctx.run.round_dir(t - 1) / "p_hat.jsonl").exists():  # a GRPO round: score its screen here
            stats.update({k.replace("pik_probe", "pik_probe_previous"): v
                          for k, v in probe_scores(ctx.run, t - 1).items()})
        if len(targets) < cfg.probe_min_prompts:
            records = [{"prompt_id": str(r["id"]), "p_ik": None, "keep": True} for r in rows]
            stats["pik_probe_fitted"] = False
        else:
            model = ctx.store.model(t - 1)
            ids = list(targets)
            train_x = last_prompt_hidden(model, tok, [texts[i] for i in ids], cfg.batch_size)
            w, b, mean, std = fit_probe(train_x, torch.tensor([targets[i] for i in ids]), cfg.probe_l2)
            p_ik = probe_predict(last_prompt_hidden(model, tok, [r["prompt_text"] for r in rows], cfg.batch_size),
                                 w, b, mean, std).tolist()
            screen = parse_interval(cfg.screen, "pik.screen")
            records = [{"prompt_id": str(r["id"]), "p_ik": p, "keep": p in screen} for r, p in zip(rows, p_ik,
                                                                                                  strict=True)]
            stats.update({"pik_probe_fitted": True, "pik_p_ik_mean": statistics.fmean(p_ik)})
        stats.update({"pik_screen_prompts": len(records), "pik_screen_dropped": sum(not r["keep"] for r in records)})
        path = ctx.run.round_dir(t) / "pik_screen.jsonl"
        if ctx.main:
            write_jsonl(path, records)
        log.info("round %d: the P(IK) probe %s; %d of %d prompts sampled", t,
                 f"(fitted on {len(targets)} prompts) keeps P(IK) in {cfg.screen}" if stats["pik_probe_fitted"]
                 else f"is not fitted ({len(targets)} earlier prompts, {cfg.probe_min_prompts} needed)",
                 len(records) - stats["pik_screen_dropped"], len(records))
        return path, stats

    def screen_prompts(self, ctx, t, rows):
        if not self.cfg.probe:
            return rows
        keep = {r["prompt_id"] for r in read_jsonl(ctx.run.round_dir(t) / "pik_screen.jsonl") if r["keep"]}
        kept = [r for r in rows if str(r["id"]) in keep]
        if not kept:
            log.warning("round %d: the P(IK) probe screened out every prompt (pik.screen %s)", t, self.cfg.screen)
        return kept

    def filter_groups(self, ctx, t, groups):
        """Grades every prompt's samples, writes round_t/p_hat.jsonl, removes the prompts outside `keep`."""
        f = PHatFilter(self.cfg.grading, self.keep)
        records = []
        for pid, grp in list(groups.items()):
            rec = {"prompt_id": pid, **f(grp["row"], [s["response"] for s in grp["samples"]]),
                   "samples": len(grp["samples"])}
            records.append(rec)
            if not rec["keep"]:
                del groups[pid]
        if ctx.main:
            write_jsonl(ctx.run.round_dir(t) / "p_hat.jsonl", records)
        stats = filter_stats(records, f.keep)
        if self.cfg.probe and ctx.main:
            stats.update(probe_scores(ctx.run, t))
        log.info("round %d: pik kept %d of %d prompts (p̂ in %s; dropped: %s)", t, len(groups), len(records), f.keep,
                 ", ".join(f"{stats[f'pik_dropped_{k}']} {k}" for k in REASONS))
        return stats

    def group_filter(self, ctx, t):
        return PHatFilter(self.cfg.grading, self.keep)


# ------------------------------------------------------------------------------------------- the P(IK) probe


def observed_p_hats(run, t: int) -> dict[str, tuple[float, int]]:
    """Round t's p̂ and sample count per prompt id: from p_hat.jsonl (DPO's filter), else from the GRPO rollouts'
    `pik` filter records (the first group of each prompt); {} when the round has neither."""
    path = run.round_dir(t) / "p_hat.jsonl"
    if path.exists():
        return {str(r["prompt_id"]): (r["p_hat"], r["samples"]) for r in read_jsonl(path)}
    path, out = run.round_dir(t) / "rollouts.jsonl", {}
    counts: dict[str, int] = {}
    if path.exists():
        for r in read_jsonl(path):
            rec = (r.get("filters") or {}).get("pik")
            if rec is not None:
                pid = str(r["prompt_id"])
                counts[pid] = counts.get(pid, 0) + 1
                out.setdefault(pid, rec["p_hat"])
    return {pid: (p, counts[pid]) for pid, p in out.items()}


def screen_auroc(p_ik: dict[str, float], observed: dict[str, tuple[float, int]]) -> tuple[float | None, float | None]:
    """(AUROC of P(IK) for each sample being right, AUROC of P(IK) for the prompt's group being mixed) over the
    prompts with both: a prompt with p̂ of K samples counts p̂·K right samples and (1 − p̂)·K wrong ones, each scored
    with the prompt's P(IK); ties half. None without both classes."""
    from selfalign.evaluators.reward_auroc import auroc

    scores, labels, mixed_scores, mixed = [], [], [], []
    for pid, p in p_ik.items():
        if p is None or pid not in observed:
            continue
        ph, k = observed[pid]
        right = round(ph * k)
        scores += [p] * k
        labels += [True] * right + [False] * (k - right)
        mixed_scores.append(p)
        mixed.append(0 < right < k)
    return (auroc(scores, labels) if scores else None), (auroc(mixed_scores, mixed) if mixed_scores else None)


def probe_scores(run, t: int) -> dict:
    """`pik_probe_auroc` and `pik_probe_auroc_mixed` of round t's screen against round t's p̂ (empty when the round
    was not screened by a fitted probe)."""
    path = run.round_dir(t) / "pik_screen.jsonl"
    if not path.exists():
        return {}
    p_ik = {r["prompt_id"]: r["p_ik"] for r in read_jsonl(path) if r["p_ik"] is not None}
    if not p_ik:
        return {}
    a, mixed = screen_auroc(p_ik, observed_p_hats(run, t))
    return {"pik_probe_auroc": a, "pik_probe_auroc_mixed": mixed}


def last_prompt_hidden(model, tokenizer, prompt_texts: list[str], batch_size: int = 32) -> torch.Tensor:
    """(prompts, hidden) float32: the last layer's hidden state at each prompt's last token, the probe's input
    (Kadavath et al. train their P(IK) head on the model's own representation of the question). Prompts are
    right-padded, so every real token keeps its position."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompt_texts), batch_size):
            ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompt_texts[start:start + batch_size]]
            width = max(map(len, ids))
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
            with torch.no_grad():
                hidden = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                               output_hidden_states=True).hidden_states[-1]
            last = torch.tensor([len(x) - 1 for x in ids], device=hidden.device)
            out.append(hidden[torch.arange(len(ids), device=hidden.device), last].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 0))


def fit_probe(features: torch.Tensor, targets: torch.Tensor, l2: float = 1e-2,
              steps: int = 200) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """Logistic regression of p̂ on standardised features: minimise mean BCE(σ(x·w + b), p̂) + l2·|w|² (soft targets:
    p̂ itself, not a thresholded label) with L-BFGS. Returns (w, b, mean, std) of the standardisation."""
    x = features.double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)
    z, y = (x - mean) / std, targets.double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), float(b.detach()), mean, std


def probe_predict(features: torch.Tensor, w: torch.Tensor, b: float, mean: torch.Tensor,
                  std: torch.Tensor) -> torch.Tensor:
    """The probe's P(IK) of each prompt, σ(((x − mean) / std)·w + b)."""
    return torch.sigmoid(((features.double() - mean) / std) @ w + b)
