"""Seed data: instruction-following and judge-training examples as `{prompt, completion}` rows (seed SFT), and
labelled judgments as `{prompt, response, label}` rows (the judge-training stage, `methods/gencls.py`).

Sources: `sandbox://arith` (correct worked solutions), `sandbox://arith-judge` (the sandbox judge
prompt on correct and planted-error solutions, with the target written judgment; as labelled judgments, the
response and its rubric score), or a JSONL file / HF dataset with `prompt` and `completion` columns (or chat
`messages` ending in an assistant turn), or `prompt`, `response` and `label` columns for labelled judgments.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from selfalign import sandbox
from selfalign.config import ConfigError
from selfalign.data.prompts import parse_sandbox_uri


def _sandbox_examples(uri: str, n: int, seed: int) -> list[dict]:
    name, task = parse_sandbox_uri(uri)
    rows = task.problems(n, split="train", start=10_000_000)  # far from the rounds' prompt slices
    if name == "arith":
        return [{"prompt": r["prompt"], "completion": sandbox.solve(r["prompt"])} for r in rows]
    rng = random.Random(seed)
    out = []
    for r in rows:
        response = sandbox.solve(r["prompt"]) if rng.random() < 0.5 else sandbox.plant_error(r["prompt"], rng)[0]
        out.append({"prompt": sandbox.JUDGE_TEMPLATE.format(prompt=r["prompt"], response=response),
                    "completion": sandbox.judgment(r["prompt"], response)})
    return out


def _sandbox_judge_rows(uri: str, n: int, seed: int) -> list[dict]:
    """`sandbox://arith-judge` as labelled judgments: the same responses (correct or one planted error, half each),
    labelled with the score of their target judgment."""
    name, _ = parse_sandbox_uri(uri)
    if name != "arith-judge":
        raise ConfigError(f"{uri}: labelled judgments come from sandbox://arith-judge, not sandbox://{name}")
    out = []
    for e in _sandbox_examples(uri, n, seed):
        prompt, response = e["prompt"][: -len("|J:")].split("|S:", 1)
        out.append({"prompt": prompt + "|S:", "response": response,
                    "label": str(sandbox.score_from_judgment(e["completion"]))})
    return out


def _raw_rows(source: str) -> list[tuple[str, object]]:
    """(where, row) of every row of a JSONL file or HF dataset; ConfigError naming the file and row."""
    path = Path(source)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise ConfigError(f"{source}: seed SFT file not found")
        raw = []
        try:
            f = open(path, "rb")
        except OSError as e:
            raise ConfigError(f"{source}: cannot read the seed SFT file ({e.strerror})") from None
        with f:
            for lineno, data in enumerate(f, 1):
                try:
                    line = data.decode("utf-8")
                    if line.strip():
                        raw.append((f"{source}: row {lineno}", json.loads(line)))
                except UnicodeDecodeError as e:
                    raise ConfigError(f"{source}: row {lineno}: not UTF-8 text (byte {e.start + 1})") from None
                except (json.JSONDecodeError, RecursionError) as e:
                    reason = getattr(e, "msg", "nested too deeply")
                    raise ConfigError(f"{source}: row {lineno}: invalid JSON ({reason})") from None
    else:
        import datasets

        try:
            ds = datasets.load_from_disk(source) if path.is_dir() else datasets.load_dataset(source, split="train")
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"{source}: cannot load seed SFT data ({type(e).__name__})") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"]
        raw = [(f"{source}: row {i}", r) for i, r in enumerate(ds)]
    return raw


def _file_examples(source: str, n: int) -> list[dict]:
    out = []
    for where, r in _raw_rows(source)[:n]:
        if not isinstance(r, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(r).__name__}")
        messages = r.get("messages")
        if isinstance(r.get("prompt"), str) and isinstance(r.get("completion"), str) and r["prompt"].strip():
            out.append({"prompt": r["prompt"], "completion": r["completion"]})
        elif (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)
              and messages[-1].get("role") == "assistant"):
            *context, answer = r["messages"]
            out.append({"prompt": context, "completion": [answer]})
        else:
            raise ConfigError(f"{where}: a seed SFT row needs string 'prompt' and 'completion' "
                              "(or 'messages' ending with an assistant turn)")
    return out


def load_judge_labels(source: str, n: int, seed: int, where: str = "gencls.data") -> list[dict]:
    """Up to n labelled judgments `{prompt, response, label}` (label a string) from `source`."""
    if source.startswith("sandbox://"):
        return _sandbox_judge_rows(source, n, seed)
    out = []
    for row_where, r in _raw_rows(source)[:n]:
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str | int) and not isinstance(r.get(k), bool)
                                              for k in ("prompt", "response", "label")):
            raise ConfigError(f"{row_where}: a labelled judgment needs 'prompt', 'response' and 'label' ({where})")
        out.append({"prompt": str(r["prompt"]), "response": str(r["response"]), "label": str(r["label"])})
    return out


def load_seed_examples(source: str, n: int, seed: int) -> list[dict]:
    if source.startswith("sandbox://"):
        return _sandbox_examples(source, n, seed)
    return _file_examples(source, n)
