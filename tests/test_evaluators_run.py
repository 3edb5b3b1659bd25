"""Evaluators on real models: win rates on the sandbox model (against itself: ½ within sampling noise, both
presentation orders judged; against an untrained model under the verifier-backed judge: it wins), an lm-eval task
over a local JSONL file against the verifier on the same rows (sandbox; SmolLM2 with its chat template, slow),
`selfalign eval --evaluators`, and a run whose every round (round 0 too) reports every evaluator in eval.json,
summary.json, metrics.jsonl, the console table and W&B."""

from __future__ import annotations

import json

import pytest
from conftest import load_script, tiny_recipe

from selfalign import models
from selfalign.artifacts import read_jsonl
from selfalign.config import EvalConfig, ModelConfig, build
from selfalign.data.prompts import load_prompts
from selfalign.evaluators import configured
from selfalign.evaluators.alpaca_eval import validate_model_outputs
from selfalign.evaluators.standalone import StandaloneEvalContext, run_evaluators

SANDBOX = "sandbox://arith?terms=3&digits=2&seed=0"


@pytest.fixture(scope="module")
def sandbox_model():
    cfg = ModelConfig(path="sandbox")
    path = models.base_model_path(cfg)
    return models.load_model(path, cfg).eval(), models.load_tokenizer(path, cfg)


def context(model, tokenizer, rows, tmp_path, evaluators: dict, **eval_options):
    eval_cfg = build(EvalConfig, {"batch_size": 64, "max_new_tokens": 40, **eval_options,
                                  "evaluators": evaluators}, "eval")
    instances = configured(eval_cfg)
    k = max((i.spec.samples_per_prompt(i.cfg) for i in instances if i.spec.samples_per_prompt), default=0)
    return instances, StandaloneEvalContext(model, tokenizer, "sandbox", rows, eval_cfg, tmp_path, seed=0,
                                            max_new_tokens=40, k_samples=k)


def test_a_model_against_itself_wins_half_with_both_orders_judged(sandbox_model, tmp_path, monkeypatch):
    from selfalign.rewards import pairwise_judge

    judged: list[str] = []
    real = pairwise_judge.next_token_option_logits

    def recording(model, tokenizer, prompts, ids, batch_size):
        judged.extend(prompts)
        return real(model, tokenizer, prompts, ids, batch_size)

    monkeypatch.setattr(pairwise_judge, "next_token_option_logits", recording)
    model, tok = sandbox_model
    rows = load_prompts(SANDBOX, sandbox_split="eval", limit=32).rows
    # a prompt as short as the sandbox model's texts; its next token after "|J:" starts a verdict (o / n)
    judge = {"model": "policy", "template": "{prompt}{response_a}|{response_b}|J:", "options": ["o", "n"]}
    instances, ctx = context(model, tok, rows, tmp_path, {"win_rate": {"baseline": "sandbox", "judge": judge}},
                             greedy=False, temperature=1.0)
    metrics, _ = run_evaluators(instances, ctx)
    ours, theirs = ctx.outputs("sampled").texts, ctx.baseline_outputs("sandbox", "sampled", "test")
    assert sum(a != b for a, b in zip(ours, theirs, strict=True)) > len(rows) / 3  # independent samples
    # both orders: each pair's prompt once with our response shown first and once with the baseline's
    assert len(judged) == 2 * len(rows)
    for i, (r, a, b) in enumerate(zip(rows, ours, theirs, strict=True)):
        assert judged[i] == f"{r['prompt']}{a}|{b}|J:" and judged[len(rows) + i] == f"{r['prompt']}{b}|{a}|J:"
    # this judge mostly picks a position, not a response: one order alone would be far from ½, both average out
    samples = read_jsonl(tmp_path / "eval_samples.jsonl")
    first = sum(s["win_rate/verdict_model_first"] for s in samples) / len(samples)
    assert abs(first - 0.5) > 0.3 and metrics["win_rate/position_agreement"] < 0.5
    win, se = metrics["win_rate/win_rate"], metrics["win_rate/win_rate_se"]
    assert abs(win - 0.5) <= 3 * se + 1e-9 and se < 0.1
    assert abs(metrics["win_rate/win_rate_soft"] - 0.5) < 0.05
    assert {"win_rate/verdict_model_first", "win_rate/verdict_model_second", "win_rate/p_model_first",
            "win_rate/baseline_response"} <= set(samples[0])


