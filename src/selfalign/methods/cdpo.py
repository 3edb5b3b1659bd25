"""cDPO, "Critical Tokens Matter" (Lin et al., ICML 2025, https://arxiv.org/abs/2411.19943; public code), section
`cdpo`.

Each sample of a prompt is graded correct or incorrect (`grading`), and the pair is a sample of the most frequent
correct answer (chosen) against a sample of the most frequent wrong answer (rejected). A positive and a negative
model, trained on the round's correct and incorrect samples, score every token of each rejected response,
s_t = softmax((1 + β)·z_pos − β·z_neg)[y_t] (`rewards.contrastive.critical_token_scores`), and token-weighted DPO
(`trainers/token_dpo.py`) weighs a rejected token by 1 − s_t and a chosen one by 1.

Grading, per prompt:
- `verifier`: ground truth (`rewards.verifier.is_correct`; the sandbox's exact verifier, or the row's answer).
- `majority`: self-consistency, no ground truth: correct = the final answer shared by the most samples, when one
  answer leads strictly; a prompt whose top answers tie (or that has no answer at all) is left ungraded.
- `auto`: verifier when every prompt has an answer, else majority.
A sample without a final answer counts as incorrect, and its answer is the key None (one wrong "answer"). Among
samples with the chosen answer the first is taken, and ties between equally frequent answers go to the answer seen
first.

One copy of the base weights: the positive and the negative model are two LoRA adapters, `positive` and `negative`,
on the round's starting model (peft multi-adapter, switched with `set_adapter`); the DPO policy is another adapter on
a base of its own stage, and its reference is that base with the adapter disabled (`scripts/adapter_memory.py`
measures what this saves). Resumable: each adapter is saved to `round_t/cdpo/<name>/` as soon as it is trained
(moved into place whole) and loaded, not retrained, by a resumed run; the scores are written in chunks.
"""

from __future__ import annotations

import gc
import shutil
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from selfalign import distributed
from selfalign.artifacts import raise_write_error, read_json, replace_dir, run_in_chunks, write_json
from selfalign.config import ConfigError, LoraOptions, SeedSFTConfig, opt
from selfalign.methods.base import Method
from selfalign.rewards.contrastive import critical_token_scores
from selfalign.rewards.verifier import extract_answer, is_correct
from selfalign.scoring import preference_token_ids

POSITIVE, NEGATIVE = "positive", "negative"


@dataclass
class ContrastAdaptersConfig:
    """cDPO's positive and negative models: LoRA adapters on the round's starting model, trained by SFT (loss on the
    completion only) on its correct and on its incorrect samples. Paper: r 8, lr 3e-4, 1 epoch."""

    lora: LoraOptions = field(default_factory=lambda: LoraOptions(r=8, alpha=16))
    learning_rate: float = opt(3e-4, lo=0.0, lo_open=True)
    epochs: float = opt(1.0, lo=0.0, lo_open=True)
    batch_size: int = opt(16, lo=1)


@dataclass
class CDPOConfig:
    """cDPO: graded samples, answer-frequency pairs, positive / negative adapters, token weights 1 − s_t on the
    rejected tokens (module docstring)."""

    grading: Literal["auto", "verifier", "majority"] = "auto"
    adapters: ContrastAdaptersConfig = field(default_factory=ContrastAdaptersConfig)
    beta: float = opt(1.0, lo=0.0)  # contrast strength β of the critical-token score
    reduction: Literal["sum", "mean"] = "sum"  # token-weighted margin: weighted sums, or each divided by its length
    batch_size: int = opt(8, lo=1)  # scoring passes; each holds two (batch, length, vocab) float32 logits


# ---------------------------------------------------------------------------------------------
# grading and pairs


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


# ---------------------------------------------------------------------------------------------
# the positive and negative adapters, and the critical-token weights


def contrast_examples(groups: dict[str, dict], grades: dict[str, list[bool]]) -> tuple[list[dict], list[dict]]:
    """SFT rows (prompt, completion) of the graded samples: (correct ones, incorrect ones)."""
    positive, negative = [], []
    for pid, correct in grades.items():
        grp = groups[pid]
        for sample, ok in zip(grp["samples"], correct, strict=True):
            (positive if ok else negative).append({"prompt": grp["row"]["prompt_text"],
                                                   "completion": sample["response"]})
    return positive, negative


def _add_adapter(model, name: str, cfg: ContrastAdaptersConfig):
    from peft import PeftModel, get_peft_model

    from selfalign.trainers.dpo import lora_config

    if isinstance(model, PeftModel):
        model.add_adapter(name, lora_config(cfg.lora))
        model.set_adapter(name)  # only this adapter is trainable
        return model
    return get_peft_model(model, lora_config(cfg.lora), adapter_name=name)


def _load_adapter(model, name: str, path: Path):
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(str(path), adapter_name=name)
        return model
    return PeftModel.from_pretrained(model, str(path), adapter_name=name)


