"""Ground truth for verifiable tasks: 1.0 if the final answer is right, else 0.0.

An oracle: it is for evaluation and for comparison runs, never a default training reward.

Sandbox prompts are checked by the sandbox's exact verifier. Other rows carry an `answer`; the response's final
answer is extracted (`extract`) and compared with it (`match`):

- `extract: auto` (default): the content of the last `\\boxed{...}`, else the text after the last `A:` (sandbox
  style), else after the last `####` (GSM8K), else the last number; `regex`: the first group of the last match of
  `pattern` (the whole match when it has no group).
- `match: math` (default): math-verify (`math_verify.parse` + `verify`, the library `trl.rewards.accuracy_reward`
  uses), so "72.0" = "72", "1/2" = "\\frac{1}{2}" = "0.5", "10%" = "10", "\\sqrt{2}" = "2^{1/2}"; texts it cannot
  parse (a word, a letter) are compared as strings. `exact`: string equality after stripping (the rule before
  math-verify).

Where TRL differs: `accuracy_reward` lets math-verify extract the answer from the whole response (LaTeX only,
`\\boxed` first); here the extraction is ours (`extract`), and the extracted text and the answer are each wrapped in
`$...$` when they contain LaTeX (a backslash, a brace, `^` or `_`), so math-verify reads them as LaTeX.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Literal

from selfalign import sandbox
from selfalign.config import ConfigError
from selfalign.rewards.base import RewardOutput, RewardSpec, TokenIds

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_BOXED = "\\boxed{"


@dataclass
class VerifierConfig:
    """Ground truth (sandbox, or the prompt rows' answers): an oracle for comparison runs, never a default reward."""

    extract: Literal["auto", "regex"] = "auto"  # how the final answer is read from a response
    pattern: str | None = None  # extract: regex, its first group (or the whole match)
    match: Literal["math", "exact"] = "math"  # math: math-verify equivalence; exact: equal strings


def check_config(cfg: VerifierConfig, where: str = "rewards.verifier") -> None:
    if cfg.extract == "regex":
        if not cfg.pattern:
            raise ConfigError(f"{where}.pattern: extract: regex needs a pattern")
        try:
            re.compile(cfg.pattern)
        except re.error as e:
            raise ConfigError(f"{where}.pattern: not a valid regular expression ({e})") from None
    elif cfg.pattern is not None:
        raise ConfigError(f"{where}.pattern: applies to extract: regex only")


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (nested braces balanced), or None."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(_BOXED)
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip() or None
    return None


def extract_answer(response: str, cfg: VerifierConfig | None = None) -> str | None:
    """The final answer of a response by `cfg.extract` (module docstring); None when there is none."""
    if cfg is not None and cfg.extract == "regex":
        found = list(re.finditer(cfg.pattern, response))
        if not found:
            return None
        m = found[-1]
        return (m.group(1) if m.groups() else m.group(0)).strip() or None
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed
    for marker in ("A:", "####"):
        if marker in response:
            return response.rsplit(marker, 1)[1].strip().replace(",", "") or None
    numbers = _NUMBER.findall(response)
    return numbers[-1].replace(",", "") if numbers else None


def _as_latex(text: str) -> str:
    return f"${text}$" if any(c in text for c in "\\{}^_") and "$" not in text else text


def answers_match(predicted: str | None, gold: str, match: str = "math") -> bool:
    """Whether an extracted answer equals the ground truth: equal strings, or (match `math`) math-verify equivalence
    when both parse."""
    if predicted is None:
        return False
    predicted, gold = predicted.strip(), str(gold).strip()
    if predicted == gold or match == "exact":
        return predicted == gold
    from math_verify import parse, verify

    main_thread = threading.current_thread() is threading.main_thread()  # its timeouts use signal.alarm
    if not main_thread:
        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).setLevel(logging.ERROR)
    timeout = 5 if main_thread else None
    gold_parsed = parse(_as_latex(gold), parsing_timeout=timeout)
    pred_parsed = parse(_as_latex(predicted), parsing_timeout=timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def is_sandbox_row(row: dict) -> bool:
    return row.get("task") == "sandbox" or row["prompt"].startswith("Q:") and row["prompt"].endswith("|S:")


def is_correct(row: dict, response: str, cfg: VerifierConfig | None = None) -> bool:
    """Whether `response` answers prompt row `row` right (sandbox: its exact verifier; else `cfg`'s rule, default
    `VerifierConfig()`)."""
    if is_sandbox_row(row):
        return sandbox.verify(row["prompt"], response)
    if row.get("answer") is None:
        raise ValueError(f"prompt row {row.get('id')!r} has no answer to verify against")
    cfg = cfg or VerifierConfig()
    return answers_match(extract_answer(response, cfg), str(row["answer"]), cfg.match)


class VerifierReward:
    name = "verifier"

    def __init__(self, cfg: VerifierConfig | None = None):
        self.cfg = cfg or VerifierConfig()

    def score(self, rows: list[dict], responses: list[str], token_ids: TokenIds | None = None) -> RewardOutput:
        return RewardOutput([float(is_correct(r, y, self.cfg)) for r, y in zip(rows, responses, strict=True)])


SPEC = RewardSpec(
    "verifier", VerifierConfig, lambda cfg, ctx: VerifierReward(cfg),
    "1 if its final answer is right (ground truth: an oracle for comparison runs)", needs=("answers",),
    check=check_config)
