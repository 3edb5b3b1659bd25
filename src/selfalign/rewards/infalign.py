"""InfAlign's calibrate-and-transform reward: a reward's rank against the reference policy's, then exp(t·c).

Balashankar et al., ICML 2025, "InfAlign: Inference-aware language model alignment",
https://arxiv.org/abs/2412.19792: "we also show that our proposed reward calibration method is a strong baseline for
optimizing standard win rate." The optimal policy for the inference-time win rate against π_ref (both decoded by
best-of-N or worst-of-N) solves ordinary KL-regularised RL with a transformed reward, so the method is a reward
transform in front of any RL solver (no public code; formulas as in the project's METHODS.md):

- Calibrate: C(x, y) = P_{z~π_ref(·|x)}[r(x, z) < r(x, y)] + ½·P[r(x, z) = r(x, y)], estimated from m reward
  scores of samples of the frozen reference for the same prompt: (#{r_j < r} + ½·#{r_j = r}) / m, resolution
  1/(2m). Under π_ref (continuous rewards) C is uniform on [0, 1], and it is invariant to any strictly increasing
  rescaling of r. Calibrating against the current policy's own samples is a different (rank) method, not this.
- Transform: Φ_t(c) = sign(t)·exp(t·c): best-of-N `bon` with t > 0 (exp(t·c), convex), worst-of-N `won` with t < 0
  (−exp(t·c), concave), `identity` (c: calibration alone). Both are increasing in c; |t| grows with N.

The registered reward `infalign` (`rewards.infalign`, `pairs.reward: infalign`, `train.grpo_rewards: [{source:
infalign}]`) is Φ_t(C(r)) for a base reward r (`reward`, with `reward_options`). The frozen reference's m samples
per prompt and their r, and the reward model r on that frozen model, are a round's: `selfalign.methods.infalign`
samples and scores them in the round's `reference` stage and hands them to the reward as `RewardContext.inputs
["infalign"]` (a `Calibration`); outside a round (best-of-N, `selfalign eval`) the reward cannot be built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from selfalign.config import ConfigError, opt
from selfalign.rewards.base import RewardContext, RewardModel, RewardOutput, RewardSpec, TokenIds

TransformKind = Literal["bon", "won", "identity"]
KINDS = ("bon", "won", "identity")


def _check_transform(kind: str, t: float | None) -> None:
    if kind not in KINDS:
        raise ValueError(f"infalign_transform: kind must be one of {', '.join(KINDS)}; got {kind!r}")
    if kind == "identity":
        return
    if t is None or not math.isfinite(t):
        raise ValueError(f"infalign_transform: {kind} needs a finite t, got {t!r}")
    if kind == "bon" and not t > 0:
        raise ValueError(f"infalign_transform: bon (best-of-N) needs t > 0, got {t}")
    if kind == "won" and not t < 0:
        raise ValueError(f"infalign_transform: won (worst-of-N) needs t < 0, got {t}")


def calibrated_reward(score: float, reference_scores: Sequence[float] | torch.Tensor) -> float:
    """(#{r_j < score} + ½·#{r_j = score}) / m: the estimated probability that `score` beats a reference sample's
    reward, ties counting ½.

    Args:
        score: the reward of the response to calibrate.
        reference_scores: (m,) rewards of m >= 1 reference-policy samples for the same prompt.

    Returns:
        A multiple of 1/(2m) in [0, 1]: 0 below every reference score, 1 above every one, ½ when all equal it.

    Raises:
        ValueError: no reference scores, or a NaN among them or as the score.
    """
    ref = [float(r) for r in (reference_scores.flatten().tolist() if isinstance(reference_scores, torch.Tensor)
                              else reference_scores)]
    if not ref:
        raise ValueError("calibrated_reward: at least one reference score is needed")
    if math.isnan(score) or any(math.isnan(r) for r in ref):
        raise ValueError("calibrated_reward: NaN reward")
    below = sum(r < score for r in ref)
    tied = sum(r == score for r in ref)
    return (below + 0.5 * tied) / len(ref)


def calibrated_rewards(scores: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """`calibrated_reward` of every score against its reference samples, by binary search (exact; no (n, m)
    comparison matrix).

    Args:
        scores: (..., n) rewards to calibrate.
        reference: (..., m) reference rewards, m >= 1, with the same leading dims as `scores` (e.g. (prompts, n)
            against (prompts, m), each row against its own prompt's reference samples), or 1-D (m,) for all.

    Returns:
        (..., n) float64, multiples of 1/(2m) in [0, 1].

    Raises:
        ValueError: m = 0, mismatched leading dims, or a NaN reward.
    """
    scores, reference = torch.as_tensor(scores).double(), torch.as_tensor(reference).double()
    if reference.dim() == 1 and scores.dim() > 1:
        reference = reference.expand(*scores.shape[:-1], reference.shape[0])
    if scores.dim() == 0 or reference.dim() != scores.dim() or reference.shape[:-1] != scores.shape[:-1]:
        raise ValueError(f"calibrated_rewards: scores (..., n) and reference (..., m) with the same leading dims "
                         f"expected, got {tuple(scores.shape)} and {tuple(reference.shape)}")
    m = reference.shape[-1]
    if m == 0:
        raise ValueError("calibrated_rewards: at least one reference score is needed")
    if bool(scores.isnan().any()) or bool(reference.isnan().any()):
        raise ValueError("calibrated_rewards: NaN reward")
    ordered = reference.sort(dim=-1).values.contiguous()
    below = torch.searchsorted(ordered, scores.contiguous(), side="left")  # #{r_j < score}
    at_most = torch.searchsorted(ordered, scores.contiguous(), side="right")  # #{r_j <= score}
    return (below + at_most).double() / (2 * m)  # (below + ½·(at_most − below)) / m


def infalign_transform(c: float, kind: TransformKind, t: float | None = None) -> float:
    """Φ_t(c) = sign(t)·exp(t·c): `bon` exp(t·c) with t > 0, `won` −exp(t·c) with t < 0, `identity` c (t unused).

    Args:
        c: a calibrated reward, in [0, 1].

    Returns:
        bon: in [1, e^t]; won: in [−1, −e^t]; identity: c. Increasing in c in all three.

    Raises:
        ValueError: an unknown kind, t missing, non-finite or of the wrong sign, or c outside [0, 1] (a raw,
            uncalibrated reward).
    """
    _check_transform(kind, t)
    if not 0.0 <= c <= 1.0:
        raise ValueError(f"infalign_transform: a calibrated reward in [0, 1] expected, got {c}")
    if kind == "identity":
        return float(c)
    value = math.exp(t * c)
    return value if kind == "bon" else -value


def infalign_transform_tensor(c: torch.Tensor, kind: TransformKind, t: float | None = None) -> torch.Tensor:
    """`infalign_transform` elementwise. Shape: (...) → (...), in c's floating dtype (float64 for integer input)."""
    _check_transform(kind, t)
    c = torch.as_tensor(c)
    if not c.is_floating_point():
        c = c.double()
    if not bool(((c >= 0) & (c <= 1)).all()):
        raise ValueError("infalign_transform_tensor: calibrated rewards in [0, 1] expected")
    if kind == "identity":
        return c.clone()
    value = torch.exp(t * c)
    return value if kind == "bon" else -value


def inference_win_rate(calibrated: torch.Tensor | Sequence[float], n: int, kind: Literal["bon", "won"] = "bon"
                       ) -> float:
    """Inference-time win rate against π_ref of a policy whose samples' calibrated rewards are `calibrated`: the
    probability that the best (`bon`) or worst (`won`) of n of its samples beats the best or worst of n reference
    samples, ties ½.

    Assumes continuous rewards, so a reference sample's calibrated reward is Uniform(0, 1): P(the reference's best
    of n is below c) = c^n, P(its worst of n is below c) = 1 − (1 − c)^n. The policy's best (worst) of n is drawn
    from the empirical distribution of `calibrated`: with its values sorted v_1 <= … <= v_k, v_j is the best of n
    with probability (j/k)^n − ((j − 1)/k)^n and the worst with ((k − j + 1)/k)^n − ((k − j)/k)^n.

    Args:
        calibrated: (k,) calibrated rewards in [0, 1] of k >= 1 policy samples.
        n: samples per decode, >= 1. n = 1 gives the standard win rate, mean(c), for both kinds.

    Returns:
        In [0, 1]; ½ for π = π_ref (c uniform), both kinds.
    """
    if kind not in ("bon", "won"):
        raise ValueError(f"inference_win_rate: kind must be bon or won, got {kind!r}")
    if n < 1:
        raise ValueError(f"inference_win_rate: n must be >= 1, got {n}")
    v = torch.as_tensor(calibrated, dtype=torch.float64).flatten().sort().values
    k = v.numel()
    if k == 0:
        raise ValueError("inference_win_rate: at least one calibrated reward is needed")
    if not bool(((v >= 0) & (v <= 1)).all()):
        raise ValueError("inference_win_rate: calibrated rewards in [0, 1] expected")
    cdf = torch.arange(k + 1, dtype=torch.float64) / k  # 0, 1/k, …, 1
    if kind == "bon":
        pick = cdf[1:] ** n - cdf[:-1] ** n
        beats = v**n
    else:
        survive = cdf.flip(0)  # 1, (k − 1)/k, …, 0: P(a sample >= v_j) = (k − j + 1)/k
        pick = survive[:-1] ** n - survive[1:] ** n
        beats = 1 - (1 - v) ** n
    return float((pick * beats).sum())


# ---------------------------------------------------------------------------------------------
# the registered reward


@dataclass
class InfAlignConfig:
    """Φ_t(C(r)): a base reward r calibrated against m samples per prompt of the frozen reference, then transformed."""

    reward: str = "likelihood"  # the base reward r: any registered reward that scores a sample alone
    reward_options: dict[str, Any] = field(default_factory=dict)  # its options (default: its defaults)
    kind: TransformKind = "bon"  # bon: exp(t·c), t > 0; won: −exp(t·c), t < 0; identity: c (t unused)
    t: float = 10.0  # METHODS.md's sweep: t ≈ 10 for best-of-4 at KL 0.5
    m: int = opt(16, lo=1)  # reference samples per prompt (resolution 1/m)
    reference: Literal["start", "initial"] = "start"  # π_ref: the round's starting model M_{t-1}, or M_0


def check_config(cfg: InfAlignConfig, where: str) -> None:
    """The transform's kind and t (the base reward is checked by the method, which may read the registry)."""
    try:
        _check_transform(cfg.kind, cfg.t)
    except ValueError as e:
        raise ConfigError(f"{where}.t: {str(e).split(': ', 1)[1]}") from None


@dataclass
class Calibration:
    """A round's reference set: prompt id → the base reward of the frozen reference's samples of that prompt
    (unscored ones left out), and the base reward model on the frozen reference, which scores new samples."""

    reference_scores: dict[str, list[float]]
    base: RewardModel


class InfAlignReward:
    """Φ_t(C(x, y)) with C against the prompt's reference scores; None where the base reward cannot score the
    sample or the prompt has no scored reference sample. Details: the base score and the calibrated c."""

    name = "infalign"

    def __init__(self, cfg: InfAlignConfig, calibration: Calibration):
        self.cfg, self.calibration = cfg, calibration

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        base = self.calibration.base.score(rows, responses, token_ids).scores
        scores: list[float | None] = []
        details: list[dict] = []
        for row, s in zip(rows, base, strict=True):
            ref = self.calibration.reference_scores.get(str(row["id"]))
            if s is None or not ref:
                scores.append(None)
                details.append({"base": s, "calibrated": None})
                continue
            c = calibrated_reward(s, ref)
            scores.append(infalign_transform(c, self.cfg.kind, self.cfg.t))
            details.append({"base": s, "calibrated": c})
        return RewardOutput(scores, details)


def _build(cfg: InfAlignConfig, ctx: RewardContext) -> InfAlignReward:
    return InfAlignReward(cfg, ctx.input("infalign", "infalign"))


SPEC = RewardSpec("infalign", InfAlignConfig, _build,
                  "InfAlign: Φ_t of a base reward's rank among the frozen reference's samples of the prompt",
                  needs=("inputs",), check=check_config)
