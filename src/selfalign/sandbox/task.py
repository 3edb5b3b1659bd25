"""The sandbox task: chained sums written step by step, with an exact verifier and a rubric judge.

A problem is a list of ``terms`` random ``digits``-digit numbers. Its prompt and its unique correct
solution are::

    prompt    Q:47+38+15|S:
    solution  47+38=85;85+15=100;A:100

The model continues the prompt with the solution and then EOS. Everything here is pure Python
(no torch), deterministic, and cheap.

Correctness
    ``verify(prompt, response)`` is True iff the final answer (the integer after the last ``A:``)
    equals the true sum. The intermediate steps are *not* required to be right: accuracy measures
    the answer, as on GSM8K-style tasks. ``first_error_position`` and the judge rubric do look at
    the steps.

Judge formats
    ``JUDGE_TEMPLATE`` (``"{prompt}{response}|J:"``) is followed by a written check and a score,
    e.g. for a correct response ``47+38=85:85o;85+15=100:100o;A:100:100o|Score:5`` and for a
    response with a carried error ``47+38=86;86+15=101;A:101``::

        47+38=86:85n;86+15=101:101o;A:101:101o|Score:2

    One item per step: the response's step copied (``a+b=c``), then ``:`` and the result the step
    should have (the first operand of step 1 is the first term, of step i>1 the response's own
    result of step i-1; the second operand is the next term; ``:<a*+b*>``), then ``o`` if the
    response's step is exactly right, ``n`` otherwise. The last item copies the answer and checks
    it against the response's last step result: ``A:<answer>:<last result>`` and ``o``/``n``.
    A response that is not well-formed gets the check ``?``. Then ``|Score:k``.

    (Why this layout: the claimed and the re-computed value stand side by side, so deciding
    ``o``/``n`` is a local comparison; copying the response's step is what a small model does
    best. In a layout that writes only the re-computed step, ``a+b=<sum>o``, a small model learns
    the re-computation but not the comparison with a value far back in the response, and marks
    everything ``o``.)

    ``JUDGE_EXPECTED_TEMPLATE`` (``"{prompt}{response}|Score:"``) asks for the bare score digit.

Rubric (additive, in the spirit of Self-Rewarding LMs' 5-point additive prompt)
    Start at 1 point, then add

    * +1 if the response is well-formed and its first step is right,
    * +1 if it is well-formed and all its steps are right (in the sense of the written check),
    * +1 if it is well-formed and its answer equals its last step's result,
    * +1 if its final answer is correct (``verify``).

    A score of 5 is given iff the response is exactly the correct solution; every other response
    scores strictly lower, and the score grows with how much is right. A well-formed response with
    one carried error scores 2 (error in the first step) or 3 (in a later step); a malformed one
    scores 1 (2 if its answer is nevertheless correct).

Planted errors
    ``plant_error`` changes the result of one step the way a model's arithmetic slip does (a carry
    error of +-10, an off-by-one or -two in the units, or one digit replaced) and carries the wrong
    value on consistently through the later steps and the answer.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

__all__ = [
    "ArithTask",
    "JUDGE_TEMPLATE",
    "JUDGE_EXPECTED_TEMPLATE",
    "SCORE_RE",
    "EOS",
    "format_prompt",
    "parse_prompt",
    "solve",
    "parse_answer",
    "verify",
    "first_error_position",
    "plant_error",
    "judgment",
    "score",
    "score_from_judgment",
]

JUDGE_TEMPLATE = "{prompt}{response}|J:"
JUDGE_EXPECTED_TEMPLATE = "{prompt}{response}|Score:"
#: Parses the score out of a judgment (written or bare).
SCORE_RE = re.compile(r"Score:\s*([1-5])")
#: The end-of-sequence text used in the corpus (the tokenizer's ``eos_token``).
EOS = "</s>"

_PROMPT_RE = re.compile(r"^Q:(\d+(?:\+\d+)+)\|S:$")
_STEP_RE = re.compile(r"^(\d+)\+(\d+)=(\d+)$")
_ANSWER_RE = re.compile(r"^A:(\d+)$")
_FINAL_ANSWER_RE = re.compile(r"A:(\d+)\s*$")

#: How many eval problems the train split excludes (the eval split's first ones).
EVAL_RESERVED = 4096


# ----------------------------------------------------------------------------------------------
# problems


@dataclass(frozen=True)
class ArithTask:
    """A family of chained-sum problems; rows are deterministic functions of (seed, split, index)."""

    terms: int = 3
    digits: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.terms < 2:
            raise ValueError(f"ArithTask.terms must be >= 2, got {self.terms}")
        if self.digits < 1:
            raise ValueError(f"ArithTask.digits must be >= 1, got {self.digits}")

    # number of distinct problems
    @property
    def space(self) -> int:
        lo, hi = self._range()
        return (hi - lo + 1) ** self.terms

    def _range(self) -> tuple[int, int]:
        lo = 10 ** (self.digits - 1) if self.digits > 1 else 0
        return lo, 10**self.digits - 1

    def _reserved(self) -> int:
        # A tiny problem space cannot spare 4096 problems for eval; keep at most a quarter.
        return min(EVAL_RESERVED, self.space // 4)

    def _draw(self, key: str) -> tuple[int, ...]:
        rng = random.Random(key)  # str seeds are hashed with sha512: stable across runs
        lo, hi = self._range()
        return tuple(rng.randint(lo, hi) for _ in range(self.terms))

    def terms_at(self, index: int, split: str = "train") -> tuple[int, ...]:
        """The operands of row ``index`` of ``split`` (any split name; train excludes eval)."""
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}")
        base = f"selfalign-sandbox:{self.seed}:{self.terms}:{self.digits}:{split}:{index}"
        nums = self._draw(base)
        if split == "eval":
            return nums
        excluded = _eval_set(self)
        attempt = 0
        while nums in excluded:
            attempt += 1
            nums = self._draw(f"{base}:{attempt}")
        return nums

    def problems(self, n: int, split: str = "train", start: int = 0) -> list[dict]:
        """Rows ``[start, start + n)`` of the infinite deterministic stream of ``split``.

        Each row is ``{"id": "<split>-<seed>-<index>", "prompt": "Q:..|S:", "answer": "<sum>"}``.
        The train split never contains one of the first 4096 eval problems.
        """
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        if n < 0 or start < 0:
            raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
        rows = []
        for i in range(start, start + n):
            nums = self.terms_at(i, split)
            rows.append(
                {
                    "id": f"{split}-t{self.terms}d{self.digits}s{self.seed}-{i}",
                    "prompt": format_prompt(nums),
                    "answer": str(sum(nums)),
                }
            )
        return rows


@functools.lru_cache(maxsize=16)
def _eval_set(task: ArithTask) -> frozenset[tuple[int, ...]]:
    return frozenset(task.terms_at(i, "eval") for i in range(task._reserved()))


def format_prompt(nums: tuple[int, ...] | list[int]) -> str:
    return "Q:" + "+".join(str(x) for x in nums) + "|S:"


def parse_prompt(prompt: str) -> list[int]:
    """The operands of a prompt ``Q:a+b+c|S:``; ValueError if it is not one."""
    m = _PROMPT_RE.match(prompt.strip())
    if not m:
        raise ValueError(f"not a sandbox prompt: {prompt!r}")
    return [int(x) for x in m.group(1).split("+")]


# ----------------------------------------------------------------------------------------------
# solutions and verification


def _steps(nums: list[int]) -> list[tuple[int, int, int]]:
    steps, acc = [], nums[0]
    for b in nums[1:]:
        steps.append((acc, b, acc + b))
        acc += b
    return steps


def _render(steps: list[tuple[int, int, int]], answer: int) -> str:
    return ";".join(f"{a}+{b}={c}" for a, b, c in steps) + f";A:{answer}"


def solve(prompt: str) -> str:
    """The correct solution of ``prompt`` (without EOS), e.g. ``47+38=85;85+15=100;A:100``."""
    nums = parse_prompt(prompt)
    return _render(_steps(nums), sum(nums))


def _clean(response: str) -> str:
    r = response.strip()
    if r.endswith(EOS):
        r = r[: -len(EOS)].rstrip()
    return r


def parse_answer(response: str) -> str | None:
    """The integer after the last ``A:`` if the response ends with ``A:<digits>`` (a trailing EOS
    or whitespace is ignored); None otherwise."""
    m = _FINAL_ANSWER_RE.search(_clean(response))
    if not m:
        return None
    # the match must be the last "A:" of the text
    text = _clean(response)
    if text.rfind("A:") != m.start():
        return None
    return m.group(1)


def verify(prompt: str, response: str) -> bool:
    """True iff the response's final answer equals the true sum (steps are not checked)."""
    ans = parse_answer(response)
    return ans is not None and int(ans) == sum(parse_prompt(prompt))


