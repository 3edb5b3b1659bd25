"""Tests of the prompt sources (JSONL, chat rows, local HF datasets, sandbox URIs) and prompt rendering."""

from __future__ import annotations

import json
import logging

import pytest

from selfalign.config import ConfigError
from selfalign.data.prompts import load_prompts, parse_sandbox_uri, render_prompt
from selfalign.sandbox.task import ArithTask


def write_jsonl(path, lines):
    """`lines`: dicts (dumped as JSON) or raw strings (written as is)."""
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines),
                    encoding="utf-8")
    return path


def config_error(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------------------------------------
# JSONL


def test_jsonl_prompt_column(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "What is 2+2?", "answer": 4},
        {"prompt": "Name a colour.", "id": 17, "extra": "ignored"},
        {"prompt": "Say hi", "answer": None},
    ])
    ps = load_prompts(str(path))
    assert ps.skipped == 0 and ps.verifier is None
    assert ps.rows == [
        {"prompt": "What is 2+2?", "answer": "4", "id": "0"},  # answers and ids become strings
        {"prompt": "Name a colour.", "id": "17"},
        {"prompt": "Say hi", "id": "2"},  # a null answer is no answer
    ]


def test_jsonl_custom_fields(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "Why?", "gold": "because"}])
    ps = load_prompts(str(path), field="question", answer_field="gold")
    assert ps.rows == [{"prompt": "Why?", "answer": "because", "id": "0"}]
    # the default field is then missing
    msg = config_error(load_prompts, str(path))
    assert "missing field 'prompt'" in msg


def test_chat_messages_rows(tmp_path):
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello!"}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conv}, {"messages": conv[:2], "answer": "x"}])
    rows = load_prompts(str(path)).rows
    # the trailing assistant turn is dropped; the prompt is the last user turn
    assert rows[0] == {"messages": conv[:2], "prompt": "Hi there", "id": "0"}
    assert rows[1] == {"messages": conv[:2], "prompt": "Hi there", "answer": "x", "id": "1"}


def test_prompt_column_wins_over_messages(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "plain", "messages": [{"role": "user", "content": "c"}]}])
    assert load_prompts(str(path)).rows == [{"prompt": "plain", "id": "0"}]


BAD_ROWS = [
    ({"text": "no prompt field"}, "missing field 'prompt' (or chat 'messages')"),
    ({"prompt": "   "}, "field 'prompt' is empty"),
    ({"prompt": 42}, "field 'prompt' must be a string, got int"),
    ({"prompt": ["a"]}, "field 'prompt' must be a string, got list"),
    ('{"prompt": "unterminated', "invalid JSON ("),
    ("[1, 2]", "expected a JSON object, got list"),
    ({"messages": []}, "'messages' must be a non-empty list of {role, content} objects"),
    ({"messages": [{"role": "user"}]}, "'messages' must be a non-empty list of {role, content} objects"),
    ({"messages": [{"role": "assistant", "content": "only me"}]}, "'messages' has no non-empty user turn"),
    ({"messages": [{"role": "user", "content": " "}]}, "'messages' has no non-empty user turn"),
]


@pytest.mark.parametrize(("bad", "why"), BAD_ROWS)
def test_bad_row_fails_naming_file_and_line(tmp_path, bad, why):
    # the bad row is on line 4: line 2 is blank and still counts as a line
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "ok 1"}, "", {"prompt": "ok 2"}, bad,
                                                    {"prompt": "ok 3"}])
    msg = config_error(load_prompts, str(path), on_bad_row="fail")
    assert msg.startswith(f"{path}: row 4: ")
    assert why in msg
    assert msg.endswith("(set prompts.on_bad_row: skip to skip bad rows)")


@pytest.mark.parametrize(("bad", "why"), BAD_ROWS)
def test_bad_row_is_skipped_and_counted(tmp_path, bad, why, caplog):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "ok 1"}, "", {"prompt": "ok 2"}, bad,
                                                    {"prompt": "ok 3"}])
    with caplog.at_level(logging.WARNING, logger="selfalign.data.prompts"):
        ps = load_prompts(str(path), on_bad_row="skip")
    assert ps.skipped == 1
    assert [r["prompt"] for r in ps.rows] == ["ok 1", "ok 2", "ok 3"]
    assert why in caplog.text and "skipped 1 malformed prompt rows" in caplog.text


def test_several_bad_rows_are_counted(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"x": 1}, {"prompt": "a"}, "{oops", {"prompt": ""}, {"prompt": "b"}])
    ps = load_prompts(str(path), on_bad_row="skip")
    assert ps.skipped == 3
    assert [r["prompt"] for r in ps.rows] == ["a", "b"]


def test_start_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(5)])
    assert [r["prompt"] for r in load_prompts(str(path), start=1, limit=2).rows] == ["p1", "p2"]
    assert [r["prompt"] for r in load_prompts(str(path), start=3).rows] == ["p3", "p4"]
    assert [r["prompt"] for r in load_prompts(str(path), start=0, limit=5).rows] == ["p0", "p1", "p2", "p3", "p4"]
    assert [r["id"] for r in load_prompts(str(path), start=2, limit=1).rows] == ["2"]  # ids are file positions
    # rows [4, 6) need 6 rows, the file has 5
    msg = config_error(load_prompts, str(path), start=4, limit=2)
    assert msg == f"{path}: needs 6 prompt rows but has only 5 valid rows"


def test_too_few_rows_counts_only_valid_rows(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"bad": 1}, {"prompt": "b"}])
    ps = load_prompts(str(path), on_bad_row="skip", limit=2)
    assert [r["prompt"] for r in ps.rows] == ["a", "b"] and ps.skipped == 1
    msg = config_error(load_prompts, str(path), on_bad_row="skip", limit=3)
    assert msg == f"{path}: needs 3 prompt rows but has only 2 valid rows"


