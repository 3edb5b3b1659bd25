"""Lastde: a response's mean token log-prob over the spread of its multiscale diversity entropy.

Xu et al., ICLR 2025, "Training-free LLM-generated Text Detection by Mining Token Probability Sequences",
https://arxiv.org/abs/2410.06072 (code: https://github.com/TrustMedia-zju/Lastde_Detector): "For the first time,
we introduce time series analysis to LLM-generated text detection, capturing the temporal dynamics of token
probability sequences." For the log-prob sequence x_1..x_n of a text and each scale τ = 1..τ′: the moving average
of width τ (stride 1), delay-embedded with dimension s (lag 1), the cosine similarity of each embedded vector with
the next, a histogram of those over [−1, 1] with ε = 10·n bins, and its entropy over ln ε, DE_τ ∈ [0, 1]. Lastde =
mean(x) / std(DE_1..DE_τ′) (unbiased std). Negative for log-probs; higher = more machine-like in the paper. Its link
to response quality is not established: a diagnostic and a reward feature to measure, not a known-good reward.

This follows the official code exactly (`py_scripts/baselines/scoring_methods/fastMDE.py`:
`get_tau_multiscale_DE`, `get_tau_scale_DE`, `calculate_DE`, `histcounts`, `DE`, called by `get_lastde` in
`py_scripts/baselines/scoring_methods/based_scoring_baselines.py`), where it defines a value:

- The official detector drops the text's first token because nothing predicts it (`statistic_detect.py`: labels =
  input_ids[:, 1:], logits[:, :-1]); `get_lastde` itself drops nothing and n is the length of the sequence it gets.
  Here every response token has a log-prob given the prompt, so nothing is dropped: n = the response's token count
  (EOS included when sampled or appended, as the likelihood reward scores it).
- ε = int(epsilon_factor · n) (`get_lastde`: 10·n; `lastde_doubleplus.py`: int(epsilon · n)).
- Binning is torch.histc(cos, bins=ε, min=−1, max=1) on float32 cosines, as `histcounts` does: bin
  ⌊(c + 1)·ε/2⌋, c = 1 in the last bin, values outside [−1, 1] dropped. The cosines come from
  torch.nn.functional.cosine_similarity (each norm clamped to >= 1e-8: a zero vector has cosine 0 with anything).
  Log-probs are <= 0, so their cosines lie in [0, 1]: half the bins are never used.
- A scale with no cosine (n − τ − s + 1 = 0) has an empty histogram; the official 0/0 probabilities are skipped by
  nansum, so its DE_τ = 0. Kept: it is what the official code returns at its shortest accepted length.

Where the official code gives no number, `lastde_score` returns None (the reward protocol's "could not score it"):
n < τ′ + s − 1 (the official unfold raises), ε < 2 (ln ε = 0: NaN), a non-finite log-prob (NaN or inf cosines), and
std = 0 (every DE_τ equal, e.g. a constant sequence: the official value is −inf, or NaN when the mean is 0 too). No
finite stand-in would rank correctly against real scores (0 would beat every real, negative Lastde), so a
degenerate response is left unscored rather than given a made-up value. This is not rare for a near-uniform model:
log-probs all close to −ln V give cosines all ≈ 1, one bin at every scale, and None (the tiny test model does).

Precision (the one place this departs from the official arithmetic, not its definition): the official code works in
the scoring model's dtype (float16 for its 7B+ models) and computes DE in float32; here the moving averages and
cosines are float64, cast to float32 before binning exactly as `histcounts` does, and the entropies, std and ratio
are float64. For float64 input this reproduces the official bins exactly; the result differs only by the float32
rounding of the official entropies.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfalign.config import opt
from selfalign.rewards.base import RewardOutput, RewardSpec, TokenIds
from selfalign.scoring import sequence_logprobs, token_logprobs


def _check_settings(s: int, tau_prime: int) -> None:
    if s < 1:
        raise ValueError(f"lastde: the embedding dimension s must be >= 1, got {s}")
    if tau_prime < 2:
        raise ValueError(f"lastde: tau_prime must be >= 2 (an unbiased std over one scale is undefined), "
                         f"got {tau_prime}")


def diversity_entropy(series: torch.Tensor, s: int, epsilon: int) -> float:
    """DE of one series (official `calculate_DE`): −(1/ln ε)·Σ_b p_b ln p_b over the ε-bin histogram on [−1, 1] of
    the cosine similarities of consecutive delay vectors (series[i : i + s]).

    Args:
        series: (L,) with L >= s (L − s cosines; none: DE = 0, the official empty-histogram value).
        s: embedding dimension (lag 1).
        epsilon: number of bins, >= 2.

    Returns:
        DE in [0, 1], a float64 computation from float32-binned cosines.
    """
    if series.dim() != 1 or series.numel() < s:
        raise ValueError(f"diversity_entropy: a 1-D series of length >= s = {s} expected, got {tuple(series.shape)}")
    if epsilon < 2:
        raise ValueError(f"diversity_entropy: epsilon must be >= 2 bins, got {epsilon}")
    orbits = series.double().unfold(0, s, 1)  # (L − s + 1, s)
    cosines = F.cosine_similarity(orbits[:-1], orbits[1:], dim=-1)  # (L − s,)
    counts = torch.histc(cosines.float(), bins=epsilon, min=-1, max=1).double()
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * p.log()).sum() / math.log(epsilon)) + 0.0  # + 0.0: no −0.0 from a one-bin histogram


def multiscale_diversity_entropy(x: torch.Tensor, s: int, epsilon: int, tau_prime: int) -> torch.Tensor:
    """(DE_1, …, DE_τ′) of x (official `get_tau_multiscale_DE` before its std): DE_τ is the diversity entropy of
    the moving average of width τ, stride 1 (x.unfold(0, τ, 1).mean(-1), length n − τ + 1).

    Args:
        x: (n,) with n >= tau_prime + s − 1 (the shortest the official code accepts).

    Returns:
        (tau_prime,) float64.
    """
    _check_settings(s, tau_prime)
    if x.dim() != 1 or x.numel() < tau_prime + s - 1:
        raise ValueError(f"multiscale_diversity_entropy: a 1-D sequence of length >= tau_prime + s - 1 = "
                         f"{tau_prime + s - 1} expected, got {tuple(x.shape)}")
    x = x.double()
    return torch.tensor([diversity_entropy(x.unfold(0, tau, 1).mean(dim=-1), s, epsilon)
                         for tau in range(1, tau_prime + 1)], dtype=torch.float64)


def lastde_score(logprobs: torch.Tensor | Sequence[float], s: int = 3, epsilon_factor: float = 10,
                 tau_prime: int = 5) -> float | None:
    """Lastde of a response's token log-prob sequence: mean(x) / std(DE_1..DE_τ′), ε = int(epsilon_factor · n).

    Args:
        logprobs: (n,) log π(y_t | x, y_<t) for every response token (none dropped; see the module docstring).
        s: embedding dimension (official default 3).
        epsilon_factor: bins per token (official default 10; 1 in its closed-source setting).
        tau_prime: number of scales, >= 2 (official default 5).

    Returns:
        The score (a float64 computation), or None where the official code gives no finite number: n < τ′ + s − 1,
        int(epsilon_factor · n) < 2, a non-finite log-prob, or all DE_τ equal (std 0, e.g. a constant sequence).

    Raises:
        ValueError: logprobs not 1-D, s < 1, tau_prime < 2 or epsilon_factor <= 0 (settings that never give one).
    """
    _check_settings(s, tau_prime)
    if not epsilon_factor > 0:
        raise ValueError(f"lastde: epsilon_factor must be > 0, got {epsilon_factor}")
    x = torch.as_tensor(logprobs).detach().to(device="cpu", dtype=torch.float64)
    if x.dim() != 1:
        raise ValueError(f"lastde: a 1-D log-prob sequence expected, got shape {tuple(x.shape)}")
    n = x.numel()
    epsilon = int(epsilon_factor * n)
    if n < tau_prime + s - 1 or epsilon < 2 or not bool(torch.isfinite(x).all()):
        return None
    spread = float(multiscale_diversity_entropy(x, s, epsilon, tau_prime).std())
    if not spread > 0:
        return None
    return float(x.mean()) / spread


@dataclass
class LastdeConfig:
    """Lastde of the response's token log-probs under the policy (Xu et al.'s defaults)."""

    s: int = opt(3, lo=1)  # embedding dimension
    epsilon_factor: float = opt(10.0, lo=0.0, lo_open=True)  # histogram bins per response token
    tau_prime: int = opt(5, lo=2)  # scales τ = 1..τ′
    batch_size: int = opt(32, lo=1)


class LastdeReward:
    name = "lastde"

    def __init__(self, model, tokenizer, s: int = 3, epsilon_factor: float = 10.0, tau_prime: int = 5,
                 batch_size: int = 32):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.s, self.epsilon_factor, self.tau_prime = s, epsilon_factor, tau_prime

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        """The sampled tokens when `token_ids` are given; otherwise the responses tokenized as DPO does (EOS
        appended). None for a response Lastde does not define (too short, or all scales' entropies equal)."""
        was_training = self.model.training
        self.model.eval()
        try:
            if token_ids is not None:
                logps = token_logprobs(self.model, token_ids, self.batch_size, self.tokenizer.pad_token_id or 0)
            else:
                logps = sequence_logprobs(self.model, self.tokenizer, [r["prompt_text"] for r in rows], responses,
                                          self.batch_size)
        finally:
            self.model.train(was_training)
        scores = [lastde_score(lp, self.s, self.epsilon_factor, self.tau_prime) for lp in logps]
        return RewardOutput(scores, [{"tokens": int(lp.numel())} for lp in logps])


SPEC = RewardSpec(
    "lastde", LastdeConfig,
    lambda cfg, ctx: LastdeReward(ctx.policy, ctx.tokenizer, cfg.s, cfg.epsilon_factor, cfg.tau_prime,
                                  cfg.batch_size),
    "mean token log-prob over the std of its multiscale diversity entropy (Xu et al.'s Lastde; higher = more "
    "machine-like)")


# ------------------------------------------------------------------------------------------- a round's diagnostic


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile of sorted values by linear interpolation between order statistics (numpy's default)."""
    if not sorted_values:
        raise ValueError("quantile: no values")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic sup_x |F_a(x) − F_b(x)| of the empirical CDFs, in [0, 1]."""
    if not a or not b:
        raise ValueError("ks_statistic: both samples need values")
    xs, ys = sorted(a), sorted(b)
    i = j = 0
    d = 0.0
    while i < len(xs) and j < len(ys):
        x = min(xs[i], ys[j])
        while i < len(xs) and xs[i] == x:
            i += 1
        while j < len(ys) and ys[j] == x:
            j += 1
        d = max(d, abs(i / len(xs) - j / len(ys)))
    return d


def lastde_summary(values: Sequence[float | None], previous: Sequence[float | None] | None = None,
                   prefix: str = "lastde") -> dict:
    """A round's Lastde distribution: mean, std, p10 / median / p90 and the unscored count (`<prefix>_*`), and with
    the previous round's values its drift: `<prefix>_drift_mean` (this mean − that mean) and `<prefix>_drift_ks` (the
    KS statistic between the two)."""
    scored = sorted(v for v in values if v is not None)
    stats: dict = {f"{prefix}_unscored": len(values) - len(scored)}
    if not scored:
        return stats
    stats.update({f"{prefix}_mean": statistics.fmean(scored),
                  f"{prefix}_std": statistics.pstdev(scored) if len(scored) > 1 else 0.0,
                  f"{prefix}_p10": quantile(scored, 0.1), f"{prefix}_median": quantile(scored, 0.5),
                  f"{prefix}_p90": quantile(scored, 0.9)})
    before = [v for v in previous or () if v is not None]
    if before:
        stats[f"{prefix}_drift_mean"] = stats[f"{prefix}_mean"] - statistics.fmean(before)
        stats[f"{prefix}_drift_ks"] = ks_statistic(scored, before)
    return stats


def generations_lastde(gens: Sequence[dict], cfg: LastdeConfig | None = None) -> list[float | None]:
    """Lastde of each generated sample from the log-probs generation stored (generations.jsonl `logprobs`: the
    model's own distribution, temperature 1), with no forward pass."""
    cfg = cfg or LastdeConfig()
    return [lastde_score(g["logprobs"], cfg.s, cfg.epsilon_factor, cfg.tau_prime) for g in gens]