def contrast_model(base, tokenizer, positive: Sequence[dict], negative: Sequence[dict], cfg: CDPOConfig,
                   out_dir: Path, seed: int):
    """`base` with the adapters `positive` and `negative` (a `PeftModel` in eval mode) and their training statistics.

    An adapter already saved under `out_dir/<name>/` is loaded; otherwise it is trained (TRL `SFTTrainer`, loss on
    the completion only) on its examples and saved there.
    """
    from selfalign.trainers.sft import train_sft

    model, info = base, {}
    sft = SeedSFTConfig(learning_rate=cfg.adapters.learning_rate, epochs=cfg.adapters.epochs,
                        batch_size=cfg.adapters.batch_size)
    for name, examples in ((POSITIVE, positive), (NEGATIVE, negative)):
        path = out_dir / name
        distributed.barrier()  # every process sees the same saved adapters
        if path.exists():
            model = _load_adapter(model, name, path)
        else:  # every process trains (TRL distributes it), the main one saves
            model = _add_adapter(model, name, cfg.adapters)
            trainer = train_sft(model, tokenizer, list(examples), sft, out_dir / f".trainer_{name}", seed,
                                lr_key="cdpo.adapters.learning_rate")
            losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            if distributed.is_main():
                tmp = out_dir / f".{name}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                try:
                    model.save_pretrained(str(tmp), selected_adapters=[name])  # a named adapter lands in tmp/<name>/
                    write_json(tmp / name / "train_stats.json", {"examples": len(examples), "steps": len(losses),
                                                                 "loss": statistics.fmean(losses) if losses else None})
                    replace_dir(tmp / name, path)
                except OSError as e:
                    raise_write_error(path, e)
                    raise
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                shutil.rmtree(out_dir / f".trainer_{name}", ignore_errors=True)
            distributed.barrier()
            del trainer
        stats = read_json(path / "train_stats.json")
        info[f"{name}_examples"], info[f"{name}_loss"] = stats["examples"], stats["loss"]
    model.eval()
    return model, info


@torch.no_grad()
def rejected_token_scores(model, tokenizer, pairs: Sequence[dict], beta: float = 1.0,
                          batch_size: int = 8) -> list[list[float]]:
    """s_t = softmax((1 + β)·z_pos − β·z_neg)[y_t] for every token of each pair's rejected response, as TRL tokenizes
    it (`preference_token_ids`, EOS included); `model` carries the adapters `positive` and `negative`."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id or 0
    seqs = []
    for p in pairs:
        ids = preference_token_ids(tokenizer, {"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]})
        seqs.append((ids["prompt_ids"], ids["rejected_ids"]))
    out: list[list[float]] = []
    for start in range(0, len(seqs), batch_size):
        batch = seqs[start : start + batch_size]
        width = max(len(x) + len(y) for x, y in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (x, y) in enumerate(batch):  # right padding: positions are those of an unpadded pass
            input_ids[r, : len(x) + len(y)] = torch.tensor(x + y)
            attention[r, : len(x) + len(y)] = 1
        logits = {}
        for name in (POSITIVE, NEGATIVE):
            model.set_adapter(name)
            logits[name] = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        for r, (x, y) in enumerate(batch):
            at = slice(len(x) - 1, len(x) - 1 + len(y))  # the logits that predict the response tokens
            s = critical_token_scores(logits[POSITIVE][r, at][None], logits[NEGATIVE][r, at][None],
                                      torch.tensor(y, device=device)[None], beta)[0]
            out.append([round(v, 6) for v in s.tolist()])
    return out


def add_critical_token_weights(base, tokenizer, groups: dict[str, dict], grades: dict[str, list[bool]],
                               pairs: list[dict], cfg: CDPOConfig, out_dir: Path, parts_dir: Path, seed: int,
                               chunk: int) -> dict:
    """Train (or load) the two adapters on `base`, score each pair's rejected tokens, and add to every pair
    `rejected_token_scores` (s_t) and `rejected_weights` (1 − s_t); the chosen weights stay 1 (absent). Returns
    statistics for the pairs stage."""
    positive, negative = contrast_examples(groups, grades)
    model, info = contrast_model(base, tokenizer, positive, negative, cfg, out_dir, seed)
    scored = run_in_chunks(pairs, chunk, parts_dir, lambda _, c: [
        {"scores": s} for s in rejected_token_scores(model, tokenizer, c, cfg.beta, cfg.batch_size)])
    for p, row in zip(pairs, scored, strict=True):
        p["rejected_token_scores"] = row["scores"]
        p["rejected_weights"] = [round(1.0 - s, 6) for s in row["scores"]]
    weights = [w for p in pairs for w in p["rejected_weights"]]
    info["rejected_weight_mean"] = statistics.fmean(weights) if weights else None
    return info


# ---------------------------------------------------------------------------------------------
# the method


class CDPO(Method):
    name = "cdpo"
    title = "cDPO"
    section = "cdpo"
    config = CDPOConfig
    uses_pairs_reward = False  # it grades answers
    pairs_what = "pairs (most frequent correct vs most frequent wrong answer)"

    def roles(self) -> set[str]:
        return {"pairs"}

    def trainer(self) -> str:
        return "selfalign.trainers.token_dpo:TokenWeightedDPOTrainer"

    def check_launch(self, world_size: int, zero_stage: int | None) -> None:
        if zero_stage == 3:
            raise ConfigError("cdpo: its contrast adapters are trained and then score tokens in the same stage, which "
                              "ZeRO-3's partitioned weights do not allow; launch with deepspeed_zero2.yaml or "
                              "multi_gpu.yaml (the adapters and the LoRA policy are small)")

    def build_pairs(self, ctx, t, groups):
        """Answer-frequency pairs; then positive / negative adapters on a fresh copy of M_{t-1} (the only one in
        memory) weigh each rejected token by 1 − s_t."""
        pairs, info, grades = answer_frequency_pairs(list(groups.values()), self.cfg.grading)
        if pairs:
            ctx.store.release()
            base = ctx.store.load(t - 1)
            info.update(add_critical_token_weights(
                base, ctx.store.tokenizer, groups, grades, pairs, self.cfg, ctx.run.round_dir(t) / "cdpo",
                ctx.run.parts_dir(t, "pairs") / "critical", self.recipe.seed + t, self.recipe.generation.chunk_prompts))
            del base
            gc.collect()
        return pairs, info

    def trainer_kwargs(self, ctx, pairs):
        return {"reduction": self.cfg.reduction}
