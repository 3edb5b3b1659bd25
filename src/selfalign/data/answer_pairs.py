"""cDPO's grading and pairs (Lin et al. 2025, https://arxiv.org/abs/2411.19943): each sample of a prompt is graded
correct or incorrect, and the pair is a sample of the most frequent correct answer (chosen) against a sample of the
most frequent wrong answer (rejected).

Grading, per prompt:
- `verifier`: ground truth (`rewards.verifier.is_correct`; the sandbox's exact verifier, or the row's answer).
- `majority`: self-consistency, no ground truth: correct = the final answer shared by the most samples, when one
  answer leads strictly; a prompt whose top answers tie (or that has no answer at all) is left ungraded.

A sample without a final answer counts as incorrect, and its answer is the key None (one wrong "answer"). Among
samples with the chosen answer the first is taken, and ties between equally frequent answers go to the answer seen
first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from selfalign.config import ConfigError
from selfalign.rewards.verifier import extract_answer, is_correct


def resolve_grading(grading: str, rows: Sequence[dict]) -> str:
    """`auto` → `verifier` when every prompt row has an answer (or is a sandbox problem), else `majority`."""
    verifiable = all(r.get("answer") is not None for r in rows)
    if grading == "auto":
        return "verifier" if verifiable else "majority"
    if grading == "verifier" and not verifiable:
        missing = next(r for r in rows if r.get("answer") is None)
        raise ConfigError(f"cdpo.grading: verifier needs an answer for every prompt; {missing.get('id')!r} has none "
                          "(use grading: majority or auto)")
    return grading


def grade(row: dict, responses: Sequence[str], grading: str) -> list[bool] | None:
    """Correct / incorrect per sample, or None when `majority` cannot grade the prompt (tied or no answers)."""
    if grading == "verifier":
        return [is_correct(row, y) for y in responses]
    answers = [extract_answer(y) for y in responses]
    top = Counter(a for a in answers if a is not None).most_common(2)
    if not top or (len(top) == 2 and top[0][1] == top[1][1]):
        return None
    return [a == top[0][0] for a in answers]


def frequency_pair(answers: Sequence[str | None], correct: Sequence[bool]) -> tuple[int, int] | None:
    """(index of the first sample with the most frequent correct answer, index of the first sample with the most
    frequent wrong answer), or None when the prompt has no correct or no incorrect sample."""
    right = Counter(a for a, ok in zip(answers, correct, strict=True) if ok)
    wrong = Counter(a for a, ok in zip(answers, correct, strict=True) if not ok)
    if not right or not wrong:
        return None
    best, worst = right.most_common(1)[0][0], wrong.most_common(1)[0][0]
    chosen = next(i for i, (a, ok) in enumerate(zip(answers, correct, strict=True)) if ok and a == best)
    rejected = next(i for i, (a, ok) in enumerate(zip(answers, correct, strict=True)) if not ok and a == worst)
    return chosen, rejected


def answer_frequency_pairs(groups: Sequence[dict], grading: str) -> tuple[list[dict], dict, dict[str, list[bool]]]:
    """Pairs, statistics, and the grades of every graded prompt's samples ({prompt id: [correct, ...]}).

    Each group: {"row": prompt row (id, prompt, prompt_text, answer), "samples": [{"response", ...}, ...]}.
    """
    grading = resolve_grading(grading, [g["row"] for g in groups])
    pairs, grades, ungraded = [], {}, 0
    for g in groups:
        row, responses = g["row"], [s["response"] for s in g["samples"]]
        correct = grade(row, responses, grading)
        if correct is None:
            ungraded += 1
            continue
        grades[row["id"]] = correct
        answers = [extract_answer(y) for y in responses]
        pair = frequency_pair(answers, correct)
        if pair is None:
            continue
        w, lo = pair
        pairs.append({
            "prompt_id": row["id"], "prompt": row["prompt_text"],
            "chosen": responses[w], "rejected": responses[lo], "chosen_sample": w, "rejected_sample": lo,
            "chosen_answer": answers[w], "rejected_answer": answers[lo],
            "chosen_count": sum(a == answers[w] and ok for a, ok in zip(answers, correct, strict=True)),
            "rejected_count": sum(a == answers[lo] and not ok for a, ok in zip(answers, correct, strict=True)),
        })
    flat = [ok for c in grades.values() for ok in c]
    info = {"grading": grading, "kept": len(pairs), "dropped_one_sided": len(grades) - len(pairs),
            "ungraded_prompts": ungraded, "graded_correct": sum(flat) / len(flat) if flat else None}
    return pairs, info, grades
