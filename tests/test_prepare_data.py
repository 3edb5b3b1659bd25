"""scripts/prepare_data.py: the conversion functions on hand-written rows, `dump`, the rows through selfalign's
loaders and verifier, and main() with a fake `datasets.load_dataset` (no network)."""

from __future__ import annotations

import json
import random

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def pd():
    return load_script("prepare_data")


GSM8K = [{"question": "Tom has 1,000 apples and buys 234 more. How many?", "answer": "1000 + 234 = 1234\n#### 1,234"},
         {"question": "What is 2 - 5?", "answer": "2 - 5 = -3 #### -3"}]
MATH = [{"problem": "Compute $1+1$.", "solution": "$\\boxed{2}$", "level": "Level 1", "type": "Algebra"}]


def msg(message_id, role, text, parent_id=None, lang="en", deleted=False, review_result=True, rank=None):
    return {"message_id": message_id, "parent_id": parent_id, "role": role, "text": text, "lang": lang,
            "deleted": deleted, "review_result": review_result, "rank": rank}


OASST = [
    msg("p1", "prompter", "Explain DNS."),
    msg("a1", "assistant", "DNS maps names to addresses.", parent_id="p1", rank=0),
    msg("a1b", "assistant", "A worse answer.", parent_id="p1", rank=1),
    msg("p1c", "prompter", "Follow-up question?", parent_id="a1"),  # not a root prompt
    msg("a1c", "assistant", "Rank-0 reply to a follow-up.", parent_id="p1c", rank=0),
    msg("p2", "prompter", "Erkläre DNS.", lang="de"),  # non-English
    msg("a2", "assistant", "DNS ist ...", parent_id="p2", lang="en", rank=0),  # its parent is filtered out
    msg("p3", "prompter", "Deleted prompt.", deleted=True),
    msg("p4", "prompter", "Review failed.", review_result=False),
    msg("p5", "prompter", "Not reviewed yet.", review_result=None),  # None is kept: only False excludes
    msg("a5", "assistant", "Deleted reply.", parent_id="p5", deleted=True, rank=0),
    msg("a5b", "assistant", "Kept reply.", parent_id="p5", rank=0),
    msg("a6", "assistant", "Reply to a missing parent.", parent_id="gone", rank=0),
]


def test_gsm8k_rows(pd):
    rows = pd.gsm8k_rows(iter(GSM8K), "train")
    assert [r["id"] for r in rows] == ["gsm8k-train-0", "gsm8k-train-1"]
    assert rows[0]["prompt"] == GSM8K[0]["question"] + pd.GSM8K_SUFFIX
    assert rows[0]["prompt"].endswith('end with "The answer is N." where N is the final number.')
    assert [r["answer"] for r in rows] == ["1234", "-3"]
    assert pd.gsm8k_rows(GSM8K[:1], "test")[0]["id"] == "gsm8k-test-0"


def test_math_rows(pd):
    assert pd.math_rows(MATH) == [{"id": "math-train-0", "prompt": "Compute $1+1$.\n\nPlease reason step by step, "
                                   "and put your final answer within \\boxed{}."}]


def test_oasst_prompt_rows(pd):
    rows = pd.oasst_prompt_rows(iter(OASST))
    assert rows == [{"id": "p1", "prompt": "Explain DNS."}, {"id": "p5", "prompt": "Not reviewed yet."}]


def test_oasst_seed_sft_rows(pd):
    rows = pd.oasst_seed_sft_rows(iter(OASST))  # an iterator: the function needs two passes
    assert rows == [
        {"id": "a1", "messages": [{"role": "user", "content": "Explain DNS."},
                                  {"role": "assistant", "content": "DNS maps names to addresses."}]},
        {"id": "a5b", "messages": [{"role": "user", "content": "Not reviewed yet."},
                                   {"role": "assistant", "content": "Kept reply."}]},
    ]


def test_cream_rows(pd):
    mapping = {"q1": [{"role": "user", "content": "Hi"}],
               "q2": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]}
    assert pd.cream_rows(mapping) == [{"id": "q1", "messages": mapping["q1"]}, {"id": "q2", "messages": mapping["q2"]}]


def test_dump_deterministic_shuffle(pd, tmp_path, capsys):
    rows = [{"id": str(i), "prompt": f"p{i} é"} for i in range(20)]
    original = [dict(r) for r in rows]
    assert pd.dump(tmp_path / "a.jsonl", rows) == 20
    pd.dump(tmp_path / "b.jsonl", list(rows))
    assert rows == original  # the caller's list is not reordered
    text = (tmp_path / "a.jsonl").read_text(encoding="utf-8")
    assert text == (tmp_path / "b.jsonl").read_text(encoding="utf-8")
    assert "é" in text  # ensure_ascii=False
    written = [json.loads(line) for line in text.splitlines()]
    expected = list(original)
    random.Random(0).shuffle(expected)
    assert written == expected and written != original
    assert f"{tmp_path / 'a.jsonl'}: 20 rows" in capsys.readouterr().out


