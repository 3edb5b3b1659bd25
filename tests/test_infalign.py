"""InfAlign's calibrate-and-transform: hand-computed calibrated rewards (ties, m = 1, all-equal references, scores
outside the reference range), the vectorised forms against the scalar ones, the transforms' signs, monotonicity and
errors, and the inference-time win rate."""

from __future__ import annotations

import math

import pytest
import torch

from selfalign.rewards.infalign import (
    calibrated_reward,
    calibrated_rewards,
    infalign_transform,
    infalign_transform_tensor,
    inference_win_rate,
)

# ---------------------------------------------------------------------------------------------
# calibration


def test_hand_computed_with_ties():
    ref = [1.0, 2.0, 2.0, 3.0]  # m = 4
    # 2.0: one below (1.0), two tied → (1 + ½·2) / 4 = ½
    assert calibrated_reward(2.0, ref) == 0.5
    # 2.5: three below → ¾;   1.0: none below, one tied → ⅛;   3.0: three below, one tied → 7/8
    assert calibrated_reward(2.5, ref) == 0.75
    assert calibrated_reward(1.0, ref) == 0.125
    assert calibrated_reward(3.0, ref) == 0.875
    # the order of the reference samples does not matter
    assert calibrated_reward(2.0, [3.0, 2.0, 1.0, 2.0]) == 0.5


def test_scores_outside_the_reference_range():
    ref = [0.1, 0.4, 0.7]
    assert calibrated_reward(-100.0, ref) == 0.0
    assert calibrated_reward(100.0, ref) == 1.0
    assert calibrated_reward(-math.inf, ref) == 0.0
    assert calibrated_reward(math.inf, ref) == 1.0


def test_one_reference_sample():
    # m = 1: 0 (lose), ½ (tie) or 1 (win)
    assert [calibrated_reward(s, [5.0]) for s in (4.0, 5.0, 6.0)] == [0.0, 0.5, 1.0]


def test_all_equal_reference():
    ref = [2.0] * 5
    assert [calibrated_reward(s, ref) for s in (1.9, 2.0, 2.1)] == [0.0, 0.5, 1.0]


def test_invariant_to_increasing_rescaling():
    torch.manual_seed(0)
    ref, scores = torch.randn(16), torch.randn(10)
    plain = calibrated_rewards(scores, ref)
    for f in (lambda x: 3 * x + 7, torch.exp, lambda x: x**3):
        assert torch.equal(calibrated_rewards(f(scores), f(ref)), plain)


def test_uniform_under_the_reference():
    # the reference's own samples, each against the others: (rank − ½) / m when there are no ties
    ref = torch.tensor([0.3, -1.0, 2.5, 0.9])
    assert calibrated_rewards(ref, ref).tolist() == [0.375, 0.125, 0.875, 0.625]


def test_tensor_form_equals_the_scalar_one():
    gen = torch.Generator().manual_seed(1)
    for m in (1, 2, 5, 16):
        ref = torch.randint(0, 4, (m,), generator=gen).double()  # integer rewards: many ties
        scores = torch.cat([torch.randint(-1, 6, (12,), generator=gen).double(), torch.randn(4, generator=gen)])
        out = calibrated_rewards(scores, ref)
        assert out.dtype == torch.float64 and out.shape == (16,)
        assert out.tolist() == [calibrated_reward(float(s), ref) for s in scores]
        assert calibrated_rewards(scores.long(), ref.long()).shape == (16,)  # integer tensors work too


def test_tensor_form_per_prompt_rows():
    # (prompts, n) against (prompts, m): each row against its own reference samples
    scores = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    ref = torch.tensor([[2.0, 2.0], [0.0, 10.0]])
    assert calibrated_rewards(scores, ref).tolist() == [[0.0, 0.5, 1.0], [0.5, 0.5, 0.5]]
    # a 1-D reference serves every row
    shared = calibrated_rewards(scores, torch.tensor([2.0, 2.0]))
    assert shared.tolist() == [[0.0, 0.5, 1.0], [0.0, 0.5, 1.0]]


