"""The models of a run: M_t of every round, the weights before seed SFT, the tokenizer, and the vLLM engine.

Every stage asks the store, never `from_pretrained` itself: `model(t)` is M_t in eval mode, cached while stages need
it (scoring, judging); `load(t)` is a fresh copy to train; `roles(t)` names the other models a round's rewards may
read (`base`, `initial`, `previous`). With `generation.backend: vllm`, `sample` keeps one engine on M_t while
consecutive stages sample from it (round t's eval, round t+1's generate) and frees it before anything else needs
the GPU.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from selfalign import distributed, models
from selfalign.artifacts import RunDir, raise_write_error, replace_dir, write_dir
from selfalign.config import GenerationConfig, ModelConfig
from selfalign.generation import Sample, generate


class ModelStore:
    def __init__(self, model: ModelConfig, generation: GenerationConfig, run: RunDir, seed: int = 0):
        self.cfg, self.generation, self.run, self.seed = model, generation, run, seed
        self.device = models.default_device()
        self._models: dict[int, torch.nn.Module] = {}  # t → M_t; -1: the weights before seed SFT
        self._vllm: tuple[int, object] | None = None  # (round, vllm.LLM)
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = models.load_tokenizer(self.base_path, self.cfg)
        return self._tokenizer

    @property
    def base_path(self) -> str:
        """The round-0 weights: after seed SFT when the run has it, else model.path."""
        path = self.run.root / "round_0" / "model"
        return str(path) if path.exists() else models.base_model_path(self.cfg)

    @property
    def has_seed_sft(self) -> bool:
        return self.run.is_done(0, "seed_sft")

    # ----------------------------------------------------------------------------- the models

    def model(self, t: int) -> torch.nn.Module:
        """M_t in eval mode, cached until `release`."""
        if t not in self._models:
            self._release_vllm()  # scoring and training need the GPU memory vLLM holds
            m = models.load_round_model(self.cfg, self.run.root, t, self.device)
            m.eval()
            self._models[t] = m
        return self._models[t]

    def load(self, t: int) -> torch.nn.Module:
        """A fresh copy of M_t (to train), not cached."""
        return models.load_round_model(self.cfg, self.run.root, t, self.device)

    def pretrained(self) -> torch.nn.Module:
        """A fresh copy of the weights at model.path (seed SFT starts from them)."""
        return models.load_model(models.base_model_path(self.cfg), self.cfg, self.device)

    def base(self) -> torch.nn.Module:
        """The weights at model.path, before seed SFT (CREAM's M_0), in eval mode, cached."""
        if not self.has_seed_sft:
            return self.model(0)
        if -1 not in self._models:
            self._models[-1] = self.pretrained().eval()
        return self._models[-1]

    def previous(self, t: int) -> torch.nn.Module | None:
        """The model before round t's scoring policy M_{t-1}: M_{t-2}, the pre-SFT base, or None."""
        if t >= 2:
            return self.model(t - 2)
        return self.base() if self.has_seed_sft else None

    def roles(self, t: int) -> Callable[[str], torch.nn.Module]:
        """The other models round t's rewards may read, by role: `base` (before seed SFT), `initial` (the round-0
        model), `previous` (the model before the policy M_{t-1}; M_{t-1} itself when there is none)."""
        def by_role(role: str) -> torch.nn.Module:
            if role == "previous":
                return self.previous(t) or self.model(t - 1)
            if role == "base":
                return self.base()
            if role == "initial":
                return self.model(0)
            raise ValueError(f"unknown model role {role!r}; expected base, initial or previous")

        return by_role

    def release(self) -> None:
        """Drop every cached model and the vLLM engine (before training loads its own)."""
        self._models.clear()
        self._release_vllm()
        gc.collect()

    # ----------------------------------------------------------------------------- sampling

    def sample(self, t: int, prompts: list[str], seed: int, *, batch_size: int, **kwargs) -> list[list[Sample]]:
        """Responses of M_t with the recipe's backend; `seed` makes them a function of the chunk alone."""
        if self.generation.backend == "vllm":
            from selfalign.generation_vllm import generate_vllm

            return generate_vllm(self._vllm_engine(t), self.tokenizer, prompts, seed=seed, **kwargs)
        torch.manual_seed(seed)
        return generate(self.model(t), self.tokenizer, prompts, batch_size=batch_size, **kwargs)

    def _release_vllm(self) -> None:
        if self._vllm is not None:
            from selfalign.generation_vllm import release_engine

            release_engine(self._vllm[1])
            self._vllm = None

    def _vllm_engine(self, t: int):
        """A vLLM engine on M_t. LoRA rounds are merged into whole weights under .vllm/ first (main process)."""
        from selfalign.generation_vllm import load_engine

        if self._vllm is not None and self._vllm[0] == t:
            return self._vllm[1]
        self.release()
        path, adapters = models.round_weights(self.cfg, self.run.root, t)
        if adapters:
            merged = self.run.root / ".vllm" / f"round_{t}"
            if distributed.is_main() and not merged.exists():
                def save(tmp: Path) -> None:
                    models.load_round_model(self.cfg, self.run.root, t).save_pretrained(str(tmp))
                    self.tokenizer.save_pretrained(str(tmp))

                write_dir(merged, save)
            distributed.barrier()
            path = str(merged)
        self._vllm = (t, load_engine(path, self.cfg, self.generation, self.seed, distributed.world_size()))
        return self._vllm[1]

    # ----------------------------------------------------------------------------- saving

    def save_trained(self, trainer, out: Path, with_tokenizer: bool) -> None:
        """The trained model (or adapter) to `out`, atomically. Every process calls the trainer's save (under ZeRO-3
        it gathers the partitioned weights into full 16-bit tensors); the main process writes. A failed write leaves
        no partial directory and raises `WriteFailed`."""
        tmp = out.with_name(f".{out.name}.tmp")
        if distributed.is_main():
            shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
        try:
            trainer.save_model(str(tmp))
            if distributed.is_main() and with_tokenizer:
                self.tokenizer.save_pretrained(str(tmp))
        except OSError as e:  # disk full, no permission: no half-written model is left behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise_write_error(out, e)
            raise
        finally:
            distributed.forget_zero3()  # the next stages load whole models for inference
        if distributed.is_main():
            replace_dir(tmp, out)
