"""Tests of the sandbox task (pure functions) and the sandbox base-model builder (tiny builds)."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from selfalign import sandbox
from selfalign.sandbox.corpus import corpus
from selfalign.sandbox.task import (
    JUDGE_EXPECTED_TEMPLATE,
    JUDGE_TEMPLATE,
    SCORE_RE,
    ArithTask,
    first_error_position,
    judgment,
    parse_answer,
    plant_error,
    score,
    solve,
    verify,
)

P = "Q:47+38+15|S:"
SOL = "47+38=85;85+15=100;A:100"

# ----------------------------------------------------------------------------------------------
# task


def test_solve():
    assert solve(P) == SOL
    assert solve("Q:16+44+21|S:") == "16+44=60;60+21=81;A:81"
    assert solve("Q:12+34|S:") == "12+34=46;A:46"
    assert solve("Q:99+99+99+99|S:") == "99+99=198;198+99=297;297+99=396;A:396"
    with pytest.raises(ValueError):
        solve("Q:1+|S:")


def test_parse_answer():
    assert parse_answer(SOL) == "100"
    assert parse_answer(SOL + "</s>") == "100"
    assert parse_answer(SOL + " \n") == "100"
    assert parse_answer("A:3;A:7") == "7"
    assert parse_answer("47+38=85;85+15=100") is None
    assert parse_answer("47+38=85;A:100;Q:") is None
    assert parse_answer("A:10x") is None
    assert parse_answer("A:") is None
    assert parse_answer("") is None


def test_verify():
    assert verify(P, SOL)
    assert verify(P, SOL + "</s>")
    # only the final answer counts
    assert verify(P, "47+38=86;86+15=100;A:100")
    assert not verify(P, "47+38=86;86+15=101;A:101")
    assert not verify(P, "47+38=85;85+15=100")
    assert not verify(P, "47+38=85;85+15=100;A:100;A:7")


def test_first_error_position():
    assert first_error_position(P, SOL) is None
    assert first_error_position(P, SOL + "</s>") is None
    assert first_error_position(P, "47+38=86;86+15=101;A:101") == 7
    assert first_error_position(P, "47+38=85;85+15=110;A:110") == 16
    assert first_error_position(P, "47+38=85;85+15=100;A:101") == 23
    assert first_error_position(P, "47+38=85;85+15=100;A:1000") == len(SOL)  # extra text
    assert first_error_position(P, "47+38=85;85") == len("47+38=85;85")  # truncated
    assert first_error_position(P, "") == 0


def test_plant_error():
    rng = random.Random(0)
    for _ in range(300):
        nums = [rng.randint(10, 99) for _ in range(rng.choice([2, 3, 4]))]
        prompt = sandbox.format_prompt(nums)
        resp, pos = plant_error(prompt, rng)
        assert not verify(prompt, resp)
        assert first_error_position(prompt, resp) == pos
        assert resp[:pos] == solve(prompt)[:pos] and resp[pos] != solve(prompt)[pos]
        # exactly one step is wrong; the later steps carry the wrong value on correctly
        steps = resp.split(";")[:-1]
        prev, wrong = nums[0], 0
        for s, b in zip(steps, nums[1:], strict=True):
            lhs, c = s.split("=")
            a, b2 = map(int, lhs.split("+"))
            assert a == prev and b2 == b
            wrong += int(c) != a + b
            prev = int(c)
        assert wrong == 1
        assert parse_answer(resp) == str(prev)
        assert score(prompt, resp) in (2, 3)
    # same rng seed, same error
    assert plant_error(P, random.Random(5)) == plant_error(P, random.Random(5))
    assert plant_error(P, 5) == plant_error(P, 5)


def test_judgment_and_score():
    assert judgment(P, SOL) == "47+38=85:85o;85+15=100:100o;A:100:100o|Score:5"
    assert score(P, SOL) == 5
    # carried error in step 1: first step wrong, answer = last result, answer wrong
    assert judgment(P, "47+38=86;86+15=101;A:101") == "47+38=86:85n;86+15=101:101o;A:101:101o|Score:2"
    # carried error in the last step
    assert judgment(P, "47+38=85;85+15=110;A:110") == "47+38=85:85o;85+15=110:100n;A:110:110o|Score:3"
    # answer copied wrongly
    assert judgment(P, "47+38=85;85+15=100;A:101") == "47+38=85:85o;85+15=100:100o;A:101:100n|Score:3"
    # compensating errors: answer right but steps wrong
    assert judgment(P, "47+38=86;86+15=100;A:100") == "47+38=86:85n;86+15=100:101n;A:100:100o|Score:3"
    # wrong operand: the check gives the result the step should have had
    assert judgment(P, "47+38=85;58+15=73;A:73") == "47+38=85:85o;58+15=73:100n;A:73:73o|Score:3"
    # malformed
    assert judgment(P, "47+38=85;85+15=100") == "?|Score:1"
    assert score(P, "garbage A:100") == 2
    assert score(P, "") == 1
    for resp in [SOL, "47+38=86;86+15=101;A:101", "", "x"]:
        j = judgment(P, resp)
        assert int(SCORE_RE.search(j).group(1)) == score(P, resp)
        assert sandbox.score_from_judgment(j) == score(P, resp)
    assert sandbox.score_from_judgment("38+47=85o|Score: 4") == 4
    assert sandbox.score_from_judgment("no score") is None


def test_score_is_five_iff_exact():
    rng = random.Random(1)
    for _ in range(200):
        prompt = sandbox.format_prompt([rng.randint(10, 99) for _ in range(3)])
        assert score(prompt, solve(prompt)) == 5
        resp, _ = plant_error(prompt, rng)
        assert score(prompt, resp) < 5
        # random single-character corruption of the solution
        s = solve(prompt)
        i = rng.randrange(len(s))
        bad = s[:i] + rng.choice("0123456789;+=A:") + s[i + 1 :]
        if bad != s:
            assert score(prompt, bad) < 5


def test_templates():
    assert JUDGE_TEMPLATE.format(prompt=P, response=SOL) == P + SOL + "|J:"
    assert JUDGE_EXPECTED_TEMPLATE.format(prompt=P, response=SOL) == P + SOL + "|Score:"


def test_problems_deterministic_and_sliced():
    t = ArithTask()
    a = t.problems(50)
    assert a == ArithTask().problems(50)
    assert t.problems(20, start=30) == a[30:]
    assert t.problems(10, "eval") == t.problems(10, "eval")
    assert t.problems(5) != t.problems(5, "eval")
    assert ArithTask(seed=1).problems(5) != a[:5]
    assert len({r["id"] for r in a}) == 50
    for r in a:
        nums = sandbox.parse_prompt(r["prompt"])
        assert len(nums) == 3 and all(10 <= x <= 99 for x in nums)
        assert r["answer"] == str(sum(nums))
        assert verify(r["prompt"], solve(r["prompt"]))
    four = ArithTask(terms=4, digits=3).problems(5)
    assert all(len(sandbox.parse_prompt(r["prompt"])) == 4 for r in four)
    assert all(100 <= x <= 999 for r in four for x in sandbox.parse_prompt(r["prompt"]))
    with pytest.raises(ValueError):
        t.problems(3, split="test")


def test_operands_uniform():
    nums = [x for r in ArithTask().problems(3000) for x in sandbox.parse_prompt(r["prompt"])]
    assert min(nums) == 10 and max(nums) == 99
    tens = Counter(x // 10 for x in nums)
    assert all(900 < c < 1100 for c in tens.values())  # 9000 draws over 9 tens digits


def test_train_eval_disjoint():
    t = ArithTask()
    ev = {r["prompt"] for r in t.problems(4096, "eval")}
    tr = {r["prompt"] for r in t.problems(20000, "train")}
    assert not ev & tr
    # the corpus stream is disjoint from eval as well
    rows = corpus(5000, seed=0, task=t)
    assert not ev & {r["prompt"] for r in rows if r["kind"] in ("solution", "planted")}


def test_corpus():
    rows = corpus(4000, seed=3, error_rate=0.25, judge_fraction=0.4, judge_noise=0.0)
    assert rows == corpus(4000, seed=3, error_rate=0.25, judge_fraction=0.4, judge_noise=0.0)
    assert rows[100:] == corpus(3900, seed=3, error_rate=0.25, judge_fraction=0.4, judge_noise=0.0, start=100)
    kinds = Counter(r["kind"] for r in rows)
    n_judge = kinds["judge_written"] + kinds["judge_expected"]
    assert 0.35 < n_judge / 4000 < 0.45
    assert 0.2 < kinds["planted"] / (kinds["planted"] + kinds["solution"]) < 0.3
    for r in rows:
        assert r["completion"].endswith("</s>")
        body = r["completion"][: -len("</s>")]
        if r["kind"] == "solution":
            assert body == solve(r["prompt"])
        elif r["kind"] == "planted":
            assert not verify(r["prompt"], body)
        else:
            prompt, rest = r["prompt"].split("|S:", 1)
            prompt += "|S:"
            if r["kind"] == "judge_written":
                response = rest[: -len("|J:")]
                assert body == judgment(prompt, response)  # no noise
            else:
                response = rest[: -len("|Score:")]
                assert body == str(score(prompt, response))
    noisy = corpus(4000, seed=3, judge_fraction=1.0, judge_noise=0.2)
    clean = corpus(4000, seed=3, judge_fraction=1.0, judge_noise=0.0)
    diff = sum(a != b for a, b in zip(noisy, clean, strict=True))
    assert 0.12 < diff / 4000 < 0.28
    for r in noisy:
        assert SCORE_RE.search("Score:" + r["completion"]) or SCORE_RE.search(r["completion"])


# ----------------------------------------------------------------------------------------------
# tokenizer and model

torch = pytest.importorskip("torch")

from selfalign.sandbox import cache as sandbox_cache  # noqa: E402
from selfalign.sandbox.cache import sandbox_model_path  # noqa: E402
from selfalign.sandbox.config import SandboxModelConfig, config_hash  # noqa: E402
from selfalign.sandbox.model import build_sandbox_model  # noqa: E402
from selfalign.sandbox.tokenizer import build_char_tokenizer  # noqa: E402

TINY = dict(
    steps=10,
    solve_max_steps=10,
    check_every=5,
    layers=1,
    hidden=32,
    heads=2,
    intermediate=64,
    batch_size=8,
    warmup_steps=5,
    own_samples=32,
)


def test_tokenizer_roundtrip(tmp_path):
    tok = build_char_tokenizer()
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert len(tok) == 100
    text = JUDGE_TEMPLATE.format(prompt=P, response=SOL) + judgment(P, SOL)
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text)  # one token per character, no BOS / EOS added
    assert tok.decode(ids) == text
    assert tok(SOL + "</s>")["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(tok(SOL + "</s>")["input_ids"], skip_special_tokens=True) == SOL
    assert tok.decode(tok("a b\nc")["input_ids"]) == "a b\nc"
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    assert tok2(text)["input_ids"] == ids
    assert tok2.decode(ids) == text
    assert (tok2.pad_token_id, tok2.eos_token_id) == (0, 2)


def test_tiny_build_loads_and_generates(tmp_path):
    torch.set_num_threads(2)
    cfg = SandboxModelConfig(**TINY)
    out = build_sandbox_model(cfg, tmp_path / "m")
    meta = json.loads((out / "sandbox.json").read_text())
    assert meta["config"] == cfg.to_dict() and meta["build_seconds"] >= 0
    assert meta["phase1_steps"] == 10 and meta["total_steps"] == 20
    assert (out / "model.safetensors").is_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    tok.padding_side = "left"
    enc = tok([P, "Q:1+2+3|S:"], return_tensors="pt", padding=True)
    gen = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert gen.shape[0] == 2 and gen.shape[1] <= enc["input_ids"].shape[1] + 5

    # deterministic for its config
    out2 = build_sandbox_model(cfg, tmp_path / "m2")
    from safetensors.torch import load_file

    a, b = load_file(out / "model.safetensors"), load_file(out2 / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_hash():
    a = SandboxModelConfig()
    assert config_hash(a) == config_hash(SandboxModelConfig())
    assert config_hash(a) != config_hash(SandboxModelConfig(seed=1))
    assert SandboxModelConfig.from_dict(a.to_dict()) == a
    with pytest.raises(ValueError, match="unknown"):
        SandboxModelConfig.from_dict({"nope": 1})


def test_cache_builds_once_and_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path / "cache"))
    cfg = SandboxModelConfig(**TINY)
    root = tmp_path / "cache" / "sandbox"
    h = config_hash(cfg)

    # a build killed half-way leaves nothing that looks like a model
    def dying_build(cfg, out_dir, num_threads=None):
        (out_dir / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(sandbox_cache, "build_sandbox_model", dying_build)
    with pytest.raises(KeyboardInterrupt):
        sandbox_model_path(cfg)
    assert not (root / h).exists()
    assert not list(root.glob(f".{h}.tmp-*"))

    # a stale temp dir from a SIGKILLed build is cleaned up by the next build
    (root / f".{h}.tmp-stale").mkdir()
    calls = []

    def fake_build(cfg, out_dir, num_threads=None):
        calls.append(out_dir)
        assert out_dir.parent == root and out_dir.name.startswith(f".{h}.tmp-")
        assert not (root / h).exists()  # the final dir appears only after the build
        (out_dir / "sandbox.json").write_text("{}")
        return out_dir

    monkeypatch.setattr(sandbox_cache, "build_sandbox_model", fake_build)
    p = sandbox_model_path(cfg)
    assert p == root / h and (p / "sandbox.json").is_file()
    assert not list(root.glob(f".{h}.tmp-*"))
    assert sandbox_model_path(cfg) == p
    assert len(calls) == 1


def test_cache_real_build(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path))
    cfg = SandboxModelConfig(**{**TINY, "steps": 2, "solve_max_steps": 2, "check_every": 1})
    p = sandbox_model_path(cfg)
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(p).config.vocab_size == 100


def test_corpus_with_own_samples():
    own = [("Q:47+38+15|S:", "47+38=86;86+15=101;A:101"), ("Q:16+44+21|S:", "16+44=60;60+21=81;A:81")]
    rows = corpus(300, seed=1, judge_fraction=0.5, samples=own, sample_fraction=1.0, judge_noise=0.0)
    for r in rows:
        if r["kind"] == "sample":
            assert (r["prompt"], r["completion"][: -len("</s>")]) in own
        elif r["kind"] == "judge_written":
            p, resp = r["prompt"].split("|S:")
            assert (p + "|S:", resp[: -len("|J:")]) in own
    assert {r["kind"] for r in rows} <= {"sample", "judge_written", "judge_expected"}
    with pytest.raises(ValueError):
        corpus(3, samples=None, sample_fraction=0.5)


def test_the_default_model_ships_with_the_package_and_needs_no_build(tmp_path, monkeypatch):
    from selfalign.sandbox.cache import SHIPPED

    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path / "cache"))

    def no_build(*args, **kwargs):
        raise AssertionError("the default sandbox model must not be built")

    monkeypatch.setattr(sandbox_cache, "build_sandbox_model", no_build)
    assert sandbox_model_path() == SHIPPED == sandbox_model_path(SandboxModelConfig())
    meta = json.loads((SHIPPED / "sandbox.json").read_text())
    assert meta["hash"] == config_hash(SandboxModelConfig()) and meta["config"] == SandboxModelConfig().to_dict()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(SHIPPED), AutoTokenizer.from_pretrained(SHIPPED)
    assert sum(p.numel() for p in model.parameters()) == meta["params"]
    ids = tok(P, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=30, do_sample=False)
    assert tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).startswith("47+38=")  # it has learned the task
    assert not (tmp_path / "cache").exists()


def test_sandbox_build_builds_the_default_settings_into_the_cache(tmp_path, monkeypatch, capsys):
    from selfalign.cli import main

    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path))

    def fake_build(cfg, out_dir, num_threads=None):
        (out_dir / "sandbox.json").write_text("{}")
        return out_dir

    monkeypatch.setattr(sandbox_cache, "build_sandbox_model", fake_build)
    assert main(["sandbox", "build"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "sandbox" / config_hash(SandboxModelConfig()))
    # other settings are never the shipped model
    assert sandbox_model_path(SandboxModelConfig(seed=1)) == tmp_path / "sandbox" / config_hash(
        SandboxModelConfig(seed=1))
