"""Evaluators (`selfalign.evaluators`): the pure functions against hand-computed values, scipy, sklearn and brute
force; the registry's recipe checks; win rates on the sandbox model (against itself, against a worse model); an
lm-eval task over a local JSONL file against the verifier; the AlpacaEval export as AlpacaEval reads it."""

from __future__ import annotations

import itertools
import json
import math
import random
import sys

import pytest

from selfalign.config import ConfigError, EvalConfig, build
from selfalign.evaluators import EVALUATORS, configured
from selfalign.evaluators.alpaca_eval import model_outputs, validate_model_outputs
from selfalign.evaluators.bon_win_rate import bon_win_probability, bon_win_probability_bruteforce, order_weights
from selfalign.evaluators.reward_auroc import auroc, pairwise_accuracy
from selfalign.evaluators.win_rate import (
    length_controlled_win_rate,
    mean_and_se,
    order_verdicts,
    preferences,
    score_verdicts,
)
from selfalign.recipe import recipe_from_dict
from selfalign.rewards.verifier import VerifierConfig, answers_match, extract_answer, is_correct

# ------------------------------------------------------------------------------------------------ the verifier


@pytest.mark.parametrize(("predicted", "gold", "right"), [
    ("72.0", "72", True), ("72", "72", True), ("73", "72", False), ("\\frac{1}{2}", "0.5", True),
    ("1/2", "\\frac{1}{2}", True), ("0.75", "3/4", True), ("1000", "1,000", True), ("\\sqrt{2}", "2^{1/2}", True),
    ("10", "10%", True), ("B", "A", False), ("x", "x", True), (None, "3", False),
])
def test_math_verify_equivalence(predicted, gold, right):
    assert answers_match(predicted, gold) is right


def test_exact_match_is_the_old_rule():
    assert not answers_match("72.0", "72", "exact") and answers_match(" 72", "72", "exact")


def test_extraction_rules():
    assert extract_answer("so the area is \\boxed{\\frac{3}{4}} square units, not 5") == "\\frac{3}{4}"
    assert extract_answer("\\boxed{\\frac{1}{\\sqrt{2}}}") == "\\frac{1}{\\sqrt{2}}"
    assert extract_answer("2+2=4;A:4") == "4" and extract_answer("so #### 1,234") == "1234"
    assert extract_answer("The answer is 72.0.") == "72.0" and extract_answer("no digits") is None
    rule = VerifierConfig(extract="regex", pattern=r"The answer is (-?[\d.]+)")
    assert extract_answer("The answer is 3. Check: The answer is 4.5 then 9", rule) == "4.5"
    assert is_correct({"prompt": "q", "answer": "72"}, "Total: 72.00 dollars")
    assert not is_correct({"prompt": "q", "answer": "72"}, "Total: 72.00 dollars", VerifierConfig(match="exact"))


@pytest.mark.parametrize(("options", "message"), [
    ({"extract": "regex"}, "eval.evaluators.verifier.pattern: extract: regex needs a pattern"),
    ({"extract": "regex", "pattern": "("}, "eval.evaluators.verifier.pattern: not a valid regular expression"),
    ({"pattern": "x"}, "eval.evaluators.verifier.pattern: applies to extract: regex only"),
    ({"match": "fuzzy"}, "eval.evaluators.verifier.match: 'fuzzy' is not allowed"),
])
def test_verifier_options_are_checked(options, message):
    with pytest.raises(ConfigError, match="^recipe: " + message.replace(".", r"\.").replace("(", r"\(")):
        recipe_from_dict({"eval": {"evaluators": {"verifier": options}}})


# ------------------------------------------------------------------------------------------------ win rate


def test_order_verdicts_and_preferences_by_hand():
    import torch

    model_first = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 1.0]])  # the model's response shown first
    model_second = torch.tensor([[2.0, 1.0], [0.0, 3.0], [0.5, 0.2]])  # the baseline's shown first
    first, second = order_verdicts(model_first, model_second)
    assert first == [1.0, 0.0, 0.5] and second == [0.0, 1.0, 0.0]
    # a judge that always picks the first-shown (row 1) or the second-shown (row 2) response: a tie, 0.5
    assert preferences(first, second) == [0.5, 0.5, 0.25]
    assert score_verdicts([1.0, 0.0, 2.0, None], [0.0, 0.0, 3.0, 1.0]) == [1.0, 0.5, 0.0, 0.5]
    mean, se = mean_and_se([1.0, 0.0, 0.5, 0.5])
    assert mean == 0.5 and se == pytest.approx(math.sqrt(1 / 6) / 2)


