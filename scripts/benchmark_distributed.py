"""Wall time per stage and peak memory per process of one DPO round, for 1 and 2 processes, with and without ZeRO.

Each set-up runs a fresh round (round 0 eval → generate → reward → pairs → train → eval) of the quickstart recipe
(likelihood reward, full fine-tuning with a reference model) in its own run directory, started the way a user
starts it: `selfalign run` for one plain process, `accelerate launch --config_file recipes/accelerate/...` for
the others. Stage times and each process's peak RSS (`ru_maxrss`, recorded by the engine with every stage) are
read back from the run's manifest.json. Two models: the sandbox model (1.1M parameters) and a random Llama of
113M parameters with the sandbox's character tokenizer (hidden 768, 12 layers), which makes the model's own
memory visible next to the ~0.45 GB of Python, torch and transformers every process carries.

    .venv/bin/python scripts/benchmark_distributed.py                       # both models, every set-up
    .venv/bin/python scripts/benchmark_distributed.py --models sandbox --setups 1,ddp2

Writes OUTPUT.json and OUTPUT.md (default docs/results/distributed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETUPS = {  # name: (launch config or None for a plain process, processes)
    "1": (None, 1),
    "zero2x1": ("deepspeed_zero2.yaml", 1),
    "zero3x1": ("deepspeed_zero3.yaml", 1),
    "ddp2": ("cpu_ddp.yaml", 2),
    "zero2x2": ("deepspeed_zero2.yaml", 2),
    "zero3x2": ("deepspeed_zero3.yaml", 2),
}
LABELS = {"1": "1 process", "zero2x1": "1 process, ZeRO-2", "zero3x1": "1 process, ZeRO-3",
          "ddp2": "2 processes, DDP", "zero2x2": "2 processes, ZeRO-2", "zero3x2": "2 processes, ZeRO-3"}
MODELS = {  # name: recipe overrides (on top of recipes/quickstart.yaml)
    "sandbox": ["prompts.train_per_round=128", "prompts.eval_prompts=128", "generation.chunk_prompts=32",
                "generation.batch_size=128", "eval.batch_size=32", "train.batch_size=8"],
    "random113m": ["prompts.train_per_round=16", "prompts.eval_prompts=16", "generation.samples_per_prompt=2",
                   "generation.max_new_tokens=32", "generation.chunk_prompts=4", "generation.batch_size=8",
                   "eval.batch_size=4", "eval.max_new_tokens=32", "eval.greedy=false", "train.batch_size=4",
                   "rewards.judge=null"],
}
COMMON = ["rounds=1", "tracking.wandb.enabled=false", "tracking.console=false"]
STAGES = ("generate", "reward", "pairs", "train", "eval")


def random_model(path: Path) -> str:
    if not (path / "model.safetensors").exists():
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        from selfalign.sandbox.tokenizer import build_char_tokenizer

        tok = build_char_tokenizer()
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                             num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=512,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             bos_token_id=tok.bos_token_id, tie_word_embeddings=False)
        model = LlamaForCausalLM(config)
        print(f"random Llama: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
        model.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
    return str(path)


def run_setup(model: str, setup: str, scratch: Path) -> dict:
    config, processes = SETUPS[setup]
    out = scratch / f"{model}_{setup}"
    shutil.rmtree(out, ignore_errors=True)
    overrides = COMMON + MODELS[model]
    if model != "sandbox":
        overrides.append(f"model.path={random_model(scratch / 'random113m_model')}")
    run = [str(ROOT / "recipes/quickstart.yaml"), "--output-dir", str(out)] + [x for o in overrides
                                                                              for x in ("--set", o)]
    if config is None:
        cmd = [sys.executable, "-m", "selfalign", "run", *run]
    else:
        cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
               str(ROOT / "recipes/accelerate" / config), "--num_processes", str(processes), "--mixed_precision",
               "no", "-m", "selfalign", "run", *run]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"{model} {setup} failed:\n{proc.stderr[-3000:]}")
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    row = {"model": model, "setup": setup, "processes": processes, "wall_s": round(wall, 1),
           "seconds": {s: stages[f"round_1/{s}"]["seconds"] for s in STAGES},
           "peak_rss_mb": {s: stages[f"round_1/{s}"]["peak_rss_mb"] for s in STAGES},
           "round0_eval_s": stages["round_0/eval"]["seconds"],
           "train": {k: stages["round_1/train"].get(k) for k in ("processes", "distributed_type", "zero_stage",
                                                                  "steps")}}
    print(json.dumps(row))
    return row


def markdown(rows: list[dict]) -> str:
    head = ("| model | set-up | generate s | reward s | pairs s | train s | eval s | launch wall s | "
            "peak RSS / process after reward (MB) | after train (MB) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        sec, mem = r["seconds"], r["peak_rss_mb"]
        lines.append(f"| {r['model']} | {LABELS[r['setup']]} | " + " | ".join(f"{sec[s]:.1f}" for s in STAGES)
                     + f" | {r['wall_s']:.0f} | {' / '.join(f'{m:.0f}' for m in mem['reward'])} | "
                     + f"{' / '.join(f'{m:.0f}' for m in mem['train'])} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--scratch", default="runs/benchmark_distributed")
    parser.add_argument("--output", default="docs/results/distributed")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # 1 thread per process: 1 vs 2 processes use 1 vs 2 cores
    scratch = (ROOT / args.scratch).resolve()
    rows = [run_setup(m, s, scratch) for m in args.models.split(",") for s in args.setups.split(",")]
    out = ROOT / args.output
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
