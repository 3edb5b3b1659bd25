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


# ---------------------------------------------------------------------------------------------
# the registered reward, the method's checks, and one round of each algorithm


class _FixedReward:
    """A base reward that scores a response by a table (None: cannot score it)."""

    name = "fixed"

    def __init__(self, table):
        self.table = table

    def score(self, rows, responses, token_ids=None):
        from selfalign.rewards import RewardOutput

        return RewardOutput([self.table[y] for y in responses])


def test_the_reward_calibrates_against_its_prompts_reference_scores_by_hand():
    from selfalign.rewards import RewardContext, build_reward
    from selfalign.rewards.infalign import Calibration, InfAlignConfig

    calibration = Calibration({"p": [1.0, 2.0, 2.0, 3.0], "q": [5.0]}, _FixedReward({"a": 2.0, "b": 9.0, "c": None}))
    rows = [{"id": "p"}, {"id": "p"}, {"id": "q"}, {"id": "p"}, {"id": "r"}]
    ctx = RewardContext(None, inputs={"infalign": calibration})
    out = build_reward("infalign", InfAlignConfig(kind="bon", t=2.0), ctx).score(rows, ["a", "b", "a", "c", "a"])
    # p: 2.0 → ½ (one below, two tied of 4); 9.0 → 1; q (m = 1): 2.0 < 5.0 → 0; unscored; prompt without reference
    assert out.scores == pytest.approx([math.exp(1.0), math.exp(2.0), 1.0, None, None])
    assert [d["calibrated"] for d in out.details] == [0.5, 1.0, 0.0, None, None]
    won = build_reward("infalign", InfAlignConfig(kind="won", t=-2.0), ctx).score(rows[:2], ["a", "b"])
    assert won.scores == pytest.approx([-math.exp(-1.0), -math.exp(-2.0)])
    identity = build_reward("infalign", InfAlignConfig(kind="identity"), ctx).score(rows[:2], ["a", "b"])
    assert identity.scores == [0.5, 1.0]


def test_the_reward_outside_a_round_is_one_line():
    from selfalign.config import ConfigError
    from selfalign.rewards import RewardContext, build_reward
    from selfalign.rewards.infalign import InfAlignConfig

    with pytest.raises(ConfigError, match=r"^best_of_n: infalign needs its round's infalign inputs"):
        build_reward("infalign", InfAlignConfig(), RewardContext(None, where="best_of_n"))


@pytest.mark.parametrize(("raw", "message"), [
    ({"rewards": {"infalign": {"t": -1}}}, r"rewards\.infalign\.t: bon \(best-of-N\) needs t > 0, got -1\.0"),
    ({"rewards": {"infalign": {"kind": "won"}}}, r"rewards\.infalign\.t: won \(worst-of-N\) needs t < 0, got 10\.0"),
    ({"rewards": {"infalign": {"kind": "best"}}}, r"rewards\.infalign\.kind: 'best' is not allowed"),
    ({"rewards": {"infalign": {"m": 0}}}, r"rewards\.infalign\.m: 0 is out of range"),
    ({"rewards": {"infalign": {"reference": "previous"}}}, r"rewards\.infalign\.reference: 'previous' is not allowed"),
    ({"rewards": {"infalign": {"reward": "likelihod"}}},
     r"rewards\.infalign\.reward: 'likelihod' is not a registered reward .*; did you mean 'likelihood'\?"),
    ({"rewards": {"infalign": {"reward": "majority"}}}, r"rewards\.infalign\.reward: majority scores a sample against"),
    ({"rewards": {"infalign": {"reward": "infalign"}}}, r"rewards\.infalign\.reward: infalign cannot be InfAlign's"),
    ({"rewards": {"infalign": {"reward_options": {"normalise": True}}}},
     r"rewards\.infalign\.reward_options\.normalise: unknown key"),
    ({"train": {"algorithm": "grpo", "batch_size": 8, "grpo_rewards": [{"source": "infalign", "t": 0}]}},
     r"train\.grpo_rewards\[0\]\.t: bon \(best-of-N\) needs t > 0"),
    ({"eval": {"evaluators": {"bon_win_rate": {"reward": "infalign"}}}},
     r"eval\.evaluators\.bon_win_rate\.reward: infalign needs its round's inputs"),
])
def test_config_errors_name_the_key(raw, message):
    from selfalign.config import ConfigError
    from selfalign.recipe import recipe_from_dict

    with pytest.raises(ConfigError, match="^recipe: " + message) as e:
        recipe_from_dict(raw)
    assert "\n" not in str(e.value)


