"""Peak memory of cDPO's four models held as adapters on one base against four separate copies.

cDPO needs a positive and a negative model (to score tokens), a policy and a reference (to train). `shared` holds one
base with three LoRA adapters, `positive`, `negative` (r 8) and `policy` (r 16), switched with `set_adapter`; the
reference is the base with the adapters disabled. `copies` loads the base four times: positive and negative with
their adapter merged, the reference, and the policy with its adapter. Both run the same work: the two scoring
forwards and the critical-token scores, a reference forward, and one AdamW step of the policy.

Each layout runs in a fresh process; peak RSS is `ru_maxrss`, and "model memory" is the peak minus the RSS after the
imports (the Python, torch and transformers runtime, the same in both).

    .venv/bin/python scripts/adapter_memory.py                    # sandbox model and a ~60M random Llama
    .venv/bin/python scripts/adapter_memory.py --models llama60m --output runs/adapter_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LAYOUTS = ("shared", "copies")
MODELS = ("sandbox", "llama60m")
BATCH, LENGTH = 8, 64


def model_dir(name: str, scratch: Path) -> str:
    """A saved model to load: the cached sandbox model, or a random Llama with a 32k vocabulary (61.6M parameters)."""
    if name == "sandbox":
        from selfalign.sandbox.cache import sandbox_model_path
        from selfalign.sandbox.config import SandboxModelConfig

        return str(sandbox_model_path(SandboxModelConfig()))
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = scratch / name
    if not path.exists():
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                             num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
                             tie_word_embeddings=False)
        LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    return str(path)


def child(path: str, layout: str) -> dict:
    """Build `layout` from the model at `path`, run the work, and report memory."""
    import resource

    import psutil
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from selfalign.rewards.contrastive import critical_token_scores

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    baseline = psutil.Process().memory_info().rss

    def load():
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    def lora(r: int) -> LoraConfig:
        return LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")

    def randomize(model, name: str, seed: int) -> None:  # LoRA's B starts at 0; make the adapters differ
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n and f".{name}." in n:
                    p.copy_(0.01 * torch.randn(p.shape, generator=gen))

    gen = torch.Generator().manual_seed(0)
    if layout == "shared":
        model = get_peft_model(load(), lora(8), adapter_name="positive")
        model.add_adapter("negative", lora(8))
        model.add_adapter("policy", lora(16))
        for i, name in enumerate(("positive", "negative", "policy")):
            randomize(model, name, i)

        def logits(role: str, ids):
            if role == "reference":
                with model.disable_adapter():
                    return model(input_ids=ids).logits
            model.set_adapter(role)
            return model(input_ids=ids).logits

        policy = model
        base_params = [p for n, p in model.named_parameters() if "lora_" not in n]
        n_params = sum(p.numel() for p in base_params)
    else:
        roles = {}
        for i, name in enumerate(("positive", "negative")):
            m = get_peft_model(load(), lora(8), adapter_name=name)
            randomize(m, name, i)
            roles[name] = m.merge_and_unload()
        roles["reference"] = load()
        policy = get_peft_model(load(), lora(16), adapter_name="policy")
        randomize(policy, "policy", 2)
        roles["policy"] = policy

        def logits(role: str, ids):
            return roles[role](input_ids=ids).logits

        base_params = [p for role in roles.values() for n, p in role.named_parameters() if "lora_" not in n]
        n_params = sum(p.numel() for p in roles["reference"].parameters())
    vocab = policy.config.vocab_size
    ids = torch.randint(4, vocab, (BATCH, LENGTH), generator=gen)
    with torch.no_grad():
        scores = critical_token_scores(logits("positive", ids)[:, :-1], logits("negative", ids)[:, :-1], ids[:, 1:])
        ref = torch.log_softmax(logits("reference", ids)[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-4)
    logps = torch.log_softmax(logits("policy", ids)[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])
    loss = ((logps - ref) * scores[..., None]).mean()
    loss.backward()
    optimizer.step()
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in base_params}
    return {"layout": layout, "baseline_rss_mb": baseline / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "base_parameters": n_params,
            "base_weight_copies_mb": sum(storages.values()) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "LAYOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            path = model_dir(name, Path(scratch))
            for layout in LAYOUTS:
                proc = subprocess.run([sys.executable, __file__, "--child", path, layout], capture_output=True,
                                      text=True, check=True)
                row = {"model": name, **json.loads(proc.stdout.strip().splitlines()[-1])}
                row["model_memory_mb"] = row["peak_rss_mb"] - row["baseline_rss_mb"]
                results.append(row)
    print("| model | parameters | layout | base weights held (MB) | peak RSS (MB) | peak − runtime (MB) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['base_parameters'] / 1e6:.2f}M | {r['layout']} | {r['base_weight_copies_mb']:.1f} "
              f"| {r['peak_rss_mb']:.0f} | {r['model_memory_mb']:.0f} |")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
