"""Lastde: hand-computed values, the edge cases where it is undefined, agreement with a transcription of the
official code on random sequences, and the reward on the tiny random model."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from selfalign.rewards import REWARDS, reward_config
from selfalign.rewards.lastde import (
    LastdeReward,
    diversity_entropy,
    lastde_score,
    multiscale_diversity_entropy,
)
from selfalign.scoring import token_logprobs, tokenize_pair

# ---------------------------------------------------------------------------------------------
# A faithful transcription of the official code, github.com/TrustMedia-zju/Lastde_Detector (commit ead6939):
# `histcounts`, `DE`, `calculate_DE`, `get_tau_scale_DE`, `get_tau_multiscale_DE` from
# py_scripts/baselines/scoring_methods/fastMDE.py, and `get_lastde` from
# py_scripts/baselines/scoring_methods/based_scoring_baselines.py from its `log_likelihood` on (the gather of the
# label log-probs it starts with is the input here). Only comments and the parameters of get_lastde are changed.


def official_histcounts(data, epsilon, min_=-1, max_=1):
    data = data.float()
    hist = torch.histc(data, bins=epsilon, min=min_, max=max_)
    statistical_probabilities_sequence = hist / torch.sum(hist)
    return hist, statistical_probabilities_sequence


def official_DE(statistical_probabilities_sequence, epsilon):  # noqa: N802 (the official name)
    DE_value = -1 / torch.log(torch.tensor(epsilon)) * torch.nansum(  # noqa: N806
        statistical_probabilities_sequence * torch.log(statistical_probabilities_sequence), dim=0)
    return DE_value


def official_calculate_DE(ori_data, embed_size, epsilon):  # noqa: N802
    orbits = ori_data.unfold(1, embed_size, 1)
    orbits_cosine_similarity_sequence = torch.nn.functional.cosine_similarity(orbits[:, :-1], orbits[:, 1:], dim=-1)
    batched_1 = torch.vmap(official_histcounts, in_dims=-1, out_dims=1)
    hist, statistical_probabilities_sequence = batched_1(orbits_cosine_similarity_sequence, epsilon=epsilon)
    DE_value = official_DE(statistical_probabilities_sequence, epsilon)  # noqa: N806
    return DE_value


def official_get_tau_scale_DE(ori_data, embed_size, epsilon, tau):  # noqa: N802
    windows = ori_data.unfold(1, tau, 1)
    tau_scale_sequence = torch.mean(windows, dim=3)
    de = official_calculate_DE(tau_scale_sequence, embed_size, epsilon)
    return de


def official_get_tau_multiscale_DE(ori_data, embed_size, epsilon, tau_prime):  # noqa: N802
    mde = []
    for temp_tau in range(1, tau_prime + 1):
        value = official_get_tau_scale_DE(ori_data, embed_size, epsilon, temp_tau)
        mde.append(value)
    mde = torch.stack(mde, dim=0)
    std_mde = torch.std(mde, dim=0)
    return std_mde


def official_get_lastde(log_likelihood, embed_size=3, epsilon_factor=10, tau_prime=5):
    # log_likelihood: [1, n, 1], as lprobs.gather(dim=-1, index=labels) leaves it
    templl = log_likelihood.mean(dim=1)
    epsilon = int(epsilon_factor * log_likelihood.shape[1])  # get_lastde: 10 * n; lastde_doubleplus: int(eps * n)
    aggmde = official_get_tau_multiscale_DE(ori_data=log_likelihood, embed_size=embed_size, epsilon=epsilon,
                                            tau_prime=tau_prime)
    lastde = templl / aggmde
    return lastde.cpu().item()


def official(x: torch.Tensor, s=3, epsilon_factor=10, tau_prime=5) -> float:
    with warnings.catch_warnings():  # "no batching rule for aten::histc": vmap falls back to a loop
        warnings.simplefilter("ignore", UserWarning)
        return official_get_lastde(x.reshape(1, -1, 1), s, epsilon_factor, tau_prime)


def official_scale_des(x: torch.Tensor, s: int, epsilon: int, tau_prime: int) -> list[float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [official_get_tau_scale_DE(x.reshape(1, -1, 1), s, epsilon, tau).item()
                for tau in range(1, tau_prime + 1)]


# ---------------------------------------------------------------------------------------------
# hand-computed values


def test_hand_computed_tiny_sequence():
    # x = [−1, −2, −2, −1, −3], s = 2, τ′ = 2, ε = 10·5 = 50 bins of width 0.04 on [−1, 1]; bin = ⌊(c + 1) / 0.04⌋.
    x = torch.tensor([-1.0, -2.0, -2.0, -1.0, -3.0])
    # τ = 1: the series itself; delay vectors (−1,−2), (−2,−2), (−2,−1), (−1,−3); cosines of consecutive ones:
    #   (2 + 4) / (√5·√8) = 6/√40 ≈ 0.9487 → bin ⌊48.72⌋ = 48
    #   (4 + 2) / (√8·√5) = 6/√40 ≈ 0.9487 → bin 48
    #   (2 + 3) / (√5·√10) = 5/√50 ≈ 0.7071 → bin ⌊42.68⌋ = 42
    # histogram p = (2/3, 1/3): DE_1 = (ln 3 − (2/3) ln 2) / ln 50
    de1 = (math.log(3) - 2 / 3 * math.log(2)) / math.log(50)
    # τ = 2: moving averages (−1.5, −2, −1.5, −2); vectors (−1.5,−2), (−2,−1.5), (−1.5,−2); both cosines
    #   (3 + 3) / (2.5·2.5) = 0.96, one bin: DE_2 = 0
    assert multiscale_diversity_entropy(x, s=2, epsilon=50, tau_prime=2).tolist() == pytest.approx([de1, 0.0],
                                                                                                    abs=1e-12)
    # unbiased std of two values = |DE_1 − DE_2| / √2; mean(x) = −9/5
    expected = (-9 / 5) / (de1 / math.sqrt(2))
    assert lastde_score(x, s=2, epsilon_factor=10, tau_prime=2) == pytest.approx(expected, rel=1e-12)
    assert official(x.double(), s=2, epsilon_factor=10, tau_prime=2) == pytest.approx(expected, rel=1e-6)
    # a plain list reads the same as a tensor
    assert lastde_score([-1, -2, -2, -1, -3], s=2, tau_prime=2) == lastde_score(x, s=2, tau_prime=2)


def test_the_official_docstring_example():
    # fastMDE.get_tau_multiscale_DE's docstring (also the paper's Figure 2): [1, 2, 13, 7, 9, 5, 4], s = 3, ε = 10,
    # τ′ = 3 → DE = [0.30103, 0, 0]. τ = 1 cosines ≈ 0.605, 0.699, 0.924, 0.931 → bins 8, 8, 9, 9 (width 0.2):
    # p = (½, ½), DE_1 = ln 2 / ln 10. τ = 2 (3 cosines) and τ = 3 (2 cosines) fall in one bin each.
    x = torch.tensor([1.0, 2, 13, 7, 9, 5, 4])
    first = 119 / math.sqrt(174 * 222)  # (1·2 + 2·13 + 13·7) / (|(1,2,13)|·|(2,13,7)|)
    assert first == pytest.approx(0.6054744899487247)
    de = multiscale_diversity_entropy(x, s=3, epsilon=10, tau_prime=3)
    assert de.tolist() == pytest.approx([math.log(2) / math.log(10), 0.0, 0.0], abs=1e-12)
    assert de.tolist() == pytest.approx(official_scale_des(x.double(), 3, 10, 3), abs=1e-6)
    assert diversity_entropy(x, s=3, epsilon=10) == pytest.approx(math.log10(2), abs=1e-12)


def test_bin_edges_follow_torch_histc():
    # ε = 4 bins on [−1, 1]: [−1, −.5), [−.5, 0), [0, .5), [.5, 1]; c = 1 goes to the last bin. s = 1: the cosine
    # of two scalars is their sign product (0 when one is 0), so the series sets the cosines directly.
    # series (1, 1, −1, 0, 2): cosines 1, −1, 0, 0 → bins 3, 0, 2, 2 → p = (¼, ¼, ½)
    h = (2 * 0.25 * math.log(4) + 0.5 * math.log(2)) / math.log(4)
    assert diversity_entropy(torch.tensor([1.0, 1, -1, 0, 2]), s=1, epsilon=4) == pytest.approx(h, abs=1e-12)
    # a zero delay vector has cosine 0 with anything (torch's eps), not NaN
    assert diversity_entropy(torch.tensor([0.0, 0, 0, 0]), s=2, epsilon=4) == 0.0


# ---------------------------------------------------------------------------------------------
# where it is undefined, and the minimum length


def test_minimum_length_and_shorter():
    torch.manual_seed(0)
    # defaults s = 3, τ′ = 5: the official code accepts n >= τ′ + s − 1 = 7; at n = 7 scale 5 has one delay vector,
    # no cosine, an empty histogram, and DE_5 = 0 (the official 0/0 skipped by nansum)
    x = -torch.rand(7, dtype=torch.float64) * 3
    de = multiscale_diversity_entropy(x, 3, 70, 5)
    assert de[-1].item() == 0.0 and de[3].item() == 0.0  # scale 4 has one cosine: one bin
    assert lastde_score(x) == pytest.approx(official(x), rel=1e-5)
    for n in range(7):
        assert lastde_score(-torch.rand(n)) is None, n
    with pytest.raises(RuntimeError):  # the official code has no value there either
        official(-torch.rand(6, dtype=torch.float64))
    assert lastde_score([]) is None


def test_degenerate_sequences_give_none():
    # constant log-probs: every delay vector equal, every cosine 1, every DE_τ = 0, std 0 (official: −inf)
    assert lastde_score(torch.full((20,), -0.7)) is None
    assert official(torch.full((20,), -0.7, dtype=torch.float64)) == -math.inf
    # all-zero log-probs (p = 1 everywhere): zero vectors, cosines 0, one bin, std 0 (official: 0/0 = NaN)
    assert lastde_score(torch.zeros(20)) is None
    assert math.isnan(official(torch.zeros(20, dtype=torch.float64)))
    # one cosine at scale 1, none at scale 2 (s = 3, τ′ = 2, n = 4): both DE = 0
    assert lastde_score(torch.tensor([-1.0, -2.0, -0.5, -3.0]), s=3, tau_prime=2) is None
    # a periodic sequence: every scale's cosines in one bin each, so std 0
    assert lastde_score(torch.tensor([-1.0, -2.0] * 10), s=2, tau_prime=3) is None
    # non-finite log-probs
    assert lastde_score(torch.tensor([-1.0, -2.0, -math.inf, -1.0, -3.0, -2.0, -1.0, -4.0])) is None
    assert lastde_score(torch.tensor([-1.0, -2.0, math.nan, -1.0, -3.0, -2.0, -1.0, -4.0])) is None
    # too few bins: ε = int(0.2·8) = 1 (official: ln 1 = 0, NaN)
    assert lastde_score(-torch.rand(8), epsilon_factor=0.2) is None
    # ε = int(0.2·10) = 2 is the fewest bins that define it (log-probs ≤ 0 have cosines ≥ 0, all in the upper bin,
    # so take a sequence of both signs)
    y = torch.randn(10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert lastde_score(y, epsilon_factor=0.2) == pytest.approx(official(y, epsilon_factor=0.2), rel=1e-5)


def test_bad_settings_raise():
    x = -torch.rand(20)
    with pytest.raises(ValueError, match="tau_prime"):
        lastde_score(x, tau_prime=1)
    with pytest.raises(ValueError, match="s must be"):
        lastde_score(x, s=0)
    with pytest.raises(ValueError, match="epsilon_factor"):
        lastde_score(x, epsilon_factor=0)
    with pytest.raises(ValueError, match="1-D"):
        lastde_score(x.reshape(4, 5))
    with pytest.raises(ValueError, match="epsilon"):
        diversity_entropy(x, s=3, epsilon=1)


# ---------------------------------------------------------------------------------------------
# agreement with the official code


# (s, epsilon_factor, tau_prime): the paper's open-source defaults, its closed-source setting, Lastde++'s, and others
@pytest.mark.parametrize("settings", [(3, 10, 5), (3, 1, 15), (4, 8, 15), (2, 10, 2), (1, 10, 3)])
@pytest.mark.parametrize("n", [7, 8, 12, 17, 30, 64, 200])
def test_matches_the_official_code_on_random_sequences(n, settings):
    s, epsilon_factor, tau_prime = settings
    n = max(n, tau_prime + s - 1)  # the official code accepts nothing shorter
    gen = torch.Generator().manual_seed(1000 * n + s + tau_prime)
    samples = [
        -torch.empty(n, dtype=torch.float64).exponential_(generator=gen),  # log-probs: mostly near 0, long tail
        torch.log(torch.rand(n, generator=gen, dtype=torch.float64)),
        torch.round(-3 * torch.rand(n, generator=gen, dtype=torch.float64)),  # few distinct values: repeated cosines
    ]
    for trial, x in enumerate(samples):
        ours = lastde_score(x, s, epsilon_factor, tau_prime)
        theirs = official(x, s, epsilon_factor, tau_prime)
        if not math.isfinite(theirs):
            assert ours is None
            continue
        assert ours == pytest.approx(theirs, rel=1e-4), (n, settings, trial)
        epsilon = int(epsilon_factor * n)
        assert multiscale_diversity_entropy(x, s, epsilon, tau_prime).tolist() == pytest.approx(
            official_scale_des(x, s, epsilon, tau_prime), abs=1e-6)


def test_float32_input_reads_as_float64():
    torch.manual_seed(3)
    x = torch.log(torch.rand(50))
    assert lastde_score(x) == lastde_score(x.double())
    assert lastde_score(x) < 0  # negative log-probs over a positive spread


# ---------------------------------------------------------------------------------------------
# the reward on the tiny model


def test_registered_with_its_options():
    spec = REWARDS["lastde"]
    assert spec.needs == ("policy",) and not spec.grouped
    cfg = reward_config("lastde", {"s": 4, "epsilon_factor": 8, "tau_prime": 15})
    assert (cfg.s, cfg.epsilon_factor, cfg.tau_prime, cfg.batch_size) == (4, 8.0, 15, 32)
    from selfalign.config import ConfigError

    with pytest.raises(ConfigError, match="tau_prime"):
        reward_config("lastde", {"tau_prime": 1})


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def sharp_model(model_and_tokenizer):
    """The tiny model with its output layer ×30: the random model's log-probs all sit near −ln V = −4.6, so every
    cosine of their delay vectors is ≈ 1, one bin at every scale, and Lastde is undefined; sharper logits vary."""
    model = copy.deepcopy(model_and_tokenizer[0])
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model


def test_near_uniform_model_leaves_responses_unscored(model_and_tokenizer):
    model, tok = model_and_tokenizer
    rows = [{"prompt": "Q:12+34|S:", "prompt_text": "Q:12+34|S:"}]
    out = LastdeReward(model, tok).score(rows, ["12+34=46;A:46"])
    assert out.scores == [None] and out.details == [{"tokens": 14}]


def test_reward_scores_the_response_logprobs(model_and_tokenizer, sharp_model):
    model, tok = sharp_model, model_and_tokenizer[1]
    rows = [{"id": "0", "prompt": "Q:12+34|S:", "prompt_text": "Q:12+34|S:"},
            {"id": "1", "prompt": "Q:47+38+15|S:", "prompt_text": "Q:47+38+15|S:"},
            {"id": "2", "prompt": "Q:1+2|S:", "prompt_text": "Q:1+2|S:"}]
    responses = ["12+34=46;A:46", "47+38=85;85+15=100;A:100", "3"]
    pairs = [tokenize_pair(tok, r["prompt_text"], y) for r, y in zip(rows, responses, strict=True)]
    reward = LastdeReward(model, tok, batch_size=2)
    assert reward.name == "lastde"
    out = reward.score(rows, responses)
    logps = token_logprobs(model, pairs, 2, tok.pad_token_id or 0)
    assert out.scores == [lastde_score(lp) for lp in logps]
    assert out.scores[0] is not None and out.scores[0] < 0 and out.scores[1] is not None
    assert out.scores[2] is None  # "3" + EOS: 2 tokens, shorter than τ′ + s − 1 = 7
    assert [d["tokens"] for d in out.details] == [len(responses[0]) + 1, len(responses[1]) + 1, 2]  # chars + EOS
    # the log-probs are those of one teacher-forced pass: response token j read at position p − 1 + j
    p, y = pairs[1]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + y])).logits[0].double()
    direct = torch.log_softmax(logits, -1)[len(p) - 1 : len(p) - 1 + len(y)].gather(-1, torch.tensor(y)[:, None])
    assert torch.allclose(logps[1].double(), direct[:, 0], atol=1e-5)
    # token_ids (GRPO's sampled tokens) are scored as given: no EOS appended
    sampled = [(p, y[:-1]) for p, y in pairs[:2]]
    given = reward.score(rows[:2], responses[:2], token_ids=sampled)
    assert given.scores == [lastde_score(lp) for lp in token_logprobs(model, sampled, 2, tok.pad_token_id or 0)]
    assert [d["tokens"] for d in given.details] == [len(responses[0]), len(responses[1])]


def test_reward_restores_training_mode(model_and_tokenizer):
    model, tok = model_and_tokenizer
    model.train()
    try:
        LastdeReward(model, tok).score([{"prompt": "Q:1+2|S:", "prompt_text": "Q:1+2|S:"}], ["1+2=3;A:3"])
        assert model.training
    finally:
        model.eval()


# ---------------------------------------------------------------------------------------------
# the per-round diagnostic: distribution summary and drift


def test_quantile_and_ks_statistic_by_hand():
    from selfalign.rewards.lastde import ks_statistic, quantile

    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5 and quantile([1.0, 2.0, 3.0, 4.0], 0.1) == pytest.approx(1.3)
    assert quantile([5.0], 0.9) == 5.0 and quantile([1.0, 3.0], 1.0) == 3.0
    with pytest.raises(ValueError, match="no values"):
        quantile([], 0.5)
    assert ks_statistic([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert ks_statistic([1.0, 2.0], [3.0, 4.0]) == 1.0
    # F_a jumps to 1/2 at 1 and 1 at 3; F_b to 1/3 at 2, 2/3 at 3 (tie), 1 at 4: sup |F_a − F_b| = 1/2 at x = 1
    assert ks_statistic([1.0, 3.0], [2.0, 3.0, 4.0]) == pytest.approx(0.5)
    assert ks_statistic([0.0, 0.0, 1.0], [0.0]) == pytest.approx(1 / 3)  # ties: both CDFs step at 0 together
    with pytest.raises(ValueError, match="both samples"):
        ks_statistic([], [1.0])


def test_lastde_summary_and_drift_by_hand():
    from selfalign.rewards.lastde import lastde_summary

    stats = lastde_summary([-1.0, None, -3.0, -2.0], previous=[-4.0, -6.0, None], prefix="x")
    assert stats == pytest.approx({
        "x_unscored": 1, "x_mean": -2.0, "x_std": (2 / 3) ** 0.5, "x_p10": -2.8, "x_median": -2.0, "x_p90": -1.2,
        "x_drift_mean": 3.0, "x_drift_ks": 1.0})
    assert lastde_summary([None, None]) == {"lastde_unscored": 2}
    assert "lastde_drift_mean" not in lastde_summary([-1.0], previous=[None])


def test_generations_lastde_reads_the_stored_logprobs():
    from selfalign.rewards.lastde import LastdeConfig, generations_lastde

    seq = [-0.1, -2.0, -0.5, -0.05, -1.5, -0.3, -0.9, -0.01]
    gens = [{"logprobs": seq}, {"logprobs": seq[:3]}]
    assert generations_lastde(gens) == [lastde_score(seq), None]
    assert generations_lastde(gens, LastdeConfig(s=2, tau_prime=2))[1] == lastde_score(seq[:3], s=2, tau_prime=2)