def test_a_better_model_wins_under_the_verifier_backed_judge(sandbox_model, tiny_model, tmp_path):
    """The trained sandbox model against an untrained one of the same tokenizer (right answers only by chance)."""
    from selfalign.rewards.verifier import is_correct

    model, tok = sandbox_model
    rows = load_prompts(SANDBOX, sandbox_split="eval", limit=12).rows
    instances, ctx = context(model, tok, rows, tmp_path, {
        "win_rate": {"baseline": tiny_model, "judge": {"type": "verifier"}},
        "bon_win_rate": {"baseline": tiny_model, "best_of": [1, 2, 4], "samples": 4, "reward": "verifier"}},
        sampled=False, max_new_tokens=32)
    ctx._max_new_tokens = 32
    metrics, _ = run_evaluators(instances, ctx)
    ours, theirs = ctx.outputs("greedy").texts, ctx.baseline_outputs(tiny_model, "greedy", "test")
    right = [is_correct(r, y) for r, y in zip(rows, ours, strict=True)]
    base_right = [is_correct(r, y) for r, y in zip(rows, theirs, strict=True)]
    by_hand = sum(0.5 * (1 + a - b) for a, b in zip(right, base_right, strict=True)) / len(rows)
    assert metrics["win_rate/win_rate"] == pytest.approx(by_hand) and by_hand > 0.65
    assert metrics["win_rate/ties"] == pytest.approx(sum(a == b for a, b in zip(right, base_right, strict=True))
                                                     / len(rows))
    # best-of-N under the verifier: our best of N is right when any of N is, so the win rate grows with N
    bon = [metrics[f"bon_win_rate/win_rate@{n}"] for n in (1, 2, 4)]
    assert bon[0] > 0.6 and bon[0] <= bon[1] <= bon[2]


def _local_task(tmp_path, rows, chat: bool, max_tokens: int) -> str:
    """A task YAML over a local JSONL file (scripts/lm_eval_local_task.py): generate greedily from the prompt, read
    the final answer with a regex, exact match against `answer`."""
    script = load_script("lm_eval_local_task")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "local_task.yaml"
    pattern = script.LAST_INTEGER if chat else script.SANDBOX_PATTERN
    path.write_text(script.task_yaml("selfalign_local", data, pattern, ["</s>", "<|im_end|>"], max_tokens))
    return str(path)


def test_lm_eval_local_task_equals_the_verifier_on_the_same_rows(sandbox_model, tmp_path):
    pytest.importorskip("lm_eval")
    model, tok = sandbox_model
    rows = load_prompts(SANDBOX, sandbox_split="eval", limit=8).rows
    task = _local_task(tmp_path, rows, chat=False, max_tokens=40)
    instances, ctx = context(model, tok, rows, tmp_path, {"verifier": {}, "lm_eval": {"tasks": [task]}},
                             sampled=False)
    metrics, _ = run_evaluators(instances, ctx)
    acc = metrics["lm_eval/selfalign_local/exact_match/final"]
    assert acc == metrics["accuracy_greedy"] and 0 < acc < 1
    assert "lm_eval/selfalign_local/exact_match_stderr/final" in metrics
    records = read_jsonl(tmp_path / "lm_eval_samples.jsonl")
    assert len(records) == len(rows) and {"task", "doc_id", "target", "response", "exact_match"} <= set(records[0])
    by_doc = {r["doc_id"]: r for r in records}
    for i, y in enumerate(ctx.outputs("greedy").texts):  # the same greedy responses through HFLM
        assert by_doc[i]["response"].strip() == y.strip()
    assert json.loads((tmp_path / "lm_eval_results.json").read_text())["results"]["selfalign_local"]


@pytest.mark.slow
def test_lm_eval_local_task_on_smollm2_with_its_chat_template(tmp_path):
    pytest.importorskip("lm_eval")
    cfg = ModelConfig(path="smollm2-135m-instruct")
    path = models.base_model_path(cfg)
    model, tok = models.load_model(path, cfg).eval(), models.load_tokenizer(path, cfg)
    rows = load_prompts("recipes/data/simple_math/addition.jsonl").rows[:6]
    task = _local_task(tmp_path, rows, chat=True, max_tokens=24)
    instances, ctx = context(model, tok, rows, tmp_path, {
        "verifier": {"extract": "regex", "pattern": load_script("lm_eval_local_task").LAST_INTEGER, "match": "exact"},
        "lm_eval": {"tasks": [task], "apply_chat_template": True, "batch_size": 6}},
        sampled=False, max_new_tokens=24, batch_size=6)
    ctx._max_new_tokens = 24
    metrics, _ = run_evaluators(instances, ctx)
    assert metrics["lm_eval/selfalign_local/exact_match/final"] == metrics["accuracy_greedy"]
    records = {r["doc_id"]: r for r in read_jsonl(tmp_path / "lm_eval_samples.jsonl")}
    for i, y in enumerate(ctx.outputs("greedy").texts):
        assert records[i]["response"].strip() == y.strip()


