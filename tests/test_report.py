"""`selfalign report` and `selfalign compare` on real runs of the tiny model (a DPO run and a GRPO run): what the
HTML and markdown say, that the figures are inlined PNGs, and, in a real headless Chromium, that every plot
decodes with a non-zero size and the page logs no console error."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import tiny_recipe

from selfalign import pipeline
from selfalign.artifacts import read_json, read_jsonl
from selfalign.cli import main
from selfalign.recipe import recipe_from_dict
from selfalign.report import compare_runs, load_run, report_run
from selfalign.rewards.verifier import is_correct

FIGURES = ["eval", "rewards", "reward_quality", "pairs", "length", "training", "cost"]


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    """Two rounds on the shipped sandbox model, whose samples are often right, so every figure has data."""
    out = tmp_path_factory.mktemp("dpo_run")
    raw = tiny_recipe("sandbox", rounds=2, **{"rewards": {"likelihood": {}, "verifier": {}},
                                              "generation.max_new_tokens": 32, "eval.max_new_tokens": 32,
                                              "tracking.wandb.enabled": False})
    pipeline.run(recipe_from_dict(raw), out)
    return out


@pytest.fixture(scope="module")
def grpo_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo_run")
    raw = tiny_recipe(tiny_model, **{
        "train": {"algorithm": "grpo", "learning_rate": 1e-3, "batch_size": 8,
                  "grpo_rewards": [{"source": "majority"}, {"source": "repetition", "weight": 0.1}],
                  "grpo": {"gradient_checkpointing": False}},
        "generation.max_new_tokens": 16, "tracking.wandb.enabled": False})
    pipeline.run(recipe_from_dict(raw), out)
    return out


def inline_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_has_the_per_round_table_every_figure_and_no_external_resource(dpo_run, tmp_path):
    from PIL import Image

    html_path, md_path = report_run(dpo_run, tmp_path)
    page = html_path.read_text()
    assert re.findall(r'<figure id="fig-(\w+)"', page) == FIGURES
    for png in inline_pngs(page):
        width, height = Image.open(io.BytesIO(png)).size
        assert width > 300 and height > 200
    assert not re.search(r'(src|href)="(?!data:|#)', page), "the report must not load anything from outside"
    summary = read_json(dpo_run / "summary.json")
    md = md_path.read_text()
    for r in summary["rounds"]:
        row = next(line for line in md.splitlines() if line.startswith(f"| {r['round']} | "))
        assert f"| {r['eval']['accuracy_greedy']:.3f} | {r['eval']['accuracy_sampled']:.3f} |" in row
        if r["round"]:
            assert f"| {r['pairs']['kept']} |" in row and f"{r['train']['loss']:.4f}" in row
            assert f"{r['rewards']['likelihood_pairwise_accuracy']:.3f}" in row
    for stem in FIGURES:
        assert f"](report_files/{stem}.png)" in md
        assert (tmp_path / "report_files" / f"{stem}.png").read_bytes() in inline_pngs(page)


def test_report_browses_pairs_with_scores_and_correctness(dpo_run, tmp_path):
    (html_path, _) = report_run(dpo_run, tmp_path, samples=3)
    page = html_path.read_text()
    pairs = read_jsonl(dpo_run / "round_1/pairs.jsonl")
    answers = {g["prompt_id"]: g for g in read_jsonl(dpo_run / "round_1/generations.jsonl")}
    assert f"Round 1: 3 of {len(pairs)} pairs" in page
    rows = re.findall(r'<tr class="sample">(.*?)</tr>', page.split("Round 2:")[0])
    assert len(rows) == 3
    by_chosen = {(p["prompt"], p["chosen"], p["rejected"]): p for p in pairs}
    for row in rows:
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        prompt, chosen, c_score, c_mark, rejected, r_score, r_mark = cells[:7]
        pair = by_chosen[(prompt, chosen, rejected)]
        assert float(c_score) == pytest.approx(pair["chosen_score"], rel=1e-3)
        assert float(r_score) == pytest.approx(pair["rejected_score"], rel=1e-3)
        row_gt = answers[pair["prompt_id"]]
        assert c_mark == ("✓" if is_correct(row_gt, chosen) else "✗")
        assert r_mark == ("✓" if is_correct(row_gt, rejected) else "✗")


def test_grpo_report_shows_rollouts_and_their_reward_terms(grpo_run, tmp_path):
    run = load_run(grpo_run)
    assert run.online == {1} and set(run.scores) == {"majority", "repetition"}
    rollouts = read_jsonl(grpo_run / "round_1/rollouts.jsonl")
    assert len(run.scores["majority"][1]) == len(rollouts)
    html_path, md_path = report_run(grpo_run, tmp_path)
    page = html_path.read_text()
    assert f"Round 1: 12 of {len(rollouts)} rollouts" in page
    assert {"rewards", "training", "cost", "eval"} <= set(re.findall(r'<figure id="fig-(\w+)"', page))
    assert "## Samples" in md_path.read_text()


def test_unfinished_and_foreign_directories_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "manifest.json").write_text('{"stages": {}}')
    assert main(["report", str(tmp_path / "started")]) == 2
    assert capsys.readouterr().err.strip() == (f"selfalign: error: {tmp_path / 'started'}: no round finished yet "
                                               "(no summary.json)")
    assert main(["compare", str(tmp_path), "--output", str(tmp_path / "c")]) == 2
    assert "not a selfalign run directory" in capsys.readouterr().err


def test_report_command_writes_next_to_the_run(dpo_run, capsys):
    assert main(["report", str(dpo_run)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {dpo_run / 'report.html'}, {dpo_run / 'report.md'}"


def test_a_run_that_is_not_writable_is_reported_elsewhere(dpo_run, tmp_path, monkeypatch, capsys):
    from selfalign.report import render

    real = render.atomic_write_text

    def refuse_the_run_dir(path, text):  # a teammate's run on a shared disk (the tests run as root here)
        if Path(path).parent == dpo_run:
            raise PermissionError(13, "Permission denied", str(path))
        real(path, text)

    monkeypatch.setattr(render, "atomic_write_text", refuse_the_run_dir)
    assert main(["report", str(dpo_run)]) == 2
    assert capsys.readouterr().err == (f"selfalign: error: {dpo_run / 'report.html'}: not writable; write the report "
                                       "elsewhere with --output DIR\n")
    assert main(["report", str(dpo_run), "--output", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").exists()


def test_compare_aggregates_runs_with_one_label_and_keeps_others_apart(dpo_run, grpo_run, tmp_path, capsys):
    copy = tmp_path / "dpo_copy"
    shutil.copytree(dpo_run, copy)
    summary = read_json(copy / "summary.json")
    summary["rounds"][1]["eval"]["accuracy_sampled"] = 0.5  # a second "seed"
    (copy / "summary.json").write_text(json.dumps(summary))
    first = read_json(dpo_run / "summary.json")["rounds"][1]["eval"]["accuracy_sampled"]
    out = tmp_path / "cmp"
    assert main(["compare", str(dpo_run), str(copy), str(grpo_run), "--label", "dpo", "--label", "dpo",
                 "--label", "grpo", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    mean, std = (first + 0.5) / 2, abs(first - 0.5) / 2
    assert f"| dpo | {read_json(dpo_run / 'summary.json')['rounds'][0]['eval']['accuracy_sampled']:.3f} ± 0.000 | " \
           f"{mean:.3f} ± {std:.3f} |" in printed
    data = json.loads((out / "compare.json").read_text())
    assert data["dpo"]["runs"] == [str(dpo_run), str(copy)]
    assert data["dpo"]["metrics"]["eval/accuracy_sampled"]["1"] == pytest.approx([mean, std, 2])
    assert "pairs/kept" not in data["grpo"]["metrics"] and "train/rollout_accuracy" in data["grpo"]["metrics"]
    page = (out / "compare.html").read_text()
    assert len(inline_pngs(page)) == len(list((out / "compare_files").glob("*.png"))) >= 2
    with pytest.raises(Exception, match="2 labels for 3 runs"):
        compare_runs([dpo_run, copy, grpo_run], tmp_path / "x", labels=["a", "b"])


def test_compare_default_labels_are_directory_names(dpo_run, grpo_run, tmp_path):
    compare_runs([dpo_run, grpo_run], tmp_path)
    data = json.loads((tmp_path / "compare.json").read_text())
    assert list(data) == [dpo_run.name, grpo_run.name]


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(_chromium() is None and not os.environ.get("CI"),
                    reason="needs Debian's chromium and chromium-driver and selenium (scripts/setup.sh installs them)")
def test_report_renders_in_headless_chromium(dpo_run, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert _chromium() is not None, "CI must run the browser test: chromium, chromium-driver or selenium missing"
    browser, driver_path = _chromium()
    html_path, _ = report_run(dpo_run, tmp_path)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(Path(html_path).resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight,"
            " i.getBoundingClientRect().width])")
        assert len(images) == len(FIGURES)
        for alt, complete, width, height, shown in images:
            assert complete and width > 300 and height > 200 and shown > 100, alt
        shown = [r for r in driver.find_elements("css selector", "tr.sample") if r.is_displayed()]  # round 1, open
        prompt = shown[0].find_element("css selector", "td").text
        driver.find_element("id", "filter").send_keys(prompt)
        visible = [r for r in shown if r.is_displayed()]
        assert 1 <= len(visible) < len(shown) and all(prompt in r.text for r in visible)
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert errors == []
    finally:
        driver.quit()