def _reference(out):
    from selfalign.artifacts import read_jsonl

    ref: dict = {}
    for r in read_jsonl(out / "round_1/reference.jsonl"):
        ref.setdefault(r["prompt_id"], []).append(r)
    return ref


def test_a_grpo_round_draws_the_reference_set_and_trains_on_the_transformed_reward(tiny_model, tmp_path):
    from selfalign import pipeline
    from selfalign.artifacts import read_json, read_jsonl
    from selfalign.recipe import recipe_from_dict
    from tests.conftest import tiny_recipe

    raw = tiny_recipe(tiny_model, **{
        "rewards": {"infalign": {"reward": "likelihood", "kind": "bon", "t": 3.0, "m": 4}},
        "train": {"algorithm": "grpo", "learning_rate": 1e-3, "batch_size": 8,
                  "grpo_rewards": [{"source": "infalign", "m": 5}], "grpo": {"gradient_checkpointing": False}},
        "generation.max_new_tokens": 12, "eval.max_new_tokens": 12, "eval.sampled": False, "prompts.train_per_round": 4,
        "prompts.eval_prompts": 4, "tracking.wandb.enabled": False})
    summary = pipeline.run(recipe_from_dict(raw), tmp_path)
    assert list(read_json(tmp_path / "manifest.json")["stages"]) == ["round_0/eval", "round_1/reference",
                                                                     "round_1/train", "round_1/eval"]
    ref = _reference(tmp_path)  # the term's m = 5 overrides rewards.infalign's 4
    assert len(ref) == 4 and all(sorted(r["sample"] for r in rs) == list(range(5)) for rs in ref.values())
    assert all(isinstance(r["score"], float) and r["score"] <= 0 for rs in ref.values() for r in rs)  # mean log p
    assert summary["rounds"][1]["reference"]["m"] == 5 and summary["rounds"][1]["reference"]["samples"] == 20
    rollouts = read_jsonl(tmp_path / "round_1/rollouts.jsonl")
    grid = [math.exp(3.0 * k / 10) for k in range(11)]  # Φ_3 of the multiples of 1/(2m), m = 5: in [1, e^3]
    values = [r["scores"]["infalign"] for r in rollouts]
    assert len(values) == 16 and all(min(abs(v / g - 1) for g in grid) < 1e-6 for v in values)  # float32 in TRL
    assert len(set(values)) > 1  # the transformed reward varies, so GRPO has a signal


def test_a_dpo_round_ranks_by_the_calibrated_reward(tiny_model, tmp_path):
    from selfalign import pipeline
    from selfalign.artifacts import read_jsonl
    from selfalign.recipe import recipe_from_dict
    from tests.conftest import tiny_recipe

    raw = tiny_recipe(tiny_model, **{
        "rewards": {"likelihood": {}, "infalign": {"reward": "likelihood", "kind": "bon", "t": 2.0, "m": 3}},
        "pairs.reward": "infalign", "generation.max_new_tokens": 12, "tracking.wandb.enabled": False,
        "eval.max_new_tokens": 12, "eval.sampled": False, "prompts.train_per_round": 4, "prompts.eval_prompts": 4})
    pipeline.run(recipe_from_dict(raw), tmp_path)
    ref = {pid: [r["score"] for r in rs] for pid, rs in _reference(tmp_path).items()}
    assert len(ref) == 4 and all(len(v) == 3 for v in ref.values())
    gens = read_jsonl(tmp_path / "round_1/generations.jsonl")
    rewards = read_jsonl(tmp_path / "round_1/rewards.jsonl")
    for g, r in zip(gens, rewards, strict=True):
        d = r["details"]["infalign"]
        assert d["base"] == pytest.approx(r["scores"]["likelihood"])  # r on M_0, the round's starting model
        assert d["calibrated"] == calibrated_reward(d["base"], ref[g["prompt_id"]])
        assert r["scores"]["infalign"] == pytest.approx(math.exp(2.0 * d["calibrated"]))
        assert 1.0 <= r["scores"]["infalign"] <= math.exp(2.0)
    by_sample = {(g["prompt_id"], g["sample"]): r["scores"]["infalign"] for g, r in zip(gens, rewards, strict=True)}
    pairs = read_jsonl(tmp_path / "round_1/pairs.jsonl")
    assert pairs
    for p in pairs:
        assert p["chosen_score"] == by_sample[(p["prompt_id"], p["chosen_sample"])]
        assert p["rejected_score"] == by_sample[(p["prompt_id"], p["rejected_sample"])] < p["chosen_score"]


