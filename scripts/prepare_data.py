"""Make the prompt JSONL files under data/ that the real-scale recipes read (needs network and `datasets`).

    python scripts/prepare_data.py                                   # GSM8K, MATH and OASST files into data/
    python scripts/prepare_data.py --cream-prompts prompt.json       # ... and data/cream_prompts.jsonl
    python scripts/prepare_data.py --only gsm8k --out /tmp/data      # only the GSM8K files

Files (for recipes/llama3-8b-instruct/ and recipes/qwen2.5-7b-instruct/):
- gsm8k_train.jsonl, gsm8k_test.jsonl (`openai/gsm8k`, config `main`): cDPO (train + eval); CREAM, GRPO (eval).
  Rows `{id, prompt, answer}`: the question plus an instruction to end with "The answer is N."; the answer is the
  number after "####" with its commas removed.
- math_train.jsonl (`DigitalLearningGmbH/MATH-lighteval`, train): GRPO (Intuitor). Rows `{id, prompt}`, no answers.
- oasst_prompts.jsonl (`OpenAssistant/oasst1`, train + validation): SRLM, SCIR prompts. English first-turn
  prompts that are not deleted and did not fail review, as `{id, prompt}`.
- oasst_seed_sft.jsonl (same source): CREAM, SCIR seed SFT. Each rank-0 assistant reply to such a prompt (the reply
  passing the same filters), as `{id, messages: [user, assistant]}`.
- cream_prompts.jsonl, only with --cream-prompts: CREAM's prompt set D_U, from `prompt.json` of the Raibows/CREAM
  GitHub release (a JSON object id → chat messages), as `{id, messages}`.

Every file is shuffled with random.Random(0) before it is written: a recipe's round t trains on rows
[(t-1)·n, t·n), so shuffling mixes topics across rounds. Each file's row count is printed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

DATASETS = ("gsm8k", "math", "oasst", "cream")
GSM8K_ID = "openai/gsm8k"
MATH_ID = "DigitalLearningGmbH/MATH-lighteval"
OASST_ID = "OpenAssistant/oasst1"
GSM8K_SUFFIX = '\n\nSolve the problem step by step, then end with "The answer is N." where N is the final number.'
MATH_SUFFIX = "\n\nPlease reason step by step, and put your final answer within \\boxed{}."


class PrepareError(Exception):
    """A failure reported as one line (`prepare_data: error: ...`, exit status 2)."""


def gsm8k_rows(rows: Iterable[Mapping], split: str) -> list[dict]:
    """GSM8K rows {question, answer} → {id, prompt, answer}; the answer is the number after "####", no commas."""
    return [{"id": f"gsm8k-{split}-{i}", "prompt": r["question"] + GSM8K_SUFFIX,
             "answer": r["answer"].split("####")[-1].strip().replace(",", "")} for i, r in enumerate(rows)]


def math_rows(rows: Iterable[Mapping]) -> list[dict]:
    """MATH rows {problem, ...} → {id, prompt} (no answers)."""
    return [{"id": f"math-train-{i}", "prompt": r["problem"] + MATH_SUFFIX} for i, r in enumerate(rows)]


def _oasst_ok(m: Mapping) -> bool:
    return m["lang"] == "en" and not m["deleted"] and m["review_result"] is not False


def oasst_prompt_rows(messages: Iterable[Mapping]) -> list[dict]:
    """OASST messages → {id, prompt} for English, undeleted, not review-failed first-turn (root) prompts."""
    return [{"id": m["message_id"], "prompt": m["text"]} for m in messages
            if m["role"] == "prompter" and m["parent_id"] is None and _oasst_ok(m)]


def oasst_seed_sft_rows(messages: Iterable[Mapping]) -> list[dict]:
    """OASST messages → {id, messages: [user, assistant]}: rank-0 assistant replies to root prompts, both passing
    the same filters as `oasst_prompt_rows`."""
    messages = list(messages)
    by_id = {m["message_id"]: m for m in messages}
    return [
        {"id": m["message_id"], "messages": [{"role": "user", "content": by_id[m["parent_id"]]["text"]},
                                             {"role": "assistant", "content": m["text"]}]}
        for m in messages if m["role"] == "assistant" and m["rank"] == 0 and _oasst_ok(m)
        and m["parent_id"] in by_id and by_id[m["parent_id"]]["parent_id"] is None and _oasst_ok(by_id[m["parent_id"]])]


def cream_rows(mapping: Mapping) -> list[dict]:
    """CREAM's prompt.json (id → chat messages) → {id, messages}."""
    return [{"id": k, "messages": v} for k, v in mapping.items()]