def test_eval_cli_runs_the_evaluators(tmp_path, capsys):
    from selfalign.cli import main

    out = tmp_path / "ev"
    assert main(["eval", "sandbox", "--evaluators", "verifier,alpaca_eval", "--prompts", SANDBOX, "--num-prompts",
                 "6", "--max-new-tokens", "40", "--set", "eval.sampled=false", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "verifier: acc_greedy=" in printed and "alpaca_eval: ae_len=" in printed
    metrics = json.loads((out / "eval.json").read_text())
    assert metrics["prompts"] == 6 and 0 <= metrics["accuracy_greedy"] <= 1 and "accuracy_sampled" not in metrics
    records = validate_model_outputs(out / "alpaca_eval" / "model_outputs.json")
    assert [r["instruction"] for r in records] == [r["prompt"] for r in load_prompts(
        SANDBOX, sandbox_split="eval", limit=6).rows] and records[0]["generator"] == "sandbox"


@pytest.mark.parametrize(("args", "message"), [
    (["--evaluators", "win_rate"], "eval.evaluators.win_rate.baseline: 'initial' names a model of a run"),
    (["--evaluators", "verifier", "--best-of", "2"], "--evaluators runs the evaluators; --best-of"),
    (["--evaluators", "verfier"], "--evaluators: 'verfier' is neither a registered evaluator"),
    (["--evaluators", "verifier", "--set", "model.path=x"], "--set: only eval.* keys apply here"),
    (["--baseline", "x"], "--recipe, --baseline and --set apply to --evaluators"),
])
def test_eval_cli_evaluator_mistakes_are_one_line(tmp_path, capsys, args, message):
    from selfalign.cli import main

    assert main(["eval", "sandbox", "--prompts", SANDBOX, "--num-prompts", "2", "--output", str(tmp_path / "x"),
                 *args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"selfalign: error: {message}")


def test_every_round_reports_every_evaluator(tiny_model, tmp_path, capsys):
    """Round 0 too: against itself (`initial`) the win rate is exactly ½ (the same responses); round 1 reads round
    0's responses and samples from the run directory."""
    from selfalign import pipeline
    from selfalign.recipe import recipe_from_dict

    raw = tiny_recipe(tiny_model, **{"prompts.train_per_round": 4, "prompts.eval_prompts": 6})
    raw["eval"]["evaluators"] = {"verifier": {}, "win_rate": {"judge": {"model": "initial"}}, "alpaca_eval": {},
                                 "bon_win_rate": {"best_of": [1, 2], "samples": 2, "reward": "likelihood",
                                                  "scorer": "initial"},
                                 "reward_auroc": {"samples": 2}}
    summary = pipeline.run(recipe_from_dict(raw), tmp_path)
    console = capsys.readouterr().out
    header = console.splitlines()[0].split()
    assert {"win_rate", "lc_win", "ae_len", "bon@2", "auc_likelih"} <= set(header)
    evals = [r["eval"] for r in summary["rounds"]]
    assert evals[0]["win_rate/win_rate"] == 0.5 and evals[0]["bon_win_rate/win_rate@2"] == 0.5
    for t, e in enumerate(evals):
        assert {"accuracy_greedy", "accuracy_sampled", "mean_response_tokens", "win_rate/lc_win_rate",
                "alpaca_eval/avg_length", "bon_win_rate/win_rate@1", "reward_auroc/likelihood/pairwise_accuracy"} \
            <= set(e)
        assert e == json.loads((tmp_path / f"round_{t}/eval.json").read_text())
        validate_model_outputs(tmp_path / f"round_{t}/eval/alpaca_eval/model_outputs.json")
    round1 = read_jsonl(tmp_path / "round_1/eval_samples.jsonl")
    round0 = read_jsonl(tmp_path / "round_0/eval_samples.jsonl")
    assert [r["win_rate/baseline_response"] for r in round1] == [r["greedy_response"] for r in round0]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [0, 1]
    assert all("eval/win_rate/win_rate" in x and "time/eval_win_rate" in x for x in lines)
    from test_tracking import wandb_records

    records = wandb_records(tmp_path)
    history = [{i.key or "/".join(i.nested_key) for i in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    assert any("eval/bon_win_rate/win_rate@2" in h for h in history)
    (files,) = tmp_path.glob("wandb/offline-run-*/files")
    (table,) = files.glob("media/table/eval_samples/round_1_*.table.json")
    assert "win_rate/verdict_model_first" in json.loads(table.read_text())["columns"]
    assert list(files.glob("media/table/eval_bon_win_rate/round_1_*.table.json"))


def test_local_task_script_writes_a_task_over_a_recipes_held_out_rows(tmp_path, capsys):
    script = load_script("lm_eval_local_task")
    assert script.main(["recipes/data/gsm8k/train_512.jsonl", "--last", "4", "--out", str(tmp_path)]) == 0
    rows = read_jsonl(tmp_path / "rows.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in load_prompts("recipes/data/gsm8k/train_512.jsonl").rows[-4:]]
    import yaml

    task = yaml.safe_load((tmp_path / "task.yaml").read_text())
    assert task["dataset_kwargs"]["data_files"]["test"] == str((tmp_path / "rows.jsonl").resolve())
    assert task["filter_list"][0]["filter"][0]["regex_pattern"] == script.LAST_INTEGER
