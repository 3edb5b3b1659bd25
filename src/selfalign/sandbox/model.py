"""Building the sandbox base model: a small Llama-architecture causal LM trained from scratch on the sandbox
corpus (``selfalign.sandbox.corpus``) with the character tokenizer (``selfalign.sandbox.tokenizer``).

``build_sandbox_model(cfg, out_dir)`` trains and saves (safetensors + tokenizer + ``sandbox.json``); deterministic
for ``cfg`` on one machine and thread count (float summation differs across CPUs). ``selfalign.sandbox.cache`` keeps
built models; ``selfalign sandbox build`` runs it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path

from selfalign.sandbox import task as sandbox
from selfalign.sandbox.config import BUILD_VERSION, SandboxModelConfig, config_hash
from selfalign.sandbox.corpus import corpus
from selfalign.sandbox.tokenizer import BOS_ID, EOS_ID, MAX_LENGTH, PAD_ID, build_char_tokenizer
from selfalign.scoring import left_pad

logger = logging.getLogger(__name__)


def _verdict_positions(row: dict) -> list[int]:
    """Character positions in ``row["completion"]`` of the verdict tokens: the o/n marks of a
    written check and the score digit."""
    text = row["completion"]
    if row["kind"] == "judge_expected":
        return [0]
    if row["kind"] != "judge_written":
        return []
    pos = [i for i in range(len(text) - 1) if text[i] in "on" and text[i + 1] in ";|"]
    k = text.find("Score:")
    if k >= 0:
        pos.append(k + len("Score:"))
    return pos


class _Stream:
    """Deterministic stream of training batches (input_ids, labels, weights), right-padded and
    length-bucketed: every chunk of ``chunk_batches`` batches is drawn from the corpus, sorted by
    length, cut into batches, and the batches shuffled. Labels are -100 on the context (prompt /
    judged response) and pads; weights are 1 on target tokens, ``verdict_weight`` on verdict
    tokens. ``phase`` 1 draws correct solutions only, phase 2 the full corpus."""

    def __init__(self, cfg: SandboxModelConfig, tok, chunk_batches: int = 32):
        self.cfg, self.tok, self.chunk_batches = cfg, tok, chunk_batches
        self.rng = random.Random(f"selfalign-sandbox-batches:{cfg.seed}")
        self.index = 0
        self.phase = 1
        self.pending: list = []
        self.samples: list[tuple[str, str]] = []

    def set_phase(self, phase: int, samples: list[tuple[str, str]] | None = None) -> None:
        if phase != self.phase:
            self.phase = phase
            self.pending = []
        self.samples = samples or []

    def _refill(self) -> None:
        import torch

        cfg, n = self.cfg, self.cfg.batch_size * self.chunk_batches
        full = self.phase == 2
        rows = corpus(
            n,
            seed=cfg.seed,
            error_rate=cfg.error_rate if full else 0.0,
            judge_fraction=cfg.judge_fraction if full else 0.0,
            judge_noise=cfg.judge_noise,
            task=cfg.task(),
            written_fraction=cfg.written_fraction,
            judge_error_fraction=cfg.judge_error_fraction,
            samples=self.samples if full else None,
            sample_fraction=cfg.sample_fraction if (full and self.samples) else 0.0,
            start=self.index,
        )
        self.index += n
        ctx = self.tok([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]
        tgt = self.tok([r["completion"] for r in rows], add_special_tokens=False)["input_ids"]
        vpos = [_verdict_positions(r) for r in rows]
        seqs = sorted(zip(ctx, tgt, vpos, strict=True), key=lambda ctv: len(ctv[0]) + len(ctv[1]))
        order = list(range(self.chunk_batches))
        self.rng.shuffle(order)
        for b in order:
            chunk = seqs[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            width = max(len(c) + len(t) for c, t, _ in chunk)
            ids = torch.full((len(chunk), width), PAD_ID, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            weights = torch.zeros((len(chunk), width), dtype=torch.float32)
            for i, (c, t, v) in enumerate(chunk):
                ids[i, : len(c) + len(t)] = torch.tensor(c + t)
                labels[i, len(c) : len(c) + len(t)] = torch.tensor(t)
                weights[i, len(c) : len(c) + len(t)] = 1.0
                for p in v:
                    weights[i, len(c) + p] = cfg.verdict_weight
            self.pending.append((ids, labels, weights))

    def next(self):
        if not self.pending:
            self._refill()
        return self.pending.pop(0)


def _validation_batch(cfg: SandboxModelConfig, tok, n: int = 256):
    """Held-out solved problems (a private stream, disjoint from the eval split) as one padded
    batch: (input_ids, attention_mask, target_mask)."""
    import torch

    task = cfg.task()
    prompts = [sandbox.format_prompt(task.terms_at(i, f"val{cfg.seed}")) for i in range(n)]
    ctx = tok(prompts, add_special_tokens=False)["input_ids"]
    tgt = tok([sandbox.solve(p) + sandbox.EOS for p in prompts], add_special_tokens=False)["input_ids"]
    width = max(len(c) + len(t) for c, t in zip(ctx, tgt, strict=True))
    ids = torch.full((n, width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.bool)
    for i, (c, t) in enumerate(zip(ctx, tgt, strict=True)):
        ids[i, : len(c) + len(t)] = torch.tensor(c + t)
        mask[i, len(c) : len(c) + len(t)] = True
    return ids, mask


def _greedy_solved(model, val) -> float:
    """Fraction of validation problems whose greedy decoding is exactly the solution + EOS: one
    teacher-forced forward pass (greedy reproduces the target iff every target token is the
    argmax given the target prefix)."""
    import torch

    ids, mask = val
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = model(input_ids=ids).logits[:, :-1].argmax(-1)
    model.train(was_training)
    ok = (pred == ids[:, 1:]) | ~mask[:, 1:]
    return ok.all(dim=1).float().mean().item()


def _own_samples(model, cfg: SandboxModelConfig, tok, batch_size: int = 512) -> tuple[list[tuple[str, str]], float]:
    """T=1 samples of ``model`` on ``cfg.own_samples`` fresh problems (a private stream, disjoint
    from eval); only finished ones (ending in EOS) are kept. Returns (samples, their accuracy)."""
    import torch

    task = cfg.task()
    prompts = [sandbox.format_prompt(task.terms_at(i, f"own{cfg.seed}")) for i in range(cfg.own_samples)]
    max_new = max(len(sandbox.solve(p)) for p in prompts) + 4
    was_training = model.training
    model.eval()
    out: list[tuple[str, str]] = []
    torch.manual_seed(cfg.seed + 1)
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            ids, mask = left_pad([tok(p, add_special_tokens=False)["input_ids"] for p in chunk], PAD_ID)
            width = ids.size(1)
            res = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new,
                pad_token_id=PAD_ID,
                eos_token_id=EOS_ID,
            )
            for p, row in zip(chunk, res[:, width:].tolist(), strict=True):
                if EOS_ID in row:
                    out.append((p, tok.decode(row[: row.index(EOS_ID)])))
    model.train(was_training)
    acc = sum(sandbox.verify(p, r) for p, r in out) / max(1, len(out))
    return out, acc


def _train(model, cfg: SandboxModelConfig, tok, opt, t0: float, callback=None) -> dict:
    import torch

    stream = _Stream(cfg, tok)
    val = _validation_batch(cfg, tok)
    phase1_steps = None
    own_acc = None
    solved = 0.0
    ema = None
    step = 0

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        if phase1_steps is None:
            return cfg.lr
        total = phase1_steps + cfg.steps
        decay_start = total - int(cfg.steps * cfg.decay_fraction)
        frac = min(1.0, max(0.0, (step - decay_start) / max(1, total - decay_start)))
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

    while phase1_steps is None or step < phase1_steps + cfg.steps:
        if phase1_steps is None and step % cfg.check_every == 0 and step > 0:
            solved = _greedy_solved(model, val)
            logger.info("sandbox build phase 1 step %d: greedy solves %.3f of validation", step, solved)
            if solved >= cfg.solve_target or step >= cfg.solve_max_steps:
                if solved < cfg.solve_target:
                    logger.warning(
                        "sandbox build: phase 1 ended at solve_max_steps=%d with greedy %.3f < solve_target %.3f",
                        step,
                        solved,
                        cfg.solve_target,
                    )
                phase1_steps = step
                samples, own_acc = _own_samples(model, cfg, tok) if cfg.own_samples else ([], None)
                logger.info(
                    "sandbox build: %d own samples (accuracy %s) (%.0fs)",
                    len(samples),
                    own_acc,
                    time.perf_counter() - t0,
                )
                stream.set_phase(2, samples)
        ids, labels, weights = stream.next()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        # right padding + causal attention: pads never influence real positions, so no mask
        logits = model(input_ids=ids).logits
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="none"
        )
        w = weights[:, 1:].reshape(-1)
        loss = (ce * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        step += 1
        if step % 250 == 0:
            logger.info(
                "sandbox build step %d (phase %d) loss %.4f (%.0fs)", step, stream.phase, ema, time.perf_counter() - t0
            )
        if callback is not None:
            callback(step, model)
    final_solved = _greedy_solved(model, val)
    logger.info(
        "sandbox build done: %d steps (phase 1: %d), greedy solves %.3f of validation", step, phase1_steps, final_solved
    )
    return {
        "final_loss": ema,
        "phase1_steps": phase1_steps,
        "total_steps": step,
        "phase1_val_solved": solved,
        "own_sample_accuracy": own_acc,
        "final_val_solved": final_solved,
    }


def _llama_config(cfg: SandboxModelConfig, vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=MAX_LENGTH,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )


def build_sandbox_model(
    cfg: SandboxModelConfig | None = None,
    out_dir: str | os.PathLike = "sandbox_model",
    num_threads: int | None = None,
    callback=None,
) -> Path:
    """Train the sandbox model for ``cfg`` from scratch and save it to ``out_dir``.

    Writes safetensors weights, ``config.json``, ``generation_config.json`` (eos/pad ids),
    the tokenizer, and ``sandbox.json`` (``{"config": ..., "hash": ..., "build_seconds": ...,
    "final_loss": ..., "phase1_steps": ..., "params": ...}``). ``num_threads`` sets
    ``torch.set_num_threads`` for the build (restored after). ``callback(step, model)``, if
    given, is called after every optimisation step (for learning curves; it must leave the model
    in train mode). Returns ``Path(out_dir)``.
    """
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    cfg = cfg or SandboxModelConfig()
    out = Path(out_dir)
    old_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        t0 = time.perf_counter()
        tok = build_char_tokenizer()
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(_llama_config(cfg, len(tok)))
        model.train()
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("sandbox build %s: %d parameters", config_hash(cfg), n_params)

        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.98),
            eps=1e-8,
        )
        stats = _train(model, cfg, tok, opt, t0, callback)
        model.eval()
        model.generation_config = GenerationConfig(
            eos_token_id=EOS_ID, pad_token_id=PAD_ID, bos_token_id=BOS_ID, max_new_tokens=64
        )
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        build_seconds = time.perf_counter() - t0
        meta = {
            "config": cfg.to_dict(),
            "hash": config_hash(cfg),
            "build_version": BUILD_VERSION,
            "build_seconds": round(build_seconds, 1),
            **stats,
            "params": n_params,
            "torch_threads": torch.get_num_threads(),
        }
        (out / "sandbox.json").write_text(json.dumps(meta, indent=2) + "\n")
        logger.info("sandbox model saved to %s in %.0fs", out, build_seconds)
        return out
    finally:
        torch.set_num_threads(old_threads)
