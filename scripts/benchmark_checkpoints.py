"""What checkpoints inside a train stage cost (`train.checkpoint_steps`, selfalign/trainers/checkpoints.py): full DPO
fine-tuning of a model on synthetic pairs, with a checkpoint every `--every` steps and without any, the size of one
checkpoint and the time to resume from the last one.

    python scripts/benchmark_checkpoints.py --model smollm2-135m-instruct --steps 4 --every 2
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="sandbox, smollm2-135m-instruct or a dir")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()

    from selfalign import models
    from selfalign.config import ModelConfig, TrainConfig
    from selfalign.trainers import checkpoints
    from selfalign.trainers.dpo import train_dpo

    cfg = ModelConfig(path=args.model)
    path = models.base_model_path(cfg)
    tokenizer = models.load_tokenizer(path, cfg)
    pairs = [{"prompt": f"What is {i} + {i + 1}?", "chosen": f"{i} + {i + 1} = {2 * i + 1}.",
              "rejected": "I do not know."} for i in range(args.steps * args.batch_size)]

    def run(out: Path, every: int | None) -> float:
        train_cfg = TrainConfig(learning_rate=1e-6, batch_size=args.batch_size, checkpoint_steps=every)
        policy, ref = models.load_model(path, cfg), models.load_model(path, cfg)
        start = time.perf_counter()
        train_dpo(policy, tokenizer, pairs, train_cfg, out, 0, ref_model=ref)
        return time.perf_counter() - start

    root = Path(tempfile.mkdtemp(prefix="ckpt_bench_"))
    try:
        plain = run(root / "plain", None)
        with_ckpt = run(root / "ckpt", args.every)
        (last,) = checkpoints.checkpoints(root / "ckpt")
        size = dir_mb(last)
        weights = sum(p.stat().st_size for p in Path(path).glob("*.safetensors")) / 2**20
        # resume from the last checkpoint: the Trainer loads weights, optimizer, scheduler, RNG, then has no step left
        resume = run(root / "ckpt", args.every)
        saves = args.steps // args.every
        print(f"model {args.model}: {args.steps} steps of batch {args.batch_size}; weights {weights:.0f} MB")
        print(f"without checkpoints {plain:.1f} s; with one every {args.every} steps ({saves} saves) {with_ckpt:.1f} s "
              f"(+{(with_ckpt - plain) / saves:.1f} s per checkpoint)")
        print(f"one checkpoint: {size:.0f} MB ({size / weights:.1f}x the weights); resuming from it (no step left): "
              f"{resume:.1f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
