"""A sample filter on Lastde (Xu et al., ICLR 2025; `rewards/lastde.py`), `lastde_filter:`: before pairing, a sample
whose Lastde lies outside `keep` (interval notation, e.g. "(-inf, -0.5]") is dropped.

Lastde is computed from the log-probs generation already stored (generations.jsonl `logprobs`, the sampling model's
own distribution), with no forward pass. A dropped sample stays in rewards.jsonl and generations.jsonl, but every one
of its scores is cleared (None) for the pairs stage, so a pair builder that ranks samples by their scores never
chooses it (cDPO's verifier grading reads no scores and is not affected); `details["lastde_filter"]` says why.
A sample Lastde cannot score (too short, or all scales' entropies equal) is kept or dropped by `unscored`.
Lastde's link to quality is not established (README, "Lastde"): this is a filter to measure, not a known-good one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from selfalign.artifacts import read_jsonl
from selfalign.config import opt
from selfalign.methods.base import Method
from selfalign.methods.pik import Interval, parse_interval
from selfalign.rewards.lastde import lastde_score

log = logging.getLogger(__name__)


def lastde_drop(value: float | None, keep: Interval, unscored: str) -> str | None:
    """None when the sample is kept; else why it is dropped: `unscored`, `below` or `above` the interval."""
    if value is None:
        return "unscored" if unscored == "drop" else None
    if value in keep:
        return None
    return "below" if value <= keep.lo else "above"


@dataclass
class LastdeFilterConfig:
    keep: str = "(-inf, inf)"  # the Lastde range of the samples kept, in interval notation
    unscored: Literal["keep", "drop"] = "keep"  # a sample Lastde does not define
    s: int = opt(3, lo=1)  # Lastde's settings (the official defaults)
    epsilon_factor: float = opt(10.0, lo=0.0, lo_open=True)
    tau_prime: int = opt(5, lo=2)


class LastdeFilter(Method):
    name = "lastde_filter"
    title = "Lastde sample filter"
    section = "lastde_filter"
    config = LastdeFilterConfig
    algorithm = "dpo"  # it filters samples before pairing; GRPO keeps no log-probs of its samples

    @property
    def keep(self) -> Interval:
        return parse_interval(self.cfg.keep, "lastde_filter.keep")

    def check(self) -> None:
        self.keep  # noqa: B018 (parsed for its ConfigError)

    def filter_groups(self, ctx, t, groups):
        cfg, keep = self.cfg, self.keep
        value = {(g["prompt_id"], g["sample"]): lastde_score(g["logprobs"], cfg.s, cfg.epsilon_factor, cfg.tau_prime)
                 for g in read_jsonl(ctx.run.round_dir(t) / "generations.jsonl")}
        reasons = {"below": 0, "above": 0, "unscored": 0}
        total = 0
        for pid, grp in groups.items():
            for k, sample in enumerate(grp["samples"]):
                total += 1
                v = value[(pid, k)]
                reason = lastde_drop(v, keep, cfg.unscored)
                if reason is None:
                    continue
                reasons[reason] += 1
                sample["scores"] = dict.fromkeys(sample["scores"])
                sample["details"] = {**sample["details"], "lastde_filter": {"lastde": v, "dropped": reason}}
        dropped = sum(reasons.values())
        log.info("round %d: lastde_filter dropped %d of %d samples (Lastde in %s; %s)", t, dropped, total, keep,
                 ", ".join(f"{n} {r}" for r, n in reasons.items()))
        return {"lastde_filter_samples": total, "lastde_filter_dropped": dropped,
                **{f"lastde_filter_dropped_{r}": n for r, n in reasons.items()}}