def first_error_position(prompt: str, response: str) -> int | None:
    """Index in ``response`` of the first character that departs from the correct solution (the
    critical token; the solution is unique), or None if the response is the correct solution.

    A response that is a strict prefix of the solution (truncated) errs at ``len(response)``; one
    that continues past it (other than a trailing EOS / whitespace) errs where the extra text
    starts."""
    target = solve(prompt)
    body = _clean(response)
    if body == target:
        return None
    for i, (x, y) in enumerate(zip(response, target, strict=False)):
        if x != y:
            return i
    return min(len(response), len(target))


_ERROR_KINDS = ("carry", "units", "digit")


def _perturb(value: int, rng: random.Random) -> int:
    """A plausible wrong result for ``value`` (positive, same kind of number)."""
    for _ in range(100):
        kind = rng.choices(_ERROR_KINDS, weights=(0.4, 0.3, 0.3))[0]
        if kind == "carry":
            new = value + rng.choice((-10, 10))
        elif kind == "units":
            new = value + rng.choice((-2, -1, 1, 2))
        else:
            s = list(str(value))
            pos = rng.randrange(len(s))
            choices = [d for d in "0123456789" if d != s[pos] and not (pos == 0 and d == "0")]
            s[pos] = rng.choice(choices)
            new = int("".join(s))
        if new > 0 and new != value:
            return new
    return value + 1


