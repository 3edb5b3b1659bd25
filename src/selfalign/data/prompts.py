"""Prompt sources: `sandbox://arith?...`, JSONL files, and Hugging Face datasets.

Each source yields rows `{"id", "prompt", "messages"?, "answer"?}`. `prompt` is the raw user text;
`render_prompt` turns it into the model's input (its chat template when it has one). A malformed
row names its file and row number; `on_bad_row` chooses between failing and skipping with a count.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

from selfalign.config import ConfigError
from selfalign.sandbox.task import ArithTask

log = logging.getLogger(__name__)


@dataclass
class PromptSet:
    rows: list[dict]
    skipped: int = 0
    verifier: str | None = None  # "sandbox" when every row is checkable by the sandbox verifier


def parse_sandbox_uri(uri: str) -> tuple[str, ArithTask]:
    """`sandbox://arith?terms=3&digits=2&seed=0` → ("arith", ArithTask(...))."""
    parsed = urlparse(uri)
    name = parsed.netloc or parsed.path.lstrip("/")
    if name not in ("arith", "arith-judge"):
        raise ConfigError(f"{uri}: unknown sandbox task {name!r}; available: arith, arith-judge")
    params = dict(parse_qsl(parsed.query))
    kwargs = {}
    for key, value in params.items():
        if key not in ("terms", "digits", "seed"):
            raise ConfigError(f"{uri}: unknown sandbox parameter {key!r}; allowed: terms, digits, seed")
        try:
            kwargs[key] = int(value)
        except ValueError:
            raise ConfigError(f"{uri}: sandbox parameter {key} must be an integer, got {value!r}") from None
    if kwargs.get("terms", 3) < 2 or kwargs.get("digits", 2) < 1:
        raise ConfigError(f"{uri}: need terms >= 2 and digits >= 1")
    return name, ArithTask(**kwargs)


def _validate_row(raw: object, where: str, field: str, answer_field: str) -> dict:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    row: dict = {}
    if field in raw:
        prompt = raw[field]
        if not isinstance(prompt, str):
            raise ValueError(f"{where}: field {field!r} must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError(f"{where}: field {field!r} is empty")
        row["prompt"] = prompt
    elif "messages" in raw:
        messages = raw["messages"]
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str)
                           for m in messages)):
            raise ValueError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
        # The prompt is the conversation up to the last user turn; a trailing assistant turn is dropped.
        while messages and messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if not messages or not messages[-1]["content"].strip():
            raise ValueError(f"{where}: 'messages' has no non-empty user turn")
        row["messages"] = messages
        row["prompt"] = messages[-1]["content"]
    else:
        raise ValueError(f"{where}: missing field {field!r} (or chat 'messages')")
    if answer_field in raw and raw[answer_field] is not None:
        answer = raw[answer_field]
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise ValueError(f"{where}: field {answer_field!r} must be a string or a number, got "
                             f"{type(answer).__name__}")
        row["answer"] = str(answer)
    if "id" in raw:
        if isinstance(raw["id"], bool) or not isinstance(raw["id"], str | int):
            raise ValueError(f"{where}: field 'id' must be a string or an integer, got {type(raw['id']).__name__}")
        row["id"] = str(raw["id"])
    return row


def _collect(items, field: str, answer_field: str, on_bad_row: str) -> PromptSet:
    """`items` yields (where, raw row or the ValueError that reading it raised)."""
    rows, skipped, seen = [], 0, {}
    for i, (where, raw) in enumerate(items):
        try:
            if isinstance(raw, ValueError):
                raise raw
            row = _validate_row(raw, where, field, answer_field)
            row.setdefault("id", str(i))
            if row["id"] in seen:  # the rounds group samples, pairs and evaluations by prompt id
                raise ValueError(f"{where}: id {row['id']!r} repeats the id of {seen[row['id']]}")
        except ValueError as e:
            if on_bad_row == "fail":
                raise ConfigError(f"{e} (set prompts.on_bad_row: skip to skip bad rows)") from None
            skipped += 1
            log.warning("skipping bad prompt row: %s", e)
            continue
        seen[row["id"]] = where.rsplit(": ", 1)[-1]
        rows.append(row)
    if skipped:
        log.warning("skipped %d malformed prompt rows", skipped)
    return PromptSet(rows, skipped)


def _read_jsonl(path: Path):
    """(where, row or the ValueError of a line that is not a JSON object's text) per non-blank line."""
    try:
        f = open(path, "rb")  # decoded line by line, so that one bad line names its row
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the prompt file ({e.strerror})") from None
    with f:
        for lineno, data in enumerate(f, 1):
            where = f"{path}: row {lineno}"
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as e:
                yield where, ValueError(f"{where}: not UTF-8 text (byte {e.start + 1} of the line)")
                continue
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                yield where, ValueError(f"{where}: invalid JSON ({e.msg}); a prompt file has one JSON object per "
                                        "line")
            except RecursionError:
                yield where, ValueError(f"{where}: invalid JSON (nested too deeply)")


def load_prompts(source: str, *, split: str = "train", field: str = "prompt", answer_field: str = "answer",
                 on_bad_row: str = "fail", sandbox_split: str = "train", start: int = 0,
                 limit: int | None = None) -> PromptSet:
    """Load rows [start, start+limit) of a prompt source."""
    if source.startswith("sandbox://"):
        _, task = parse_sandbox_uri(source)
        if limit is None:
            raise ConfigError(f"{source}: the sandbox source is unbounded; a row count is needed")
        return PromptSet(task.problems(limit, split=sandbox_split, start=start), 0, verifier="sandbox")
    path = Path(source)
    if path.suffix in (".jsonl", ".json"):
        if not path.is_file():
            raise ConfigError(f"{source}: prompt file not found")
        prompts = _collect(_read_jsonl(path), field, answer_field, on_bad_row)
    else:
        prompts = _load_hf(source, split, field, answer_field, on_bad_row)
    return _slice(prompts, start, limit, source)


def _slice(ps: PromptSet, start: int, limit: int | None, source: str) -> PromptSet:
    end = len(ps.rows) if limit is None else start + limit
    if end > len(ps.rows):
        raise ConfigError(f"{source}: needs {end} prompt rows but has only {len(ps.rows)} valid rows")
    return PromptSet(ps.rows[start:end], ps.skipped, ps.verifier)


def _load_hf(source: str, split: str, field: str, answer_field: str, on_bad_row: str) -> PromptSet:
    import datasets

    path = Path(source)
    try:
        if path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise ConfigError(f"{source}: no split {split!r}; available: {', '.join(ds)}")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(source, split=split)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types; the user gets one line
        raise ConfigError(f"{source}: cannot load prompts as a JSONL file or HF dataset ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return _collect(((f"{source} [{split}]: row {i}", r) for i, r in enumerate(ds)), field, answer_field,
                    on_bad_row)


def render_prompt(tokenizer, row: dict, use_chat_template: str = "auto") -> str:
    """The model input for a row: the chat template when the tokenizer has one, else the raw prompt. A conversation
    of several turns needs the template (without it only the last user turn would be left): ConfigError."""
    if use_chat_template == "auto" and getattr(tokenizer, "chat_template", None):
        messages = row.get("messages") or [{"role": "user", "content": row["prompt"]}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if use_chat_template == "auto" and len(row.get("messages") or []) > 1:
        raise ConfigError(f"prompt {row['id']!r}: {len(row['messages'])} chat messages, but the model's tokenizer has "
                          "no chat template, so only the last user turn would reach the model; give the tokenizer a "
                          "chat_template, or set prompts.chat_template: never to use that turn alone")
    return row["prompt"]


def _rendered(rows: list[dict], tokenizer, chat_template: str) -> list[dict]:
    for r in rows:
        r["prompt_text"] = render_prompt(tokenizer, r, chat_template)
    return rows


def check_prompts(cfg, rounds: int, tokenizer, context: int | None) -> None:
    """Every prompt the run's rounds and evaluations will read (`prompts` section `cfg`), read and rendered before
    any stage runs, so that a bad row, too few rows, or a prompt longer than the model's `context` (tokens) is one
    line before anything is written. A sandbox source is generated, and always valid."""
    sets = [(cfg.eval_source or cfg.source, eval_rows(cfg, rounds, tokenizer))]
    if rounds > 0 and not cfg.source.startswith("sandbox://"):
        ps = load_prompts(cfg.source, split=cfg.split, field=cfg.field, answer_field=cfg.answer_field,
                          on_bad_row=cfg.on_bad_row, limit=rounds * cfg.train_per_round)
        sets.append((cfg.source, _rendered(ps.rows, tokenizer, cfg.chat_template)))
    for source, rows in sets:
        for r in rows if context is not None else ():
            text = r["prompt_text"]
            if len(text) > 64 * context:  # no tokenizer packs 64 characters into one token: no need to count
                raise ConfigError(f"{source}: prompt {r['id']!r} is {len(text):,} characters long, more than the "
                                  f"model's context of {context:,} tokens holds; shorten or remove it")
            n = len(tokenizer(text)["input_ids"])
            if n >= context:
                raise ConfigError(f"{source}: prompt {r['id']!r} is {n:,} tokens long; the model's context is "
                                  f"{context:,} tokens; shorten or remove it")


def train_rows(cfg, t: int, tokenizer) -> list[dict]:
    """Round t's training prompts (`prompts` section `cfg`): rows [(t−1)·n, t·n) of the source, n =
    train_per_round, with `prompt_text` rendered for `tokenizer`."""
    ps = load_prompts(cfg.source, split=cfg.split, field=cfg.field, answer_field=cfg.answer_field,
                      on_bad_row=cfg.on_bad_row, start=(t - 1) * cfg.train_per_round, limit=cfg.train_per_round)
    return _rendered(ps.rows, tokenizer, cfg.chat_template)


def eval_rows(cfg, rounds: int, tokenizer) -> list[dict]:
    """The held-out prompts of every round's evaluation: `eval_source`, or the sandbox's eval split, or the last
    `eval_prompts` rows of the source, which the `rounds` training slices never reach."""
    if cfg.eval_source is None and cfg.source.startswith("sandbox://"):
        ps = load_prompts(cfg.source, sandbox_split="eval", limit=cfg.eval_prompts)
    elif cfg.eval_source is None:
        ps = load_prompts(cfg.source, split=cfg.split, field=cfg.field, answer_field=cfg.answer_field,
                          on_bad_row=cfg.on_bad_row)
        if len(ps.rows) < cfg.eval_prompts + rounds * cfg.train_per_round:
            raise ConfigError(f"prompts.source: {cfg.source}: {len(ps.rows)} valid rows cannot hold {rounds} rounds × "
                              f"{cfg.train_per_round} train prompts plus {cfg.eval_prompts} held-out eval prompts; "
                              "set prompts.eval_source or lower the counts")
        ps.rows = ps.rows[len(ps.rows) - cfg.eval_prompts:]
    else:
        ps = load_prompts(cfg.eval_source, split=cfg.split, field=cfg.field, answer_field=cfg.answer_field,
                          on_bad_row=cfg.on_bad_row, sandbox_split="eval", limit=cfg.eval_prompts)
    return _rendered(ps.rows, tokenizer, cfg.chat_template)