def test_missing_jsonl_file(tmp_path):
    msg = config_error(load_prompts, str(tmp_path / "nope.jsonl"))
    assert msg == f"{tmp_path / 'nope.jsonl'}: prompt file not found"


# ---------------------------------------------------------------------------------------------
# local HF datasets


def test_local_hf_dataset(tmp_path):
    import datasets

    rows = [{"prompt": "first", "answer": "1"}, {"prompt": "second", "answer": "2"}, {"prompt": "third",
                                                                                        "answer": None}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    ps = load_prompts(str(tmp_path / "ds"))
    assert ps.rows == [{"prompt": "first", "answer": "1", "id": "0"}, {"prompt": "second", "answer": "2", "id": "1"},
                       {"prompt": "third", "id": "2"}]
    assert [r["prompt"] for r in load_prompts(str(tmp_path / "ds"), start=1, limit=1).rows] == ["second"]


def test_local_hf_dataset_bad_row_names_the_row(tmp_path):
    import datasets

    datasets.Dataset.from_list([{"prompt": "ok"}, {"prompt": None}, {"prompt": "fine"}]).save_to_disk(
        str(tmp_path / "ds"))
    msg = config_error(load_prompts, str(tmp_path / "ds"))
    assert msg.startswith(f"{tmp_path / 'ds'} [train]: row 1: field 'prompt' must be a string, got NoneType")
    ps = load_prompts(str(tmp_path / "ds"), on_bad_row="skip")
    assert [r["prompt"] for r in ps.rows] == ["ok", "fine"] and ps.skipped == 1


def test_local_hf_dataset_dict_splits(tmp_path):
    import datasets

    dd = datasets.DatasetDict({"test": datasets.Dataset.from_list([{"prompt": "t0"}, {"prompt": "t1"}])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert [r["prompt"] for r in load_prompts(str(tmp_path / "dd"), split="test").rows] == ["t0", "t1"]
    msg = config_error(load_prompts, str(tmp_path / "dd"), split="train")
    assert msg == f"{tmp_path / 'dd'}: no split 'train'; available: test"


# ---------------------------------------------------------------------------------------------
# sandbox URIs


def test_sandbox_source():
    ps = load_prompts("sandbox://arith?terms=4&digits=2", limit=3)
    assert ps.verifier == "sandbox" and ps.skipped == 0
    assert ps.rows == ArithTask(terms=4, digits=2).problems(3)
    for row in ps.rows:
        assert row["prompt"].startswith("Q:") and row["prompt"].endswith("|S:")
        terms = [int(x) for x in row["prompt"][2:-3].split("+")]
        assert len(terms) == 4 and all(10 <= t <= 99 for t in terms)
        assert row["answer"] == str(sum(terms))


def test_sandbox_start_and_split():
    task = ArithTask(terms=3, digits=2, seed=5)
    assert load_prompts("sandbox://arith?seed=5", start=2, limit=2).rows == task.problems(2, start=2)
    assert load_prompts("sandbox://arith?seed=5", limit=2, sandbox_split="eval").rows == task.problems(2, "eval")


def test_sandbox_source_needs_a_limit():
    msg = config_error(load_prompts, "sandbox://arith")
    assert msg == "sandbox://arith: the sandbox source is unbounded; a row count is needed"


def test_parse_sandbox_uri():
    assert parse_sandbox_uri("sandbox://arith?terms=4&digits=1&seed=9") == ("arith", ArithTask(4, 1, 9))
    assert parse_sandbox_uri("sandbox://arith") == ("arith", ArithTask())
    assert parse_sandbox_uri("sandbox://arith-judge?terms=2") == ("arith-judge", ArithTask(terms=2))


@pytest.mark.parametrize(("uri", "expected"), [
    ("sandbox://geometry", "sandbox://geometry: unknown sandbox task 'geometry'; available: arith, arith-judge"),
    ("sandbox://arith?size=3",
     "sandbox://arith?size=3: unknown sandbox parameter 'size'; allowed: terms, digits, seed"),
    ("sandbox://arith?terms=x", "sandbox://arith?terms=x: sandbox parameter terms must be an integer, got 'x'"),
    ("sandbox://arith?digits=1.5",
     "sandbox://arith?digits=1.5: sandbox parameter digits must be an integer, got '1.5'"),
    ("sandbox://arith?terms=1", "sandbox://arith?terms=1: need terms >= 2 and digits >= 1"),
    ("sandbox://arith?digits=0", "sandbox://arith?digits=0: need terms >= 2 and digits >= 1"),
])
def test_bad_sandbox_uris(uri, expected):
    assert config_error(load_prompts, uri, limit=2) == expected


# ---------------------------------------------------------------------------------------------
# rendering


CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)  # a fresh one per test: tests set chat_template


def test_render_prompt_without_chat_template_is_the_raw_prompt(tokenizer):
    assert not tokenizer.chat_template
    row = {"prompt": "Q:12+34|S:", "messages": [{"role": "user", "content": "Q:12+34|S:"}]}
    assert render_prompt(tokenizer, row) == "Q:12+34|S:"


def test_render_prompt_uses_the_chat_template(tokenizer):
    tokenizer.chat_template = CHAT_TEMPLATE
    assert render_prompt(tokenizer, {"prompt": "hi"}) == "<user>hi\n<assistant>"
    conv = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]
    assert render_prompt(tokenizer, {"prompt": "hi", "messages": conv}) == "<system>be nice\n<user>hi\n<assistant>"
    # "never" keeps the raw prompt even with a template
    assert render_prompt(tokenizer, {"prompt": "hi", "messages": conv}, "never") == "hi"