def test_calibration_errors():
    with pytest.raises(ValueError, match="at least one reference"):
        calibrated_reward(1.0, [])
    with pytest.raises(ValueError, match="at least one reference"):
        calibrated_rewards(torch.ones(3), torch.ones(0))
    with pytest.raises(ValueError, match="NaN"):
        calibrated_reward(math.nan, [1.0])
    with pytest.raises(ValueError, match="NaN"):
        calibrated_rewards(torch.ones(3), torch.tensor([1.0, math.nan]))
    with pytest.raises(ValueError, match="leading dims"):
        calibrated_rewards(torch.ones(2, 3), torch.ones(3, 4))


# ---------------------------------------------------------------------------------------------
# transforms


def test_transform_values_and_signs():
    assert infalign_transform(0.0, "bon", 5.0) == 1.0
    assert infalign_transform(1.0, "bon", 5.0) == pytest.approx(math.e**5)
    assert infalign_transform(0.5, "bon", 2.0) == pytest.approx(math.e)
    assert infalign_transform(0.0, "won", -10.0) == -1.0
    assert infalign_transform(1.0, "won", -10.0) == pytest.approx(-math.exp(-10))
    assert infalign_transform(0.5, "won", -2.0) == pytest.approx(-1 / math.e)
    assert infalign_transform(0.3, "identity") == 0.3
    assert infalign_transform(0.3, "identity", 7.0) == 0.3  # t unused
    grid = [i / 20 for i in range(21)]
    assert all(infalign_transform(c, "bon", 4.0) >= 1.0 for c in grid)
    assert all(-1.0 <= infalign_transform(c, "won", -4.0) < 0.0 for c in grid)


@pytest.mark.parametrize(("kind", "t"), [("bon", 0.5), ("bon", 5.0), ("bon", 40.0), ("won", -0.5), ("won", -10.0),
                                         ("identity", None)])
def test_transforms_are_increasing(kind, t):
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)
    values = [infalign_transform(float(c), kind, t) for c in grid]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    # bon convex, won concave: second differences of the grid values
    second = torch.tensor(values).diff().diff()
    if kind == "bon":
        assert (second > 0).all()
    elif kind == "won":
        assert (second < 0).all()
    # the tensor form equals the scalar one
    tensor = infalign_transform_tensor(grid, kind, t)
    assert tensor.dtype == torch.float64 and tensor.tolist() == pytest.approx(values, rel=1e-15)


def test_tensor_transform_keeps_shape_and_dtype():
    c = torch.tensor([[0.0, 0.25], [0.5, 1.0]], dtype=torch.float32)
    out = infalign_transform_tensor(c, "bon", 2.0)
    assert out.shape == (2, 2) and out.dtype == torch.float32
    assert torch.allclose(out, torch.exp(2 * c))
    assert infalign_transform_tensor(torch.tensor([0, 1]), "identity").dtype == torch.float64
    # calibrate then transform, end to end
    ref = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = infalign_transform_tensor(calibrated_rewards(torch.tensor([0.0, 2.0, 9.0]), ref), "won", -4.0)
    assert out.tolist() == pytest.approx([-1.0, -math.exp(-4 * 0.375), -math.exp(-4.0)])