def test_rows_load_through_selfalign(pd, tmp_path):
    from selfalign.data.prompts import load_prompts
    from selfalign.data.seed import load_seed_examples
    from selfalign.rewards.verifier import is_correct

    pd.dump(tmp_path / "gsm8k_train.jsonl", pd.gsm8k_rows(GSM8K, "train"))
    ps = load_prompts(str(tmp_path / "gsm8k_train.jsonl"))
    by_id = {r["id"]: r for r in ps.rows}
    assert ps.skipped == 0 and set(by_id) == {"gsm8k-train-0", "gsm8k-train-1"}
    row = by_id["gsm8k-train-0"]
    assert row["answer"] == "1234"
    assert is_correct(row, "1000 + 234 = 1234. The answer is 1234.")
    assert not is_correct(row, "The answer is 1235.")

    pd.dump(tmp_path / "math_train.jsonl", pd.math_rows(MATH))
    assert load_prompts(str(tmp_path / "math_train.jsonl")).rows[0]["id"] == "math-train-0"

    pd.dump(tmp_path / "oasst_prompts.jsonl", pd.oasst_prompt_rows(OASST))
    assert {r["prompt"] for r in load_prompts(str(tmp_path / "oasst_prompts.jsonl"), limit=2).rows} == {
        "Explain DNS.", "Not reviewed yet."}

    mapping = {"q1": [{"role": "user", "content": "Hi"}]}
    pd.dump(tmp_path / "cream_prompts.jsonl", pd.cream_rows(mapping))
    (cream,) = load_prompts(str(tmp_path / "cream_prompts.jsonl")).rows
    assert cream == {"id": "q1", "prompt": "Hi", "messages": mapping["q1"]}

    pd.dump(tmp_path / "oasst_seed_sft.jsonl", pd.oasst_seed_sft_rows(OASST))
    examples = load_seed_examples(str(tmp_path / "oasst_seed_sft.jsonl"), n=10, seed=0)
    assert sorted((e["prompt"][0]["content"], e["completion"][0]["content"]) for e in examples) == [
        ("Explain DNS.", "DNS maps names to addresses."), ("Not reviewed yet.", "Kept reply.")]
    assert all(e["prompt"][0]["role"] == "user" and e["completion"][0]["role"] == "assistant" for e in examples)


@pytest.fixture
def fake_datasets(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def load_dataset(dataset_id, *args, split):
        calls.append((dataset_id, args, split))
        if dataset_id == "openai/gsm8k":
            return GSM8K
        if dataset_id == "DigitalLearningGmbH/MATH-lighteval":
            return MATH
        if dataset_id == "OpenAssistant/oasst1":
            return OASST if split == "train" else []
        raise AssertionError(dataset_id)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_main_writes_all_files(pd, tmp_path, fake_datasets):
    cream = tmp_path / "prompt.json"
    cream.write_text(json.dumps({"q1": [{"role": "user", "content": "Hi"}]}), encoding="utf-8")
    out = tmp_path / "data"
    assert pd.main(["--out", str(out), "--cream-prompts", str(cream)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "cream_prompts.jsonl", "gsm8k_test.jsonl", "gsm8k_train.jsonl", "math_train.jsonl", "oasst_prompts.jsonl",
        "oasst_seed_sft.jsonl"]
    assert ("openai/gsm8k", ("main",), "test") in fake_datasets
    assert ("OpenAssistant/oasst1", (), "validation") in fake_datasets
    lines = (out / "oasst_seed_sft.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2


def test_main_only_and_no_cream_by_default(pd, tmp_path, fake_datasets):
    assert pd.main(["--out", str(tmp_path), "--only", "gsm8k", "--only", "math"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gsm8k_test.jsonl", "gsm8k_train.jsonl",
                                                          "math_train.jsonl"]
    assert {c[0] for c in fake_datasets} == {"openai/gsm8k", "DigitalLearningGmbH/MATH-lighteval"}


def test_main_load_failure_is_one_line(pd, tmp_path, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    assert pd.main(["--out", str(tmp_path), "--only", "gsm8k"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prepare_data: error: ")
    assert "openai/gsm8k" in err and "ConnectionError" in err and "Traceback" not in err


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_main_bad_cream_prompts(pd, tmp_path, capsys, content):
    path = tmp_path / "prompt.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert pd.main(["--out", str(tmp_path / "data"), "--only", "cream", "--cream-prompts", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prepare_data: error: --cream-prompts ")
    assert str(path) in err


def test_main_only_cream_needs_path(pd, capsys):
    with pytest.raises(SystemExit) as e:
        pd.main(["--only", "cream"])
    assert e.value.code == 2
    assert "prepare_data: error: --only cream needs --cream-prompts" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted(str(p) for d in ("llama3-8b-instruct", "qwen2.5-7b-instruct")
                                          for p in __import__("pathlib").Path("recipes", d).glob("*.yaml")))
def test_real_scale_recipes_read_the_files_the_script_writes(pd, tmp_path, fake_datasets, recipe):
    """Every data/ file a real-scale recipe names is one prepare_data.py writes, and it loads with the recipe's
    prompt settings (eval rows carry answers for the verifier)."""
    from selfalign.data.prompts import load_prompts
    from selfalign.data.seed import load_seed_examples
    from selfalign.recipe import load_recipe

    cream = tmp_path / "prompt.json"
    cream.write_text(json.dumps({"q1": [{"role": "user", "content": "Hi"}]}), encoding="utf-8")
    assert pd.main(["--out", str(tmp_path / "data"), "--cream-prompts", str(cream)]) == 0
    r = load_recipe(recipe)
    local = lambda source: str(tmp_path / source) if source and source.startswith("data/") else None  # noqa: E731
    p = r.prompts
    for source, needs_answers in ((p.source, False), (p.eval_source, True)):
        if local(source):
            rows = load_prompts(local(source), split=p.split, field=p.field, answer_field=p.answer_field).rows
            assert rows and (not needs_answers or all(row.get("answer") for row in rows)), source
    if local(r.seed_sft.data):
        assert load_seed_examples(local(r.seed_sft.data), r.seed_sft.max_examples, r.seed)