def test_length_controlled_win_rate_matches_sklearn_as_alpaca_eval_fits_it():
    """AlpacaEval fits soft preferences by duplicating each row with labels 1 and 0, weighted p and 1 − p
    (metrics/glm_winrate.py, fit_LogisticRegressionCV with is_ytrue_proba); here the same with an L2 penalty."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = random.Random(0)
    n = 60
    model_len = [rng.randint(50, 400) for _ in range(n)]
    base_len = [rng.randint(50, 400) for _ in range(n)]
    prefs = [min(1.0, max(0.0, 0.5 + 0.4 * math.tanh((m - b) / 150) + rng.choice([-0.25, 0, 0.25])))
             for m, b in zip(model_len, base_len, strict=True)]
    lc, coef = length_controlled_win_rate(prefs, model_len, base_len)
    delta = np.array(model_len, float) - np.array(base_len, float)
    x = np.tanh(delta / delta.std(ddof=1))
    design = np.stack([np.ones(n), x], 1)
    fit = LogisticRegression(C=100.0, fit_intercept=False, tol=1e-12, max_iter=10000)
    fit.fit(np.concatenate([design, design]), np.r_[np.ones(n), np.zeros(n)],
            sample_weight=np.r_[prefs, 1 - np.array(prefs)])
    theta, phi = fit.coef_[0]
    assert lc == pytest.approx(1 / (1 + math.exp(-theta)), abs=1e-6)
    assert coef == pytest.approx(phi, abs=1e-5) and coef > 0.5  # this judge prefers longer responses
    assert lc < statistics_mean(prefs) + 0.05


def statistics_mean(values):
    return sum(values) / len(values)


def test_length_controlled_win_rate_without_length_differences_is_the_win_rate():
    prefs = [1.0, 0.5, 0.75, 0.0, 1.0]
    lc, coef = length_controlled_win_rate(prefs, [10] * 5, [10] * 5)  # sd(Δ) = 0: the feature is 0
    assert coef == 0.0
    # σ(θ) = mean p, up to the L2 penalty's pull towards 0.5 (θ² / 200)
    assert lc == pytest.approx(statistics_mean(prefs), abs=2e-3)


# ------------------------------------------------------------------------------------------------ best-of-N


def test_order_weights_by_hand():
    assert order_weights(4, 2) == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6])  # C(i-1, 1) / C(4, 2)
    assert order_weights(4, 2, "worst_of_n") == pytest.approx([3 / 6, 2 / 6, 1 / 6, 0])
    assert order_weights(3, 3) == [0, 0, 1] and order_weights(5, 1) == pytest.approx([0.2] * 5)
    with pytest.raises(ValueError):
        order_weights(2, 3)


def test_bon_win_probability_by_hand():
    # K = 2, N = 2: the best of both, 3 vs 2: a sure win; N = 1: P(a > b) over the 4 pairs
    assert bon_win_probability([1, 3], [2, 0], 2) == 1.0
    assert bon_win_probability([1, 3], [2, 0], 1) == pytest.approx(3 / 4)  # 1>0, 3>2, 3>0 win; 1<2 loses
    assert bon_win_probability([1, 1], [1, 1], 2) == 0.5  # all ties
    # worst of 2: min 1 vs min 0: a win
    assert bon_win_probability([1, 3], [2, 0], 2, "worst_of_n") == 1.0
    # N = 2 of K = 3: our best is 2 w.p. 1/3 and 3 w.p. 2/3; theirs is always 5: a sure loss
    assert bon_win_probability([1, 2, 3], [5, 5, 5], 2) == 0.0


@pytest.mark.parametrize("procedure", ["best_of_n", "worst_of_n"])
def test_bon_win_probability_equals_enumerating_every_pair_of_subsets(procedure):
    rng = random.Random(1)
    for _ in range(30):
        ka, kb = rng.randint(1, 6), rng.randint(1, 6)
        a = [rng.choice([0.0, 0.5, 1.0, 2.0]) for _ in range(ka)]  # few values: many ties within and across
        b = [rng.choice([0.0, 0.5, 1.0, 2.0]) for _ in range(kb)]
        for n in range(1, min(ka, kb) + 1):
            assert bon_win_probability(a, b, n, procedure) == pytest.approx(
                bon_win_probability_bruteforce(a, b, n, procedure))


def test_bon_estimator_is_unbiased_for_the_population_win_rate():
    """With K i.i.d. samples per side from known discrete distributions, the mean of the estimate over every
    possible draw equals the population P(BoN_a > BoN_b) + ½P(=) (computed from the CDFs)."""
    values, pa, pb = [0, 1, 2], [0.5, 0.3, 0.2], [0.3, 0.4, 0.3]
    k, n = 3, 2

    def cdf(p, v):
        return sum(p[: v + 1])

    def bon_pmf(p):
        return [cdf(p, v) ** n - (cdf(p, v - 1) ** n if v else 0) for v in values]

    qa, qb = bon_pmf(pa), bon_pmf(pb)
    truth = sum(qa[i] * qb[j] * (1 if i > j else 0.5 if i == j else 0) for i in values for j in values)
    expected = 0.0
    for draw_a in itertools.product(values, repeat=k):
        for draw_b in itertools.product(values, repeat=k):
            weight = math.prod(pa[v] for v in draw_a) * math.prod(pb[v] for v in draw_b)
            expected += weight * bon_win_probability(draw_a, draw_b, n)
    assert expected == pytest.approx(truth, abs=1e-12)


# ------------------------------------------------------------------------------------------------ AUROC


def test_auroc_by_hand_and_against_scipy():
    from scipy.stats import mannwhitneyu

    assert auroc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert auroc([0.1, 0.9], [True, False]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [True, False, False]) == 0.5  # ties count half
    assert auroc([3, 1, 2, 2], [True, False, True, False]) == pytest.approx(0.875)  # (1 + 1 + 1 + 0.5) / 4
    assert auroc([1, 2], [True, True]) is None
    rng = random.Random(0)
    scores = [rng.choice([0.0, 0.1, 0.2, 0.3]) for _ in range(200)]
    labels = [rng.random() < 0.3 + s for s in scores]
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    u = mannwhitneyu(pos, neg).statistic
    assert auroc(scores, labels) == pytest.approx(u / (len(pos) * len(neg)))


def test_within_prompt_pairwise_accuracy_ignores_prompt_difficulty():
    easy = [(0.9, True), (0.9, True), (0.9, False)]  # scores tell the easy prompt from the hard one ...
    hard = [(0.1, False), (0.1, True), (0.1, False)]  # ... but not right from wrong within a prompt
    assert pairwise_accuracy([easy, hard]) == 0.5
    # pooled: (2 right 0.9 × (½ + 1 + 1) + right 0.1 × (0 + ½ + ½)) / 9 = 6 / 9
    assert auroc([s for s, _ in easy + hard], [y for _, y in easy + hard]) == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------------ AlpacaEval


def test_alpaca_eval_export_reads_as_alpaca_eval_reads_it(tmp_path):
    """alpaca_eval loads model outputs with pandas.read_json (utils.load_or_convert_to_dataframe), names the model
    by the single `generator` (utils.get_generator_name) and merges with the reference on `instruction`
    (PairwiseAnnotator.annotate_head2head)."""
    import pandas as pd

    rows = [{"id": "a", "prompt": "Name a colour."}, {"id": "b", "prompt": "Say hi\nin \"quotes\"."}]
    ours = tmp_path / "ours.json"
    ref = tmp_path / "ref.json"
    ours.write_text(json.dumps(model_outputs(rows, ["Blue.", "\"hi\""], "run/round_1", "selfalign")))
    ref.write_text(json.dumps(model_outputs(rows[::-1], ["hello", "Red."], "run/round_0", "selfalign")))
    assert len(validate_model_outputs(ours)) == 2
    df, df_ref = pd.read_json(ours), pd.read_json(ref)
    assert set(df.columns) >= {"instruction", "output", "generator"} and df["generator"].nunique() == 1
    merged = pd.merge(df_ref, df, on="instruction", suffixes=("_1", "_2"))
    assert len(merged) == 2 and set(merged["output_2"]) == {"Blue.", "\"hi\""}
    assert dict(zip(merged["instruction"], merged["output_1"], strict=True))["Name a colour."] == "Red."
    bad = tmp_path / "bad.json"
    for records, message in (([{"instruction": "x", "generator": "g"}], "missing string field"),
                             ([{"instruction": "x", "output": "y", "generator": "g"}] * 2, "instruction repeated"),
                             ([{"instruction": "x", "output": "y", "generator": "g"},
                               {"instruction": "z", "output": "y", "generator": "h"}], "2 generators")):
        bad.write_text(json.dumps(records))
        with pytest.raises(ValueError, match=message):
            validate_model_outputs(bad)


# ------------------------------------------------------------------------------------------------ the registry


def test_default_and_list_and_instances():
    assert [(i.name, i.spec.name) for i in configured(EvalConfig())] == [("verifier", "verifier")]
    listed = configured(build(EvalConfig, {"evaluators": ["verifier", "alpaca_eval"]}, "eval"))
    assert [i.name for i in listed] == ["verifier", "alpaca_eval"]
    two = configured(build(EvalConfig, {"evaluators": {"win_rate": {"baseline": "initial"}, "verifier": None,
                                                       "wr_prev": {"type": "win_rate", "baseline": "previous"}}},
                           "eval"))
    assert [(i.name, i.spec.name, i.cfg.baseline) for i in two] == [("win_rate", "win_rate", "initial"),
                                                                    ("wr_prev", "win_rate", "previous")]
    assert set(EVALUATORS) == {"verifier", "lm_eval", "win_rate", "alpaca_eval", "bon_win_rate", "reward_auroc"}


@pytest.mark.parametrize(("evaluators", "message"), [
    ({"win_rat": {}}, "eval.evaluators.win_rat: 'win_rat' is not a registered evaluator; did you mean 'win_rate'?"),
    ({"x": {"type": "lm_evl"}}, "eval.evaluators.x: type 'lm_evl' is not a registered evaluator; did you mean"),
    ({"lm_eval": {}}, "eval.evaluators.lm_eval.tasks: give at least one lm-eval task"),
    ({"lm_eval": {"tasks": ["gsm8k"], "limt": 3}}, "eval.evaluators.lm_eval.limt: unknown key; did you mean 'limit'?"),
    ({"bon_win_rate": {"best_of": [1, 32], "samples": 16}}, "eval.evaluators.bon_win_rate.best_of: N=32 > samples"),
    ({"bon_win_rate": {"reward": "majority"}}, "eval.evaluators.bon_win_rate.reward: majority scores a sample"),
    ({"bon_win_rate": {"baseline": "ref.json"}}, "eval.evaluators.bon_win_rate.baseline: needs samples of a model"),
    ({"win_rate": {"judge": {"type": "reward"}}}, "eval.evaluators.win_rate.judge.reward: judge type reward needs"),
    ({"win_rate": {"judge": {"template": "Compare {prompt}"}}}, "eval.evaluators.win_rate.judge.template: "),
    ({"win_rate": {"baseline": "policy"}}, "eval.evaluators.win_rate.baseline: 'policy' is not a baseline"),
    ({"win_rate": {"decoding": "sampled"}, "_sampled": False}, "eval.evaluators.win_rate.decoding: sampled responses"),
    ({"reward_auroc": {"rewards": ["likelyhood"]}}, "eval.evaluators.reward_auroc.rewards: 'likelyhood' is not a"),
    ({"verifier": 3}, "eval.evaluators.verifier: expected a mapping of options"),
])
def test_evaluator_mistakes_are_one_line(evaluators, message):
    evaluators = dict(evaluators)
    raw = {"eval": {"sampled": evaluators.pop("_sampled", True), "evaluators": evaluators}}
    with pytest.raises(ConfigError) as e:
        recipe_from_dict(raw)
    assert str(e.value).startswith("recipe: " + message) and "\n" not in str(e.value)


def test_a_missing_lm_eval_names_the_extra(monkeypatch):
    from selfalign.evaluators.lm_eval import require_lm_eval

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ConfigError, match=r'^eval\.evaluators\.lm_eval: lm-evaluation-harness is not installed; '
                                          r'install the eval extra: pip install "selfalign\[eval\]"$'):
        require_lm_eval("eval.evaluators.lm_eval")


def test_a_run_with_lm_eval_but_no_lm_eval_stops_before_its_first_stage(monkeypatch, tmp_path):
    from selfalign import pipeline

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    recipe = recipe_from_dict({"eval": {"evaluators": {"lm_eval": {"tasks": ["gsm8k"]}}}})
    with pytest.raises(ConfigError, match=r"^eval\.evaluators\.lm_eval: lm-evaluation-harness is not installed"):
        pipeline.run(recipe, tmp_path / "run")
    assert not (tmp_path / "run" / "round_0").exists()