def test_transform_errors():
    with pytest.raises(ValueError, match="bon .* needs t > 0"):
        infalign_transform(0.5, "bon", -1.0)
    with pytest.raises(ValueError, match="bon .* needs t > 0"):
        infalign_transform(0.5, "bon", 0.0)
    with pytest.raises(ValueError, match="won .* needs t < 0"):
        infalign_transform(0.5, "won", 2.0)
    with pytest.raises(ValueError, match="needs a finite t"):
        infalign_transform(0.5, "bon")
    with pytest.raises(ValueError, match="needs a finite t"):
        infalign_transform(0.5, "won", -math.inf)
    with pytest.raises(ValueError, match="kind must be one of bon, won, identity; got 'best'"):
        infalign_transform(0.5, "best", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        infalign_transform(1.5, "bon", 1.0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        infalign_transform(math.nan, "identity")
    with pytest.raises(ValueError, match="won .* needs t < 0"):
        infalign_transform_tensor(torch.tensor([0.5]), "won", 1.0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        infalign_transform_tensor(torch.tensor([0.5, -0.1]), "bon", 1.0)


# ---------------------------------------------------------------------------------------------
# inference-time win rate


def test_win_rate_of_the_reference_itself_is_half():
    # π = π_ref: calibrated rewards uniform on [0, 1] (a fine midpoint grid), best-of-n and worst-of-n alike
    k = 4000
    uniform = (torch.arange(k, dtype=torch.float64) + 0.5) / k
    for n in (1, 2, 4, 8):
        assert inference_win_rate(uniform, n, "bon") == pytest.approx(0.5, abs=1e-3)
        assert inference_win_rate(uniform, n, "won") == pytest.approx(0.5, abs=1e-3)


def test_win_rate_hand_computed():
    # n = 1: the standard win rate, mean(c)
    assert inference_win_rate([0.2, 0.9], 1) == pytest.approx(0.55)
    assert inference_win_rate([0.2, 0.9], 1, "won") == pytest.approx(0.55)
    # k = 2, n = 2, c = (0.2, 0.9): the best of two is 0.2 w.p. ¼, 0.9 w.p. ¾, and beats the reference's best of two
    # w.p. c²: ¼·0.04 + ¾·0.81 = 0.6175
    assert inference_win_rate([0.9, 0.2], 2) == pytest.approx(0.25 * 0.04 + 0.75 * 0.81)
    # worst of two: 0.2 w.p. ¾, 0.9 w.p. ¼; beats the reference's worst of two w.p. 1 − (1 − c)²
    assert inference_win_rate([0.9, 0.2], 2, "won") == pytest.approx(0.75 * (1 - 0.64) + 0.25 * (1 - 0.01))
    # a policy always at the top wins always; at the bottom never
    assert inference_win_rate([1.0, 1.0], 4) == 1.0
    assert inference_win_rate([0.0], 4, "won") == 0.0


def test_win_rate_errors():
    with pytest.raises(ValueError, match="n must be"):
        inference_win_rate([0.5], 0)
    with pytest.raises(ValueError, match="kind"):
        inference_win_rate([0.5], 2, "identity")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        inference_win_rate([], 2)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        inference_win_rate([1.2], 2)


def kl_tilted_samples(kind: str, t: float | None, kl: float = 0.5, grid: int = 4000, k: int = 2000) -> torch.Tensor:
    """Calibrated rewards of the KL-regularised optimum π ∝ π_ref·exp(Φ_t(c)/β) with β set so KL(π ‖ π_ref) = kl
    nats: under π_ref c is Uniform(0, 1), so π's density of c is ∝ exp(Φ_t(c)/β) on a midpoint grid; returns k of
    its quantiles (a deterministic sample)."""
    u = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    phi = infalign_transform_tensor(u, kind, t)
    phi = (phi - phi.min()) / (phi.max() - phi.min())  # β absorbs the scale
    lo, hi = 1e-4, 1e4
    for _ in range(60):  # bisection on log β: 1e8^(2^-60), exact enough
        beta = math.sqrt(lo * hi)
        p = torch.softmax(phi / beta, 0)
        lo, hi = (beta, hi) if float((p * (p * grid).log()).sum()) > kl else (lo, beta)
    idx = torch.searchsorted(p.cumsum(0), (torch.arange(k, dtype=torch.float64) + 0.5) / k).clamp(max=grid - 1)
    return u[idx]


def test_each_transform_wins_the_decoding_it_is_for():
    # At the same KL (0.5 nats): calibration alone maximises the standard win rate (n = 1), exp(t·c) with t > 0 beats
    # it under best-of-4, −exp(t·c) with t < 0 under worst-of-4 (a wrong sign would lose).
    identity, bon, won = (kl_tilted_samples(*a) for a in (("identity", None), ("bon", 10.0), ("won", -10.0)))
    assert inference_win_rate(identity, 1) > max(inference_win_rate(bon, 1), inference_win_rate(won, 1)) + 0.02
    assert inference_win_rate(bon, 4, "bon") > max(inference_win_rate(identity, 4, "bon"),
                                                   inference_win_rate(won, 4, "bon")) + 0.05
    assert inference_win_rate(won, 4, "won") > max(inference_win_rate(identity, 4, "won"),
                                                   inference_win_rate(bon, 4, "won")) + 0.05
    for c in (identity, bon, won):  # every one of them beats π_ref at plain sampling
        assert inference_win_rate(c, 1) > 0.6