# ---------------------------------------------------------------------------------------------
# scripts/infalign_sweep.py: the KL-regularised optimum in calibrated space


def test_sweep_math_on_the_tilted_uniform_by_hand():
    """identity at β = 1: p(c) = e^c / (e − 1) on [0, 1]; KL(p ‖ U) = E_p[c] − log(e − 1), E_p[c] = 1/(1 − 1/e) − 1;
    W_1 = E_p[c]; W_2 = ∫ 2 F p c² = 2/(e − 1)² ∫ (e^{2c} − e^c) c² dc = 2/(e − 1)² ((e² − 1)/4 − (e − 2))."""
    from tests.conftest import load_script

    sw = load_script("infalign_sweep")
    e = math.e
    mean = 1 / (1 - 1 / e) - 1
    c, p = sw.tilted("identity", None, 1.0)
    assert sw.kl_to_uniform(c, p) == pytest.approx(mean - math.log(e - 1), abs=1e-6)
    assert sw.win_rate(c, p, 1) == pytest.approx(mean, abs=1e-6)
    assert sw.win_rate(c, p, 2) == pytest.approx(2 / (e - 1) ** 2 * ((e * e - 1) / 4 - (e - 2)), abs=1e-6)
    assert sw.beta_for_kl("identity", None, mean - math.log(e - 1)) == pytest.approx(1.0, rel=1e-4)
    c, p = sw.tilted("bon", 5.0, 1e9)  # β → ∞: π = π_ref, a win rate of ½ at every N and no KL
    assert sw.kl_to_uniform(c, p) == pytest.approx(0.0, abs=1e-9)
    assert [sw.win_rate(c, p, n) for n in (1, 2, 8)] == pytest.approx([0.5] * 3, abs=1e-6)


def test_sweep_prefers_identity_at_n_1_and_larger_t_for_larger_n():
    from tests.conftest import load_script

    res = load_script("infalign_sweep").sweep([1, 2, 8], 0.5, ts=(1, 5, 30), points=4001)
    assert res["identity"][1] > max(res["bon"][t][1] for t in (1, 5, 30))  # calibration alone wins the plain rate
    assert res["best_t"][2] == 5 and res["best_t"][8] == 30


def test_the_sandbox_recipe_trains_one_round(tmp_path):
    """recipes/sandbox/infalign_bon.yaml itself, one round at a small size: the reference set is drawn, GRPO trains
    on the transformed reward (every rollout's infalign score in [1, e^t]), and both best-of-N evaluators report."""
    from selfalign import pipeline
    from selfalign.artifacts import read_jsonl
    from selfalign.recipe import load_recipe

    recipe = load_recipe("recipes/sandbox/infalign_bon.yaml", [
        "prompts.train_per_round=16", "prompts.eval_prompts=8", "generation.samples_per_prompt=4",
        "rewards.infalign.m=4", "train.batch_size=16", "eval.evaluators.bon_verifier.samples=2",
        "eval.evaluators.bon_verifier.best_of=[1, 2]", "eval.evaluators.bon_likelihood.samples=2",
        "eval.evaluators.bon_likelihood.best_of=[1, 2]", "tracking.wandb.enabled=false", "tracking.console=false"])
    summary = pipeline.run(recipe, tmp_path)
    assert summary["rounds"][1]["reference"]["samples"] == 16 * 4
    assert summary["rounds"][1]["train"]["steps"] >= 1
    scores = [r["scores"]["infalign"] for r in read_jsonl(tmp_path / "round_1/rollouts.jsonl")]
    assert len(scores) == 16 * 4 and all(1.0 - 1e-6 <= s <= math.exp(10.0) * (1 + 1e-6) for s in scores)
    assert {"bon_verifier/win_rate@2", "bon_likelihood/win_rate@2"} <= set(summary["rounds"][1]["eval"])
