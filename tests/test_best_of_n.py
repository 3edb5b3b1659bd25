"""Best-of-N: argument parsing, selection and accuracy on hand-made samples, and `selfalign eval` end to
end on the tiny random model."""

from __future__ import annotations

import json

import pytest

from selfalign.best_of_n import (
    BestOfNSettings,
    accuracy_table,
    markdown_table,
    parse_best_of,
    parse_rules,
    select,
    selections,
    separation,
)
from selfalign.config import ConfigError
from selfalign.rewards.voting import borda_vote


def test_parse_best_of():
    assert parse_best_of("1,2,4,8") == [1, 2, 4, 8]
    assert parse_best_of("8, 1,4,4") == [1, 4, 8]
    for bad in ("", "1,,2", "a,b", "1.5", "0,2", "-1"):
        with pytest.raises(ConfigError, match="--best-of"):
            parse_best_of(bad)


def test_parse_rules():
    assert parse_rules("borda,majority,borda") == ["borda", "majority"]
    assert parse_rules("self_certainty, judge") == ["self_certainty", "judge"]
    with pytest.raises(ConfigError, match="unknown rule 'oracle'; available: borda, majority, judge, likelihood"):
        parse_rules("borda,oracle")
    with pytest.raises(ConfigError, match="--select"):
        parse_rules(",")


def test_select_hand_made():
    answers = ["5", "7", "7", None]
    scores = [0.9, 0.5, 0.4, 0.95]
    assert select("self_certainty", answers, scores) == 3  # argmax, even without an answer
    assert select("likelihood", answers, [0.1, 0.3, 0.3, 0.2]) == 1  # ties: the earlier sample
    assert select("majority", answers, None) == 1  # "7" twice; its first sample
    # borda p = 1: ranks 3 (r=1), 0 (r=2), 1 (r=3), 2 (r=4) → "5": 3, "7": 2 + 1 = 3: tie → "5" holds the
    # best-ranked sample with an answer; the sample that stands for it is sample 0
    assert select("borda", answers, scores, borda_power=1.0) == 0
    # p = 0 → majority "7", represented by its best-ranked sample (1)
    assert select("borda", answers, scores, borda_power=0.0) == 1
    # no answer at all: the top-scored sample (borda) or the first (majority)
    assert select("borda", [None, None], [0.1, 0.2]) == 1
    assert select("majority", [None, None], None) == 0


def test_selections_use_the_first_n_samples():
    answers = [["1", "2", "2"], ["3", "3", "4"]]
    scores = {"self_certainty": [[0.1, 0.5, 0.2], [0.9, 0.1, 0.95]]}
    settings = BestOfNSettings(best_of=[1, 2, 3], rules=["self_certainty", "majority", "borda"])
    chosen = selections(answers, scores, settings)
    assert chosen["self_certainty"] == {1: [0, 0], 2: [1, 0], 3: [1, 2]}
    assert chosen["majority"] == {1: [0, 0], 2: [0, 0], 3: [1, 0]}
    assert borda_vote(answers[1], scores["self_certainty"][1], 0.5) == "3"  # √2 + 1 vs √3
    assert chosen["borda"][3] == [1, 0]


def test_accuracy_table_hand_computed():
    correct = [[False, True, True], [True, False, False]]
    chosen = {"self_certainty": {1: [0, 0], 3: [1, 2]}}
    table = accuracy_table(chosen, correct, [1, 3])
    assert table["self_certainty"] == {"1": 0.5, "3": 0.5}  # N=3: prompt 0 right, prompt 1 wrong
    assert table["mean@N"] == pytest.approx({"1": 0.5, "3": (2 / 3 + 1 / 3) / 2})
    assert table["pass@N"] == {"1": 0.5, "3": 1.0}


def test_separation_hand_computed():
    correct = [[False, True, True], [True, False, False], [True, True, True]]
    scores = {"likelihood": [[0.1, 0.5, 0.1], [0.2, 0.3, None], [1.0, 2.0, 3.0]]}
    # prompt 0: right 0.5 vs wrong 0.1 wins, right 0.1 vs wrong 0.1 ties; prompt 1: right 0.2 vs wrong 0.3 loses (the
    # unscored sample is left out); prompt 2 has no wrong sample
    assert separation(scores, correct) == {"likelihood": {"value": pytest.approx(1.5 / 3), "pairs": 3}}
    assert separation({"judge": [[1.0, 1.0]]}, [[True, True]]) == {"judge": {"value": None, "pairs": 0}}


def test_markdown_without_verifier():
    report = {"best_of": [1, 2], "num_prompts": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 0,
              "borda_power": 0.5, "accuracy": None}
    assert "No verifier" in markdown_table(report)


