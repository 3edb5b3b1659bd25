"""The `vllm` sampling backend (`generation.backend: vllm`, optional extra `selfalign[vllm]`, NVIDIA GPUs).

It returns the same `Sample`s as the transformers backend: the response text, its token ids (EOS left out),
the log-prob of every sampled token under the model's own distribution (vLLM's default `raw_logprobs`: before
temperature and top-p, like generation.py's teacher-forced pass; with EOS, its log-prob is the last one), and
the finish reason. The engine loads the round's weights from a directory: the round's model, or the base with
the LoRA adapters of the rounds so far merged into it (models.py). One engine per process; under
`accelerate launch` each process samples its own rank's chunks (`distributed_executor_backend:
external_launcher`), so tensor parallelism (> 1 GPU per engine) needs a single-process run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from selfalign.config import ConfigError, GenerationConfig, ModelConfig
from selfalign.generation import Sample, _cut_at_stop

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16", "auto": "auto"}


def check_available(g: GenerationConfig, world_size: int) -> None:
    """A one-line ConfigError, before any stage runs, when vLLM cannot run here."""
    if g.backend != "vllm":
        return
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ConfigError("generation.backend: vllm is not installed; pip install -e '.[vllm]' on a machine with "
                          "an NVIDIA GPU, or use backend transformers") from None
    if not torch.cuda.is_available():
        raise ConfigError("generation.backend: vllm needs a CUDA GPU and none is visible; use backend transformers")
    if world_size > 1 and g.tensor_parallel_size > 1:
        raise ConfigError(f"generation.tensor_parallel_size: {g.tensor_parallel_size} GPUs per vLLM engine needs a "
                          f"single-process run (`selfalign run`, vLLM starts its own workers); under accelerate "
                          f"launch ({world_size} processes) each process runs one engine on its GPU: use 1")


def load_engine(model_dir: str, m: ModelConfig, g: GenerationConfig, seed: int, world_size: int):
    """A `vllm.LLM` on the weights in `model_dir`."""
    from vllm import LLM

    kwargs = dict(model=model_dir, tokenizer=model_dir, tensor_parallel_size=g.tensor_parallel_size,
                  dtype=_DTYPES[m.dtype], trust_remote_code=m.trust_remote_code, seed=seed)
    if world_size > 1:
        kwargs["distributed_executor_backend"] = "external_launcher"  # the launcher's process, on its own GPU
    kwargs.update(g.vllm)
    return LLM(**kwargs)


def release_engine(llm) -> None:
    """Free the engine's GPU memory before training needs it (best effort: vLLM keeps no public close())."""
    import gc

    del llm
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def generate_vllm(llm, tokenizer, prompts: Sequence[str], *, num_samples: int = 1, temperature: float = 1.0,
                  top_p: float = 1.0, max_new_tokens: int = 256, stop: Sequence[str] = (), seed: int = 0,
                  with_logprobs: bool = True) -> list[list[Sample]]:
    """`num_samples` responses per prompt from a vLLM engine; temperature 0 is greedy (one sample). Request i is
    seeded with seed + i, so a chunk's samples depend only on its seed and prompts."""
    from vllm import SamplingParams

    if temperature == 0 and num_samples != 1:
        raise ValueError("greedy decoding (temperature 0) gives one sample per prompt")
    params = [SamplingParams(n=num_samples, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                             max_tokens=max_new_tokens, stop=list(stop) or None, seed=seed + i,
                             logprobs=0 if with_logprobs else None)
              for i in range(len(prompts))]
    token_prompts = [{"prompt_token_ids": tokenizer(p)["input_ids"]} for p in prompts]  # same ids as transformers
    outputs = llm.generate(token_prompts, params, use_tqdm=False)
    return [[to_sample(c, tokenizer, stop, with_logprobs) for c in out.outputs] for out in outputs]


def to_sample(completion, tokenizer, stop: Sequence[str], with_logprobs: bool) -> Sample:
    """One vLLM `CompletionOutput` (text, token_ids, logprobs: one {token_id: Logprob} per token, finish_reason
    "stop" | "length", stop_reason: None at EOS, else the stop string) as a `Sample`."""
    ids = list(completion.token_ids)
    lps = [step[tok].logprob for step, tok in zip(completion.logprobs, ids, strict=True)] if with_logprobs else []
    eos = tokenizer.eos_token_id
    if completion.finish_reason == "length":
        return Sample(completion.text, ids, lps, "length")
    if completion.stop_reason is None or completion.stop_reason == eos:  # EOS: its log-prob stays, as generation.py
        if ids and ids[-1] == eos:
            ids = ids[:-1]
        return Sample(tokenizer.decode(ids, skip_special_tokens=True), ids, lps, "eos")
    # A stop string: vLLM cut the text before it; keep the shortest token prefix that spells the kept text.
    text, _ = _cut_at_stop(completion.text, stop)
    k = next((k for k in range(len(ids) + 1) if len(tokenizer.decode(ids[:k], skip_special_tokens=True))
              >= len(text)), len(ids))
    return Sample(text, ids[:k], lps[:k], "stop")
