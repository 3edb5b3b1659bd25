"""Write recipes/data/simple_math/addition.jsonl: single-digit additions in four phrasings, for a small real chat model.

    python scripts/make_simple_math.py

SmolLM2-135M-Instruct solves about 6 % of GSM8K and of two-digit additions, but a single-digit addition about a
third of the time (greedy 0.38, T=0.7 samples 0.25, measured on 32 prompts): a task where its own signals (self-
certainty, likelihood, majority) have right and wrong samples to tell apart. Each of the 81 problems a + b
(a, b = 1..9) appears in four phrasings; the rows are shuffled by problem and the last 21 problems (84 rows) come
last, so a recipe's held-out evaluation prompts (the source's last rows) never share a problem with its training
prompts. Deterministic: the same file every time.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PHRASINGS = ("What is {a} + {b}?", "Compute {a} + {b}.", "Add {a} and {b}.", "What do you get if you add {b} to {a}?")
SUFFIX = ' End with "The answer is N." where N is the number.'
EVAL_PROBLEMS = 21


def rows() -> list[dict]:
    problems = [(a, b) for a in range(1, 10) for b in range(1, 10)]
    random.Random(0).shuffle(problems)
    out = []
    for k, (a, b) in enumerate(problems):
        order = list(range(len(PHRASINGS)))
        random.Random(k).shuffle(order)
        split = "eval" if k >= len(problems) - EVAL_PROBLEMS else "train"
        out += [{"id": f"add-{split}-{a}-{b}-{j}", "prompt": PHRASINGS[j].format(a=a, b=b) + SUFFIX,
                 "answer": str(a + b)} for j in order]
    train = [r for r in out if "-train-" in r["id"]]
    random.Random(1).shuffle(train)  # rounds take consecutive slices: mix problems and phrasings
    return train + [r for r in out if "-eval-" in r["id"]]


def main() -> None:
    path = Path(__file__).resolve().parents[1] / "recipes" / "data" / "simple_math" / "addition.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    print(f"{path}: {len(rows())} rows")


if __name__ == "__main__":
    main()
