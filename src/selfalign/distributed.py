"""The pipeline under `accelerate launch`: which process this is, how work is shared, when processes meet.

Every process runs every stage. The chunked stages (generate, reward, eval, and the scoring inside pairs)
share their chunks round-robin by rank, each process writing the part files of its own chunks; the
processes then meet at a barrier and all read the whole stage's output. Only the main process writes the
stage's artifacts and the manifest; the others re-read the manifest once they pass the barrier that ends
the stage. Training is TRL's: the launch's DDP / DeepSpeed / FSDP set-up applies to it unchanged.

Without a launcher (or with one process) rank is 0, world size 1 and barriers return at once. The run
directory must be on a file system every process sees (one machine, or a shared disk across nodes).
"""

from __future__ import annotations

import os

import torch
from accelerate import PartialState


def _state() -> PartialState:
    # Processes started by torchrun / DeepSpeed on a machine without CUDA run on CPU over gloo (accelerate would
    # otherwise see no distributed set-up); the first PartialState of a process fixes its set-up.
    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return PartialState(cpu=cpu)


def device() -> torch.device:
    """This process's device. On CPU plain `cpu`: accelerate's `cpu:0` under a launcher would make `.to()` copy
    every weight of a model loaded on `cpu`, doubling its memory."""
    d = _state().device
    return torch.device("cpu") if d.type == "cpu" else d


def rank() -> int:
    return _state().process_index


def world_size() -> int:
    return _state().num_processes


def is_main() -> bool:
    return _state().is_main_process


def barrier() -> None:
    """Wait until every process gets here (no-op with one process)."""
    if world_size() > 1:
        _state().wait_for_everyone()


def owns(chunk: int) -> bool:
    """Whether this process computes chunk number `chunk` (round-robin by rank)."""
    return chunk % world_size() == rank()


def gather(obj) -> list:
    """`obj` from every process, in rank order, on every process."""
    if world_size() == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def forget_zero3() -> None:
    """Drop the ZeRO-3 set-up a trainer's arguments registered with transformers once training is over: while it
    is registered, `from_pretrained` partitions every model it loads, and the stages after training need whole
    models for generation and scoring."""
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def training_setup(trainer) -> dict:
    """How a trainer ran: processes, accelerate's distributed type, and under DeepSpeed the ZeRO stage and, with
    ZeRO-3 and a reference model, whether the reference is partitioned too (every parameter a ZeRO-3 shard)."""
    accelerator = trainer.accelerator
    info = {"processes": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type.value)}
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        info["zero_stage"] = plugin.zero_stage
        ref = getattr(trainer, "ref_model", None)
        if plugin.zero_stage == 3 and ref is not None:
            info["reference_partitioned"] = all(hasattr(p, "ds_id") for p in ref.parameters())
    return info


def zero_stage() -> int | None:
    """The DeepSpeed ZeRO stage `accelerate launch` was given, if any."""
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") if os.environ.get(
        "ACCELERATE_USE_DEEPSPEED", "").lower() == "true" else None
    return int(stage) if stage else None


def precision_args() -> dict:
    """The trainers' `bf16` / `fp16` / `use_cpu`: the launch's mixed precision when `accelerate launch` set one (a
    DeepSpeed config must agree with the trainer's arguments), otherwise bf16 on a GPU that supports it."""
    cuda = torch.cuda.is_available()
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched is not None:
        return {"bf16": launched == "bf16", "fp16": launched == "fp16", "use_cpu": not cuda}
    return {"bf16": cuda and torch.cuda.is_bf16_supported(), "fp16": False, "use_cpu": not cuda}