# ---------------------------------------------------------------------------------------------
# `selfalign eval` on the tiny model


def run_cli(args):
    from selfalign.cli import main

    return main(["eval", *args])


def test_eval_cli_end_to_end(tiny_model, tmp_path, capsys):
    out = tmp_path / "bon"
    rules = "self_certainty,borda,majority,likelihood,judge,ptrue"
    assert run_cli([tiny_model, "--prompts", "sandbox://arith?terms=2&digits=1", "--num-prompts", "3",
                    "--best-of", "4,1,2", "--select", rules, "--max-new-tokens", "10", "--batch-size", "8",
                    "--output", str(out)]) == 0
    assert "best-of-4 accuracy: self_certainty=" in capsys.readouterr().out
    report = json.loads((out / "best_of_n.json").read_text())
    assert report["best_of"] == [1, 2, 4] and report["split"] == "eval" and report["num_prompts"] == 3
    assert report["verifiable"] is True
    assert list(report["accuracy"]) == rules.split(",") + ["mean@N", "pass@N"]
    for by_n in report["accuracy"].values():
        assert set(by_n) == {"1", "2", "4"} and all(0.0 <= a <= 1.0 for a in by_n.values())
    # with one sample there is nothing to choose: every rule scores the same
    assert len({by_n["1"] for by_n in report["accuracy"].values()}) == 1
    assert set(report["seconds"]) == {"generate", "self_certainty", "likelihood", "judge", "ptrue"}

    records = [json.loads(line) for line in (out / "best_of_n_samples.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for rec in records:
        assert len(rec["responses"]) == 4 and rec["id"].startswith("eval-")
        certainty = rec["scores"]["self_certainty"]
        assert rec["chosen"]["self_certainty"]["4"] == certainty.index(max(certainty))
        judge = rec["scores"]["judge"]
        assert all(1.0 <= s <= 5.0 for s in judge)
        assert all(0.0 < s < 1.0 for s in rec["scores"]["ptrue"])
        winner = borda_vote(rec["answers"], certainty, 0.5)
        if winner is not None:
            assert rec["answers"][rec["chosen"]["borda"]["4"]] == winner

    assert set(report["pairwise_accuracy"]) == {"self_certainty", "likelihood", "judge", "ptrue"}
    md = (out / "best_of_n.md").read_text()
    assert "| reward | P(right > wrong) | pairs |" in md
    assert "| rule | N=1 | N=2 | N=4 |" in md and "| borda |" in md and "| pass@N |" in md
    assert (out / "best_of_n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_cli_without_a_verifier_writes_no_plot(tiny_model, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Q:1+2|S:"}\n{"prompt": "Q:3+4|S:"}\n')
    out = tmp_path / "bon"
    assert run_cli([tiny_model, "--prompts", str(prompts), "--best-of", "1,2", "--select", "majority,likelihood",
                    "--max-new-tokens", "6", "--output", str(out)]) == 0
    report = json.loads((out / "best_of_n.json").read_text())
    assert report["verifiable"] is False and report["accuracy"] is None and report["split"] is None
    assert "No verifier" in (out / "best_of_n.md").read_text()
    assert not (out / "best_of_n.png").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--select", "borda,oracle"], "--select: unknown rule 'oracle'"),
    (["--select", "implicit"], "--select: the 'implicit' reward needs a reference model besides the evaluated one"),
    (["--best-of", "1,x"], "--best-of: '1,x' is not a comma-separated list"),
    (["--best-of", "0,4"], "--best-of: '0,4': every N must be >= 1"),
    (["--temperature", "0"], "--temperature 0 (greedy) gives one sample per prompt"),
    (["--split", "test"], "--split: a sandbox source has the splits train and eval"),
    (["--num-prompts", "0"], "--num-prompts must be >= 1"),
])
def test_eval_cli_bad_input_is_one_line(tiny_model, tmp_path, capsys, args, message):
    out = tmp_path / "bon"
    base = [tiny_model, "--prompts", "sandbox://arith", "--num-prompts", "2", "--output", str(out)]
    assert run_cli(base + args) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"selfalign: error: {message}")
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


def test_eval_cli_missing_model_and_unbounded_sandbox(tmp_path, capsys):
    missing = str(tmp_path / "no_such_model")
    assert run_cli([missing, "--prompts", "sandbox://arith", "--num-prompts", "2"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"selfalign: error: {missing}: no such model directory (give a model directory or 'sandbox')"]
    assert run_cli(["sandbox", "--prompts", "sandbox://arith"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "selfalign: error: sandbox://arith: a sandbox source is unbounded; give --num-prompts"]
