"""The typed recipe loader and the recipe's core sections.

A recipe section is a dataclass; `build(cls, mapping, where)` makes one from YAML data and turns every user
mistake (unknown key, wrong type, value out of range) into one `ConfigError` line naming the key path and what is
allowed, e.g.

    generation.temprature: unknown key; did you mean 'temperature'?

The sections every run has live here; a reward's options live beside the reward (`selfalign.rewards`), a
method's beside the method (`selfalign.methods`), and `selfalign.recipe` puts them together.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from selfalign.sandbox.config import SandboxModelConfig


class ConfigError(ValueError):
    """A recipe mistake; the message is one line and is shown without a traceback."""


def opt(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
        lo_open: bool = False, factory: Any = None) -> Any:
    """A dataclass field with a range the loader checks: lo <= value (lo < value when lo_open) <= hi."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def extra_keys() -> Any:
    """A `dict` field that collects the keys of the mapping that are not fields of the dataclass (checked by the
    code that reads them, e.g. a GRPO reward term's options)."""
    return field(default_factory=dict, metadata={"extra": True})


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest of `choices`, or ""."""
    hint = difflib.get_close_matches(str(name), list(choices), n=1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


@dataclass
class ModelConfig:
    path: str = "sandbox"  # "sandbox" (the built-in model) or a local dir / hub id
    sandbox: SandboxModelConfig = field(default_factory=SandboxModelConfig)
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    trust_remote_code: bool = False
    revision: str | None = None


@dataclass
class PromptsConfig:
    source: str = "sandbox://arith"  # sandbox://arith?terms=3&digits=2&seed=0, a .jsonl file, or an HF dataset
    eval_source: str | None = None  # default: held-out rows of `source` (sandbox: its eval split)
    train_per_round: int = opt(256, lo=1, hi=10_000_000)
    eval_prompts: int = opt(512, lo=0, hi=10_000_000)
    split: str = "train"  # HF dataset split
    field: str = "prompt"  # the prompt column; rows with chat `messages` are read too
    answer_field: str = "answer"  # ground truth for a verifier, when the rows have one
    on_bad_row: Literal["fail", "skip"] = "fail"
    chat_template: Literal["auto", "never"] = "auto"


@dataclass
class SeedSFTConfig:
    enabled: bool = False
    data: str | None = None  # rows with prompt + completion (JSONL / HF dataset / sandbox://arith)
    judge_data: str | None = None  # judge-training rows: rubric prompt + target judgment (sandbox://arith-judge)
    max_examples: int = opt(2048, lo=1)
    epochs: float = opt(1.0, lo=0.0, lo_open=True)
    learning_rate: float = opt(1e-5, lo=0.0, lo_open=True)
    batch_size: int = opt(16, lo=1)


@dataclass
class GenerationConfig:
    backend: Literal["transformers", "vllm"] = "transformers"
    samples_per_prompt: int = opt(4, lo=1)
    temperature: float = opt(0.7, lo=0.0)
    top_p: float = opt(0.9, lo=0.0, hi=1.0, lo_open=True)
    max_new_tokens: int = opt(256, lo=1)
    batch_size: int = opt(64, lo=1)
    stop: list[str] = opt(factory=list)
    chunk_prompts: int = opt(64, lo=1)  # prompts per resumable chunk
    tensor_parallel_size: int = opt(1, lo=1)  # backend vllm: GPUs per vLLM engine
    vllm: dict[str, Any] = opt(factory=dict)  # backend vllm: any other vllm.LLM argument (gpu_memory_utilization, ...)


@dataclass
class PairsConfig:
    rule: Literal["best_vs_worst", "all_pairs"] = "best_vs_worst"  # all_pairs: every pair with a score gap (OSP)
    reward: str = "judge"  # which reward source ranks the samples
    min_margin: float = opt(0.0, lo=0.0)  # drop a pair when its score gap ≤ this (ties always dropped)
    length_control: float | None = opt(None, lo=0.0, hi=0.5)  # Meta-Rewarding ρ (best_vs_worst only)
    max_pairs_per_prompt: int | None = opt(None, lo=1)  # all_pairs and SCIR candidates: largest gaps first
    label: Literal["hard", "judge_strength"] = "hard"  # judge_strength: OSP soft label P_judge(chosen ≻ rejected)


@dataclass
class LoraOptions:
    r: int = opt(16, lo=1)
    alpha: int = opt(32, lo=1)
    dropout: float = opt(0.0, lo=0.0, hi=1.0)
    target_modules: list[str] | str = "all-linear"


@dataclass
class RewardTerm:
    """One reward term of GRPO: a registered reward (`selfalign.rewards`) or an import path, its weight in TRL's
    weighted sum, and options of that reward (its fields, e.g. `batch_size`; they override `rewards.<source>`)."""

    source: str  # a registered reward (self_certainty, judge, ...) or "package.module:function"
    weight: float = 1.0  # 0: scored and logged, not trained on
    options: dict[str, Any] = extra_keys()


@dataclass
class TrainConfig:
    algorithm: Literal["dpo", "grpo"] = "dpo"  # grpo: samples online with the generation settings, no pairs
    beta: float = opt(0.1, lo=0.0, lo_open=True)  # DPO's β (GRPO's KL coefficient is train.grpo.beta, TRL: 0)
    learning_rate: float = opt(1e-6, lo=0.0, lo_open=True)
    epochs: float = opt(1.0, lo=0.0, lo_open=True)
    batch_size: int = opt(8, lo=1)  # per device: pairs (DPO), completions (GRPO)
    gradient_accumulation_steps: int = opt(1, lo=1)
    lr_scheduler_type: str = "linear"
    warmup_steps: float = opt(0.0, lo=0.0)  # steps, or a fraction of all steps when < 1 (transformers)
    max_length: int | None = None
    lora: LoraOptions | None = None  # null: full fine-tuning
    dpo: dict[str, Any] = opt(factory=dict)  # any other trl.DPOConfig field, passed through
    grpo_rewards: list[RewardTerm] = opt(factory=list)  # GRPO's reward terms and weights
    grpo: dict[str, Any] = opt(factory=dict)  # any other trl.GRPOConfig field (beta, loss_type, ...), passed through
    checkpoint_steps: int | None = opt(50, lo=1)  # a resumable checkpoint every N optimizer steps (null: none)


@dataclass
class EvalConfig:
    greedy: bool = True
    sampled: bool = True
    temperature: float = opt(1.0, lo=0.0, lo_open=True)
    top_p: float = opt(1.0, lo=0.0, hi=1.0, lo_open=True)
    max_new_tokens: int | None = None  # default: generation.max_new_tokens
    batch_size: int = opt(128, lo=1)
    # instance name → options (`selfalign.evaluators`, README "Evaluation"); default {verifier: {}}; a list of
    # names is the same with default options. Checked by the recipe (the registry lives above this module).
    evaluators: dict[str, Any] | list[str] | None = None


@dataclass
class WandbConfig:
    enabled: bool = True
    mode: Literal["auto", "offline", "online", "disabled"] = "auto"  # auto: online iff WANDB_API_KEY is set
    project: str = "selfalign"
    entity: str | None = None
    name: str | None = None
    tags: list[str] = opt(factory=list)


@dataclass
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    console: bool = True
    log_samples: int = opt(16, lo=0)  # rows per round in the W&B table of sampled responses


# ---------------------------------------------------------------------------------------------
# Building dataclasses from plain data, with one-line errors


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string",
            type(None): "null", Any: "any value"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(e)
        # A mapping meant for the dataclass member gets that member's precise error.
        for a in args:
            if dataclasses.is_dataclass(a) and isinstance(value, dict):
                raise errors[[x for x in args if x is not type(None)].index(a)]
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"{where}: {value!r} is not allowed; expected {_type_name(tp)}{extra}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads 1e-6 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported schema type {tp!r} at {where}")


def _check_range(value: Any, meta: typing.Mapping[str, Any], where: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if value != value:
        raise ConfigError(f"{where}: nan is not allowed; expected a number")
    if value in (float("inf"), float("-inf")):
        raise ConfigError(f"{where}: {value!r} is not allowed; expected a finite number")
    lo, hi, lo_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{where}: {value!r} is out of range; must be {'>' if lo_open else '>='} {lo:g}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: {value!r} is out of range; must be <= {hi:g}")


def _extra_field(cls: type) -> str | None:
    return next((f.name for f in dataclasses.fields(cls) if f.metadata.get("extra")), None)


def build(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a mapping; `where` is the key path used in error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'recipe'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extra = _extra_field(cls)
    kwargs: dict[str, Any] = {extra: {}} if extra else {}
    for key, value in data.items():
        key = str(key) if str(key).isprintable() else repr(str(key))
        path = f"{where}.{key}" if where else key
        if key == extra:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping, got {value!r}")
            kwargs[extra].update(value)
            continue
        if key not in fields:
            if extra:
                kwargs[extra][key] = value
                continue
            hint = did_you_mean(key, fields) or f"; allowed: {', '.join(fields)}"
            raise ConfigError(f"{path}: unknown key{hint}")
        converted = _convert(value, hints[key], path)
        _check_range(converted, fields[key].metadata, path)
        kwargs[key] = converted
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where + '.' if where else ''}{name}: missing; this key is required")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain data of a section (lists, dicts, scalars); the extra keys of a dataclass sit beside its fields, as
    they were written."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        extra = _extra_field(type(obj))
        for f in dataclasses.fields(obj):
            value = to_dict(getattr(obj, f.name))
            if f.name == extra:
                out.update(value)
            else:
                out[f.name] = value
        return out
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------------------------
# Reading YAML and `--set` overrides


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key written twice in one mapping is an error (PyYAML keeps the last one
    silently, so the first `train:` section of a recipe with two would be dropped without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # the base loader says so
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | typing.Any) -> dict:
    """A recipe file as a mapping; ConfigError naming the file (and line) when it cannot be read or parsed."""
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read recipe ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (invalid UTF-8)") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{loc} invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys, got {type(raw).__name__}")
    return raw


def apply_override(raw: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected KEY.PATH=VALUE")
    key, text = assignment.split("=", 1)
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    if not all(p.strip() for p in parts):
        raise ConfigError(f"--set {assignment}: the key path {key.strip()!r} has an empty part; expected "
                          "KEY.PATH=VALUE")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value


