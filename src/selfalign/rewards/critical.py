"""cDPO's critical tokens (Lin et al. 2025, https://arxiv.org/abs/2411.19943): a positive and a negative model,
trained on the round's correct and incorrect samples, score every token of each rejected response, and the
token-weighted DPO loss weighs a rejected token by 1 − s_t.

One copy of the base weights: the positive and the negative model are two LoRA adapters, `positive` and
`negative`, on the round's starting model (peft multi-adapter, switched with `set_adapter`); the DPO policy is
another adapter on a base of its own stage, and its reference is that base with the adapter disabled
(`scripts/adapter_memory.py` measures what this saves).

Resumable: each adapter is saved to `round_t/cdpo/<name>/` as soon as it is trained (moved into place whole) and
loaded, not retrained, by a resumed run; the scores are written in chunks.
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from selfalign import distributed
from selfalign.artifacts import read_json, replace_dir, run_in_chunks, write_json
from selfalign.config import CDPOConfig, ContrastAdaptersConfig, SeedSFTConfig
from selfalign.rewards.contrastive import critical_token_scores
from selfalign.trainers.token_dpo import preference_token_ids

POSITIVE, NEGATIVE = "positive", "negative"


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
            trainer = train_sft(model, tokenizer, list(examples), sft, out_dir / f".trainer_{name}", seed)
            losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
            if distributed.is_main():
                tmp = out_dir / f".{name}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                model.save_pretrained(str(tmp), selected_adapters=[name])  # a named adapter lands in tmp/<name>/
                write_json(tmp / name / "train_stats.json", {"examples": len(examples), "steps": len(losses),
                                                             "loss": statistics.fmean(losses) if losses else None})
                replace_dir(tmp / name, path)
                shutil.rmtree(tmp)
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