def _with_error(nums: list[int], step: int, wrong: int) -> str:
    steps, acc = [], nums[0]
    for i, b in enumerate(nums[1:]):
        c = wrong if i == step else acc + b
        steps.append((acc, b, c))
        acc = c
    return _render(steps, acc)


def plant_error(prompt: str, rng: random.Random | int | None = None) -> tuple[str, int]:
    """A solution with exactly one arithmetic error in one step's result, carried on consistently
    through the later steps and the answer, and the position of its first wrong character."""
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    nums = parse_prompt(prompt)
    step = rng.randrange(len(nums) - 1)
    true_c = sum(nums[: step + 2])
    response = _with_error(nums, step, _perturb(true_c, rng))
    pos = first_error_position(prompt, response)
    assert pos is not None
    return response, pos


# ----------------------------------------------------------------------------------------------
# judge


def _parse_response(response: str, n_steps: int) -> tuple[list[tuple[int, int, int]], int] | None:
    """(steps, answer) if the response is well-formed with ``n_steps`` steps, else None."""
    parts = _clean(response).split(";")
    if len(parts) != n_steps + 1:
        return None
    steps = []
    for p in parts[:-1]:
        m = _STEP_RE.match(p)
        if not m:
            return None
        steps.append((int(m.group(1)), int(m.group(2)), int(m.group(3))))
    m = _ANSWER_RE.match(parts[-1])
    if not m:
        return None
    return steps, int(m.group(1))


def _check(prompt: str, response: str) -> tuple[str, list[bool] | None, bool]:
    """(written check, marks [steps..., answer] or None if malformed, answer correct)."""
    nums = parse_prompt(prompt)
    correct = verify(prompt, response)
    parsed = _parse_response(response, len(nums) - 1)
    if parsed is None:
        return "?", None, correct
    steps, answer = parsed
    items, marks = [], []
    prev = nums[0]
    for (a, b, c), term in zip(steps, nums[1:], strict=True):
        ok = (a, b, c) == (prev, term, prev + term)
        items.append(f"{a}+{b}={c}:{prev + term}{'o' if ok else 'n'}")
        marks.append(ok)
        prev = c
    ok = answer == prev
    items.append(f"A:{answer}:{prev}{'o' if ok else 'n'}")
    marks.append(ok)
    return ";".join(items), marks, correct


def _score(marks: list[bool] | None, correct: bool) -> int:
    if marks is None:
        return 1 + int(correct)
    steps, answer_ok = marks[:-1], marks[-1]
    return 1 + int(steps[0]) + int(all(steps)) + int(answer_ok) + int(correct)


def score(prompt: str, response: str) -> int:
    """The 1-5 rubric score of ``response`` (see the module docstring)."""
    _, marks, correct = _check(prompt, response)
    return _score(marks, correct)


def judgment(prompt: str, response: str) -> str:
    """The correct continuation of ``JUDGE_TEMPLATE``: written check, then ``|Score:k``."""
    check, marks, correct = _check(prompt, response)
    return f"{check}|Score:{_score(marks, correct)}"


def score_from_judgment(text: str) -> int | None:
    """The score parsed from a generated judgment (``Score:\\s*([1-5])``), None if absent."""
    m = SCORE_RE.search(text)
    return int(m.group(1)) if m else None


def noisy_judgment(prompt: str, response: str, rng: random.Random) -> str:
    """A judgment with one check mark flipped (o<->n) and the score recomputed from the marks:
    the label noise of a judge that mis-checks one item."""
    check, marks, correct = _check(prompt, response)
    if marks is None:
        return f"{check}|Score:{rng.choice([k for k in range(1, 6) if k != _score(marks, correct)])}"
    i = rng.randrange(len(marks))
    marks = list(marks)
    marks[i] = not marks[i]
    items = check.split(";")
    items[i] = items[i][:-1] + ("o" if marks[i] else "n")
    # with flipped marks the judge believes the answer correct iff all marks are o
    return ";".join(items) + f"|Score:{_score(marks, all(marks))}"
