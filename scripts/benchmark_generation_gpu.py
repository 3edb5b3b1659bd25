"""selfalign's generate stage against plain `model.generate` on a GPU, on a Llama-shaped random model (no download).

    python scripts/benchmark_generation_gpu.py --tokenizer DIR [--layers 16 --hidden 2048 ...]

Builds `LlamaForCausalLM` from a config (default about 1.2B parameters: 16 layers, hidden 2048, MLP 8192, 32 heads,
8 KV heads, the tokenizer's vocabulary) with random weights, in bfloat16 on the GPU, and times, on the same
chat-templated prompts (the shipped GSM8K slice) and settings: `selfalign.generation.generate` (left padding,
length-sorted batches, EOS handling, the per-token log-probs it records) vs plain `model.generate` on the same
batches (`benchmark_speed.plain_generate`), alternating the two over `--repeats` runs, median reported. A random
model rarely samples EOS, so nearly every sequence runs to `--max-new-tokens`: both sides generate the same work.

Only torch, transformers and selfalign's generation module are imported (`PYTHONPATH=src`), so it runs on a
machine that has those and nothing else of selfalign's dependencies. Writes OUTPUT.json and OUTPUT.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_speed import plain_generate, timed  # noqa: E402

from selfalign.generation import generate  # noqa: E402


def llama(vocab: int, args) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.mlp,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device(args.device):
        model = LlamaForCausalLM(config).to(getattr(torch, args.dtype))
    return model.eval()


def prompts(tok, path: str, n: int) -> list[str]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()][:n]
    return [
        tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False, add_generation_prompt=True)
        for r in rows
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, help="a local tokenizer directory (with a chat template)")
    p.add_argument("--prompts", default="recipes/data/gsm8k/train_512.jsonl")
    p.add_argument("--num-prompts", type=int, default=64)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=256, help="sequences (prompts × samples) per generate call")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--mlp", type=int, default=8192)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default="docs/results/speed_gpu_llama_1b")
    args = p.parse_args()
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    tok.padding_side = "left"
    model = llama(len(tok), args)
    texts = prompts(tok, args.prompts, args.num_prompts)
    kw = dict(
        num_samples=args.samples,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    generate(model, tok, texts[:8], **kw)  # warm-up (kernels, allocator)
    plain_generate(model, tok, texts[:8], args.samples, args.temperature, args.max_new_tokens, args.batch_size)

    def sync(fn):
        def run():
            out = fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return out

        return run

    ours, plain = [], []
    for _ in range(args.repeats):
        out, s = timed(sync(lambda: generate(model, tok, texts, **kw)))
        ours.append((sum(len(x.token_ids) for g in out for x in g), s))
        n, s = timed(
            sync(
                lambda: plain_generate(
                    model, tok, texts, args.samples, args.temperature, args.max_new_tokens, args.batch_size
                )
            )
        )
        plain.append((n, s))
    med = {name: statistics.median(t for _, t in runs) for name, runs in (("ours", ours), ("plain", plain))}
    report = {
        "model": f"random LlamaForCausalLM, {sum(x.numel() for x in model.parameters()) / 1e9:.2f}B parameters, "
        f"{args.dtype}",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "prompts": len(texts),
        "samples": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "generation": {
            "selfalign_seconds": round(med["ours"], 2),
            "plain_seconds": round(med["plain"], 2),
            "selfalign_tokens_per_s": round(statistics.median(n / t for n, t in ours), 1),
            "plain_tokens_per_s": round(statistics.median(n / t for n, t in plain), 1),
            "ratio": round(med["ours"] / med["plain"], 3),
            "runs": {"selfalign": [[n, round(t, 3)] for n, t in ours], "plain": [[n, round(t, 3)] for n, t in plain]},
        },
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if args.device.startswith("cuda")
        else None,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    g = report["generation"]
    out.with_suffix(".md").write_text(
        "\n".join(
            [
                f"# Generation speed on {report['device']}: {report['model']}",
                "",
                f"`{' '.join(sys.argv)}`",
                "",
                "| measure | selfalign | plain `generate` | ratio |",
                "|---|---|---|---|",
                f"| tokens/s ({len(texts)} prompts × {args.samples}, {args.max_new_tokens} new tokens, "
                f"{args.batch_size} sequences per call) | {g['selfalign_tokens_per_s']} | {g['plain_tokens_per_s']} | "
                f"{g['ratio']}× the time |",
                "",
            ]
        )
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
