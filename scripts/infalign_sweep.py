"""InfAlign's transform parameter t, offline: the best-of-N win rate against π_ref of the KL-regularised optimum for
the reward Φ_t(c), at a fixed KL, in calibrated space (no model involved).

    python scripts/infalign_sweep.py                       # N = 1, 2, 4, 8 at KL 0.5 nats; t = 0.5 … 60
    python scripts/infalign_sweep.py --n 4 --kl 0.25 --json sweep.json

Under π_ref a calibrated reward is c ~ U(0, 1). The optimum of E[Φ(c)] − β·KL(π ‖ π_ref) has density
p(c) ∝ exp(Φ(c)/β) on [0, 1]; for each t, β is set (bisection on log β) so that KL(p ‖ U) = ∫ p log p hits the
target. Best of N of p beats best of N of U with probability W = ∫ N F(c)^(N−1) p(c) c^N dc (F the CDF of p; its
best of N has density N F^(N−1) p, the reference's best of N has CDF c^N). `identity` (Φ = c) is calibration alone,
`bon` Φ_t = exp(t·c). The script prints, for every N, W of each t and of identity, and the t that maximises W.
Integrals: the trapezoid rule on a uniform grid of `points` (default 20,001), in log space (no overflow at large
t/β).
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

TS = (0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 60)


def _grid(points: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, points)


def phi(c: np.ndarray, kind: str, t: float | None = None) -> np.ndarray:
    """Φ(c): `identity` c, `bon` exp(t·c)."""
    return c if kind == "identity" else np.exp(t * c)


def tilted(kind: str, t: float | None, beta: float, points: int = 20_001) -> tuple[np.ndarray, np.ndarray]:
    """(grid c, density p(c) ∝ exp(Φ(c)/β) on [0, 1], normalised by the trapezoid rule)."""
    c = _grid(points)
    logits = phi(c, kind, t) / beta
    p = np.exp(logits - logits.max())
    return c, p / np.trapezoid(p, c)


def kl_to_uniform(c: np.ndarray, p: np.ndarray) -> float:
    """KL(p ‖ U(0, 1)) = ∫ p log p (0·log 0 = 0)."""
    return float(np.trapezoid(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), c))


def win_rate(c: np.ndarray, p: np.ndarray, n: int) -> float:
    """W = ∫ N F(c)^(N−1) p(c) c^N dc: best of N of p beats best of N of U(0, 1) (½ for p = U)."""
    cdf = np.concatenate([[0.0], np.cumsum((p[1:] + p[:-1]) / 2 * np.diff(c))])
    cdf = np.clip(cdf / cdf[-1], 0.0, 1.0)
    return float(np.trapezoid(n * cdf ** (n - 1) * p * c**n, c))


def beta_for_kl(kind: str, t: float | None, target: float, points: int = 20_001, iters: int = 80) -> float:
    """β with KL(p_β ‖ U) = target (KL falls as β grows), by bisection on log β in [1e-6, 1e6]·max Φ."""
    scale = float(np.abs(phi(np.array([1.0]), kind, t))[0])
    lo, hi = math.log(1e-6 * scale), math.log(1e6 * scale)
    for _ in range(iters):
        mid = (lo + hi) / 2
        if kl_to_uniform(*tilted(kind, t, math.exp(mid), points)) > target:
            lo = mid  # too far from U: a larger β
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


def sweep(ns: list[int], kl: float, ts: tuple[float, ...] = TS, points: int = 20_001) -> dict:
    """{"kl", "identity": {N: W}, "bon": {t: {N: W}}, "best_t": {N: t}, "best": {N: W}, "beta": {...}}."""
    out: dict = {"kl": kl, "identity": {}, "bon": {}, "beta": {}, "best_t": {}, "best": {}}
    beta = beta_for_kl("identity", None, kl, points)
    c, p = tilted("identity", None, beta, points)
    out["beta"]["identity"] = beta
    out["identity"] = {n: win_rate(c, p, n) for n in ns}
    for t in ts:
        beta = beta_for_kl("bon", t, kl, points)
        c, p = tilted("bon", t, beta, points)
        out["beta"][t] = beta
        out["bon"][t] = {n: win_rate(c, p, n) for n in ns}
    for n in ns:
        best = max(ts, key=lambda t: out["bon"][t][n])
        out["best_t"][n], out["best"][n] = best, out["bon"][best][n]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="1,2,4,8", help="comma-separated N (best of N)")
    ap.add_argument("--kl", type=float, default=0.5, help="target KL(π ‖ π_ref) in nats")
    ap.add_argument("--t", default=",".join(str(t) for t in TS), help="comma-separated t of Φ_t = exp(t·c)")
    ap.add_argument("--points", type=int, default=20_001)
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    ns = [int(x) for x in args.n.split(",")]
    res = sweep(ns, args.kl, tuple(float(x) for x in args.t.split(",")), args.points)
    print(f"best-of-N win rate against π_ref at KL {args.kl} nats (calibrated space)")
    print("t".rjust(9) + "".join(f"N={n}".rjust(9) for n in ns))
    print("identity".rjust(9) + "".join(f"{res['identity'][n]:9.4f}" for n in ns))
    for t, row in res["bon"].items():
        print(f"{t:9g}" + "".join(f"{row[n]:9.4f}" for n in ns))
    print("best t".rjust(9) + "".join(f"{res['best_t'][n]:9g}" for n in ns))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1, default=str)


if __name__ == "__main__":
    main()