def dump(path: str | Path, rows: Iterable[dict]) -> int:
    """Shuffle the rows with random.Random(0), write them as JSONL, print and return the row count."""
    rows = list(rows)
    random.Random(0).shuffle(rows)  # round t trains on rows [(t-1)·n, t·n): mix topics across rounds
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"{path}: {len(rows)} rows")
    return len(rows)


def read_cream_prompts(path: str | Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise PrepareError(f"--cream-prompts {path}: cannot read ({e.strerror or type(e).__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PrepareError(f"--cream-prompts {path}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise PrepareError(f"--cream-prompts {path}: expected a JSON object (id → chat messages), "
                           f"got {type(data).__name__}")
    return data


def _load(datasets, dataset_id: str, *args, split: str):
    try:
        return datasets.load_dataset(dataset_id, *args, split=split)
    except Exception as e:  # noqa: BLE001 - network, Hub and cache errors come in many types; report one line
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise PrepareError(f"cannot load dataset {dataset_id} (split {split}): "
                           f"{type(e).__name__}{': ' + detail if detail else ''}") from None


def _write(out: Path, name: str, rows: list[dict]) -> None:
    try:
        dump(out / name, rows)
    except OSError as e:
        raise PrepareError(f"cannot write {out / name} ({e.strerror or type(e).__name__})") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prepare_data", description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", default="data", help="output directory (default: data)")
    p.add_argument("--only", action="append", choices=DATASETS,
                   help="make only this dataset's files (repeatable; default: all, cream only with --cream-prompts)")
    p.add_argument("--cream-prompts", metavar="PATH",
                   help="CREAM's prompt.json (Raibows/CREAM release); data/cream_prompts.jsonl is made only with it")
    return p


def _run(args: argparse.Namespace) -> None:
    only = set(args.only or DATASETS)
    cream = None
    if "cream" in only and args.cream_prompts:
        cream = read_cream_prompts(args.cream_prompts)  # before any download: a bad path fails at once
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PrepareError(f"cannot create {out} ({e.strerror or type(e).__name__})") from None
    if only & {"gsm8k", "math", "oasst"}:
        try:
            import datasets
        except ImportError:
            raise PrepareError("needs the datasets package (pip install datasets)") from None
    if "gsm8k" in only:
        for split in ("train", "test"):
            _write(out, f"gsm8k_{split}.jsonl", gsm8k_rows(_load(datasets, GSM8K_ID, "main", split=split), split))
    if "math" in only:
        _write(out, "math_train.jsonl", math_rows(_load(datasets, MATH_ID, split="train")))
    if "oasst" in only:
        msgs = [m for s in ("train", "validation") for m in _load(datasets, OASST_ID, split=s)]
        _write(out, "oasst_prompts.jsonl", oasst_prompt_rows(msgs))
        _write(out, "oasst_seed_sft.jsonl", oasst_seed_sft_rows(msgs))
    if cream is not None:
        _write(out, "cream_prompts.jsonl", cream_rows(cream))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.only and "cream" in args.only and not args.cream_prompts:
        parser.error("--only cream needs --cream-prompts PATH (CREAM's prompt.json)")
    try:
        _run(args)
    except PrepareError as e:
        print(f"prepare_data: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
