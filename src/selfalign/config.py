"""The recipe: a typed schema (dataclasses), YAML loading, `--set` overrides, and validation.

Every user mistake (unknown key, wrong type, value out of range) becomes one `ConfigError` line
naming the file, the key path and what is allowed, e.g.

    recipes/x.yaml: generation.temprature: unknown key; did you mean 'temperature'?
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from selfalign.data.sandbox_model import SandboxModelConfig


class ConfigError(ValueError):
    """A recipe mistake; the message is one line and is shown without a traceback."""


def _opt(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False, factory: Any = None) -> Any:
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    path: str = "sandbox"  # "sandbox" (built on first use) or a local dir / hub id
    sandbox: SandboxModelConfig = field(default_factory=SandboxModelConfig)
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    trust_remote_code: bool = False
    revision: str | None = None


@dataclass
class PromptsConfig:
    source: str = "sandbox://arith"  # sandbox://arith?terms=3&digits=2&seed=0, a .jsonl file, or an HF dataset
    eval_source: str | None = None  # default: held-out rows of `source` (sandbox: its eval split)
    train_per_round: int = _opt(256, lo=1)
    eval_prompts: int = _opt(512, lo=0)
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
    max_examples: int = _opt(2048, lo=1)
    epochs: float = _opt(1.0, lo=0.0, lo_open=True)
    learning_rate: float = _opt(1e-5, lo=0.0, lo_open=True)
    batch_size: int = _opt(16, lo=1)


@dataclass
class GenerationConfig:
    backend: Literal["transformers", "vllm"] = "transformers"
    samples_per_prompt: int = _opt(4, lo=1)
    temperature: float = _opt(0.7, lo=0.0)
    top_p: float = _opt(0.9, lo=0.0, hi=1.0, lo_open=True)
    max_new_tokens: int = _opt(256, lo=1)
    batch_size: int = _opt(64, lo=1)
    stop: list[str] = _opt(factory=list)
    chunk_prompts: int = _opt(64, lo=1)  # prompts per resumable chunk
    tensor_parallel_size: int = _opt(1, lo=1)  # backend vllm: GPUs per vLLM engine
    vllm: dict[str, Any] = _opt(factory=dict)  # backend vllm: any other vllm.LLM argument (gpu_memory_utilization, ...)


@dataclass
class JudgeConfig:
    """LLM-as-a-judge (SRLM): `generate` samples a written judgment, `expected` reads Σ k·p(k)."""

    mode: Literal["generate", "expected"] = "generate"
    template: str = "srlm"  # "srlm", "sandbox", or a template text with {prompt} and {response}
    expected_template: str | None = None  # for `expected` with a custom template; default: template + "\nScore: "
    num_judgments: int = _opt(3, lo=1)
    temperature: float = _opt(0.7, lo=0.0)
    top_p: float = _opt(0.9, lo=0.0, hi=1.0, lo_open=True)
    max_new_tokens: int = _opt(256, lo=1)
    batch_size: int = _opt(64, lo=1)


@dataclass
class LikelihoodConfig:
    """Log-likelihood of the response under the current model (length-normalised by default)."""

    normalize: bool = True
    batch_size: int = _opt(32, lo=1)


@dataclass
class ImplicitConfig:
    """DPO implicit reward β·(log π_t(y|x) − log π_ref(y|x)).

    reference: `base` = the weights at model.path (before seed SFT; CREAM's M_0), `initial` = the
    round-0 model (after seed SFT when there is one), `previous` = the model before the scoring one.
    """

    reference: Literal["base", "initial", "previous"] = "base"
    beta: float = _opt(1.0, lo=0.0, lo_open=True)
    batch_size: int = _opt(32, lo=1)


@dataclass
class MajorityConfig:
    """Self-consistency: the share of the prompt's samples with the same final answer (no ground truth)."""


@dataclass
class VerifierConfig:
    """Ground truth (sandbox): an oracle for comparison runs, never a default reward."""


@dataclass
class RewardsConfig:
    judge: JudgeConfig | None = None
    likelihood: LikelihoodConfig | None = None
    implicit: ImplicitConfig | None = None
    majority: MajorityConfig | None = None
    verifier: VerifierConfig | None = None

    def enabled(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


@dataclass
class ConsistencyConfig:
    """CREAM (Wang et al. 2025): agreement between this round's ranking of the samples (by pairs.reward)
    and the previous model's ranking of the same samples, used as the soft label of DPO."""

    method: Literal["kendall", "spearman", "toporder"] = "kendall"
    variant: Literal["avg", "dyn"] = "avg"  # avg: dataset mean C for every pair; dyn: per-prompt c_j
    label: bool = True  # false: only measure and log the consistency (any method), DPO labels unchanged


DEFAULT_PAIRWISE_TEMPLATE = """Which response answers the user's question better? Compare them for helpfulness, \
correctness, clarity and conciseness, not length or position.

User: {prompt}
<response A>{response_a}</response A>
<response B>{response_b}</response B>

Answer with the single letter of the better response."""


@dataclass
class SCIRConfig:
    """SCIR (Zhou et al. 2025): the judge and the implicit reward (rewards.implicit, its reference is the fixed
    anchor) each predict P(y1 ≻ y2) for every candidate pair of a prompt's samples; DPO trains on the pairs where
    they agree, and the loss adds λ_cons · symmetric KL between the two predictions plus λ_conf · the entropy of
    their mean. Forms and defaults not in the paper are ours (README)."""

    judge_format: Literal["pointwise", "pairwise"] = "pointwise"  # pointwise: from two score distributions
    pairwise_template: str = DEFAULT_PAIRWISE_TEMPLATE  # {prompt}, {response_a}, {response_b}
    options: list[str] = _opt(factory=lambda: ["A", "B"])  # pairwise answer tokens: first-shown, second-shown
    margin: float = _opt(0.0, lo=0.0, hi=0.5)  # agree: both predictions on the same side of 0.5 by > margin
    lambda_cons: float = _opt(1.0, lo=0.0)
    lambda_conf: float = _opt(0.1, lo=0.0)
    regularize: Literal["all", "agreed"] = "all"  # which candidate pairs carry the two added terms
    batch_size: int = _opt(32, lo=1)  # pairwise judge forward passes in the pairs stage


@dataclass
class PairsConfig:
    rule: Literal["best_vs_worst", "all_pairs"] = "best_vs_worst"  # all_pairs: every pair with a score gap (OSP)
    reward: str = "judge"  # which reward source ranks the samples
    min_margin: float = _opt(0.0, lo=0.0)  # drop a pair when its score gap ≤ this (ties always dropped)
    length_control: float | None = _opt(None, lo=0.0, hi=0.5)  # Meta-Rewarding ρ (best_vs_worst only)
    max_pairs_per_prompt: int | None = _opt(None, lo=1)  # all_pairs and SCIR candidates: largest gaps first
    label: Literal["hard", "judge_strength"] = "hard"  # judge_strength: OSP soft label P_judge(chosen ≻ rejected)


@dataclass
class LoraOptions:
    r: int = _opt(16, lo=1)
    alpha: int = _opt(32, lo=1)
    dropout: float = _opt(0.0, lo=0.0, hi=1.0)
    target_modules: list[str] | str = "all-linear"


@dataclass
class GRPORewardConfig:
    """One reward term of GRPO (rewards/functions.py): a source and its weight in TRL's weighted sum."""

    source: str  # self_certainty, judge, ptrue, likelihood, majority, verifier, repetition, length, or "pkg.mod:fn"
    weight: float = 1.0  # 0: scored and logged, not trained on
    ngram: int = _opt(4, lo=1)  # repetition: n of the repeated n-gram share
    batch_size: int = _opt(32, lo=1)  # forward passes of the sources that read the live policy


@dataclass
class TrainConfig:
    algorithm: Literal["dpo", "grpo"] = "dpo"  # grpo: samples online with the generation settings, no pairs
    beta: float = _opt(0.1, lo=0.0, lo_open=True)  # DPO's β (GRPO's KL coefficient is train.grpo.beta, TRL: 0)
    learning_rate: float = _opt(1e-6, lo=0.0, lo_open=True)
    epochs: float = _opt(1.0, lo=0.0, lo_open=True)
    batch_size: int = _opt(8, lo=1)  # per device: pairs (DPO), completions (GRPO)
    gradient_accumulation_steps: int = _opt(1, lo=1)
    lr_scheduler_type: str = "linear"
    warmup_steps: float = _opt(0.0, lo=0.0)  # steps, or a fraction of all steps when < 1 (transformers)
    max_length: int | None = None
    lora: LoraOptions | None = None  # null: full fine-tuning
    dpo: dict[str, Any] = _opt(factory=dict)  # any other trl.DPOConfig field, passed through
    grpo_rewards: list[GRPORewardConfig] = _opt(factory=list)  # GRPO's reward terms and weights
    grpo: dict[str, Any] = _opt(factory=dict)  # any other trl.GRPOConfig field (beta, loss_type, ...), passed through


# Our wording: T-REG's prompts ask for a better / a worse revision; METHODS.md gives the four qualities.
DEFAULT_TREG_BETTER = ("{prompt}\n\nWrite the best possible response: helpful, correct, coherent and concise, a "
                       "better revision of a typical answer.")
DEFAULT_TREG_WORSE = ("{prompt}\n\nWrite a poor response: unhelpful, incorrect, incoherent and verbose, a worse "
                      "revision of a typical answer.")


@dataclass
class TREGConfig:
    """T-REG (Zhou et al. 2025): token rewards r̂_t = σ(log π_ref(y_t|x_better, y_<t) − log π_ref(y_t|x_worse,
    y_<t)) − 0.5 from the round's starting model, once per pair, by contrastive prompting: each template rewrites the
    user prompt ({prompt}), then the chat template (prompts.chat_template) applies. DPO adds α · sg(σ(−βh)) ·
    (L_REG(y_w) + L_REG(y_l)) with L_REG(y) = −Σ_t β·r̂_t·log π_θ(y_t|x, y_<t)."""

    alpha: float = _opt(0.25, lo=0.0, lo_open=True)  # the paper tries 0.1, 0.25, 0.5
    better_template: str = DEFAULT_TREG_BETTER
    worse_template: str = DEFAULT_TREG_WORSE
    batch_size: int = _opt(32, lo=1)  # teacher-forced scoring passes


@dataclass
class ContrastAdaptersConfig:
    """cDPO's positive and negative models: LoRA adapters on the round's starting model, trained by SFT (loss on the
    completion only) on its correct and on its incorrect samples. Paper: r 8, lr 3e-4, 1 epoch."""

    lora: LoraOptions = field(default_factory=lambda: LoraOptions(r=8, alpha=16))
    learning_rate: float = _opt(3e-4, lo=0.0, lo_open=True)
    epochs: float = _opt(1.0, lo=0.0, lo_open=True)
    batch_size: int = _opt(16, lo=1)


@dataclass
class CDPOConfig:
    """cDPO, "Critical Tokens Matter" (Lin et al. 2025): samples graded correct / incorrect, pair = the most frequent
    correct answer vs the most frequent wrong answer; positive and negative adapters score each rejected token,
    s_t = softmax((1 + β)·z_pos − β·z_neg)[y_t]; token-weighted DPO with weights 1 − s_t on the rejected tokens and 1
    on the chosen ones.

    grading: `verifier` (ground truth: the prompts' answers), `majority` (self-consistency: correct = the prompt's
    unique most frequent answer), `auto` (verifier when every prompt has an answer, else majority)."""

    grading: Literal["auto", "verifier", "majority"] = "auto"
    adapters: ContrastAdaptersConfig = field(default_factory=ContrastAdaptersConfig)
    beta: float = _opt(1.0, lo=0.0)  # contrast strength β of the critical-token score
    reduction: Literal["sum", "mean"] = "sum"  # token-weighted margin: weighted sums, or each divided by its length
    batch_size: int = _opt(8, lo=1)  # scoring passes; each holds two (batch, length, vocab) float32 logits


@dataclass
class EvalConfig:
    greedy: bool = True
    sampled: bool = True
    temperature: float = _opt(1.0, lo=0.0, lo_open=True)
    top_p: float = _opt(1.0, lo=0.0, hi=1.0, lo_open=True)
    max_new_tokens: int | None = None  # default: generation.max_new_tokens
    batch_size: int = _opt(128, lo=1)


@dataclass
class WandbConfig:
    enabled: bool = True
    mode: Literal["auto", "offline", "online", "disabled"] = "auto"  # auto: online iff WANDB_API_KEY is set
    project: str = "selfalign"
    entity: str | None = None
    name: str | None = None
    tags: list[str] = _opt(factory=list)


@dataclass
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    console: bool = True
    log_samples: int = _opt(16, lo=0)  # rows per round in the W&B table of sampled responses


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    rounds: int = _opt(3, lo=0)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    seed_sft: SeedSFTConfig = field(default_factory=SeedSFTConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    rewards: RewardsConfig = field(default_factory=lambda: RewardsConfig(judge=JudgeConfig()))
    consistency: ConsistencyConfig | None = None
    scir: SCIRConfig | None = None
    treg: TREGConfig | None = None  # token-level DPO variants (TokenWeightedDPOTrainer); may be combined
    cdpo: CDPOConfig | None = None
    pairs: PairsConfig = field(default_factory=PairsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


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
    lo, hi, lo_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(f"{where}: {value!r} is out of range; must be {'>' if lo_open else '>='} {lo:g}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: {value!r} is out of range; must be <= {hi:g}")


def build(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a mapping; `where` is the key path used in error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'recipe'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        key = str(key) if str(key).isprintable() else repr(str(key))
        path = f"{where}.{key}" if where else key
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(fields)}"
            raise ConfigError(f"{path}: unknown key{extra}")
        converted = _convert(value, hints[key], path)
        _check_range(converted, fields[key].metadata, path)
        kwargs[key] = converted
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where + '.' if where else ''}{name}: missing; this key is required")
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


# ---------------------------------------------------------------------------------------------
# Loading a recipe file


def _apply_override(raw: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected KEY.PATH=VALUE")
    key, text = assignment.split("=", 1)
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value


_VLLM_MANAGED = {"model": "model.path", "tokenizer": "model.path", "tensor_parallel_size":
                 "generation.tensor_parallel_size", "seed": "seed", "dtype": "model.dtype",
                 "trust_remote_code": "model.trust_remote_code", "revision": "model.revision"}


def _vllm_checks(g: GenerationConfig) -> None:
    if g.backend != "vllm":
        if g.vllm or g.tensor_parallel_size != 1:
            key = "generation.vllm" if g.vllm else "generation.tensor_parallel_size"
            raise ConfigError(f"{key}: applies to generation.backend vllm only")
        return
    for key in g.vllm:
        if key in _VLLM_MANAGED:
            raise ConfigError(f"generation.vllm.{key}: set by {_VLLM_MANAGED[key]}; set it there")


def _cross_checks(recipe: Recipe) -> None:
    enabled = recipe.rewards.enabled()
    _grpo_checks(recipe)
    _vllm_checks(recipe.generation)
    dpo = recipe.train.algorithm == "dpo"
    if dpo and recipe.rounds > 0 and recipe.cdpo is None and recipe.pairs.reward not in enabled:  # cDPO grades answers
        allowed = ", ".join(enabled) or "none configured"
        raise ConfigError(f"pairs.reward: {recipe.pairs.reward!r} is not a configured reward; configured: {allowed}")
    if dpo and recipe.generation.samples_per_prompt < 2 and recipe.rounds > 0:
        raise ConfigError("generation.samples_per_prompt: must be >= 2 to build preference pairs")
    judge = recipe.rewards.judge
    if recipe.pairs.length_control is not None and recipe.pairs.rule != "best_vs_worst":
        raise ConfigError("pairs.length_control: applies to rule best_vs_worst only")
    if recipe.pairs.label == "judge_strength":
        if judge is None:
            raise ConfigError("pairs.label: judge_strength needs rewards.judge")
        if recipe.consistency is not None and recipe.consistency.label:
            raise ConfigError("pairs.label: judge_strength and consistency both set the pair label; choose one "
                              "(consistency.label: false only measures it)")
    if recipe.scir is not None:
        if recipe.consistency is not None and recipe.consistency.label:
            raise ConfigError("scir: cannot be combined with consistency (CREAM) labels; choose one "
                              "(consistency.label: false only measures it)")
        if judge is None or recipe.rewards.implicit is None:
            raise ConfigError("scir: needs rewards.judge and rewards.implicit (the two internal reward models)")
        if recipe.scir.judge_format == "pointwise" and judge.mode != "expected":
            raise ConfigError("scir.judge_format: pointwise reads score-token logits; set rewards.judge.mode: expected")
        if recipe.scir.judge_format == "pairwise":
            if len(recipe.scir.options) != 2 or len(set(recipe.scir.options)) != 2:
                raise ConfigError("scir.options: give two different answer strings (first-shown, second-shown)")
            template = recipe.scir.pairwise_template
            missing = [k for k in ("{prompt}", "{response_a}", "{response_b}") if k not in template]
            if missing:
                raise ConfigError(f"scir.pairwise_template: missing {', '.join(missing)}")
        if recipe.pairs.rule != "best_vs_worst" or recipe.pairs.length_control is not None:
            raise ConfigError("scir: builds its own candidate pairs; leave pairs.rule and pairs.length_control unset")
    if recipe.seed_sft.enabled and not (recipe.seed_sft.data or recipe.seed_sft.judge_data):
        raise ConfigError("seed_sft: enabled but neither seed_sft.data nor seed_sft.judge_data is set")
    _token_level_checks(recipe)
    if recipe.train.dpo:
        from trl import DPOConfig

        allowed = {f.name for f in dataclasses.fields(DPOConfig)}
        for key in recipe.train.dpo:
            if key not in allowed:
                hint = difflib.get_close_matches(key, sorted(allowed), n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ConfigError(f"train.dpo.{key}: not a trl.DPOConfig field{extra}")


# DPOConfig settings that TokenWeightedDPOTrainer refuses (it replaces the sigmoid loss and needs per-token
# reference log-probs).
_TOKEN_LEVEL_REFUSED = ("loss_type", "loss_weights", "f_divergence_type", "ld_alpha", "use_weighting",
                        "precompute_ref_log_probs")


def _token_level_checks(recipe: Recipe) -> None:
    """treg / cdpo: token-weighted DPO, which has no soft labels, no SCIR terms and no other DPO loss."""
    names = [n for n in ("treg", "cdpo") if getattr(recipe, n) is not None]
    if not names:
        return
    first = names[0]
    if recipe.train.algorithm != "dpo":
        raise ConfigError(f"{first}: token-level DPO needs train.algorithm: dpo, not {recipe.train.algorithm!r}")
    if recipe.scir is not None:
        raise ConfigError(f"{first}: cannot be combined with scir (each has its own DPO loss); choose one")
    if recipe.consistency is not None and recipe.consistency.label:
        raise ConfigError(f"{first}: token-level DPO has no soft labels; set consistency.label: false or drop "
                          f"consistency")
    if recipe.pairs.label != "hard":
        raise ConfigError(f"{first}: token-level DPO has no soft labels; leave pairs.label: hard")
    for key in _TOKEN_LEVEL_REFUSED:
        if key in recipe.train.dpo:
            raise ConfigError(f"train.dpo.{key}: not supported with {first} (token-weighted DPO replaces the "
                              f"sigmoid loss and reads per-token reference log-probs)")
    if recipe.treg is not None:
        for key in ("better_template", "worse_template"):
            if "{prompt}" not in getattr(recipe.treg, key):
                raise ConfigError(f"treg.{key}: missing {{prompt}} (where the user prompt goes)")
        if recipe.treg.better_template == recipe.treg.worse_template:
            raise ConfigError("treg.worse_template: equal to treg.better_template, so every token reward is 0")
    if recipe.cdpo is not None and (recipe.pairs.rule != "best_vs_worst" or recipe.pairs.length_control is not None):
        raise ConfigError("cdpo: builds its own pairs (most frequent correct vs most frequent wrong answer); leave "
                          "pairs.rule and pairs.length_control unset")


# trl.GRPOConfig fields a recipe sets through its typed keys (each setting has one place).
_GRPO_MANAGED = {
    "num_generations": "generation.samples_per_prompt", "temperature": "generation.temperature",
    "top_p": "generation.top_p", "max_completion_length": "generation.max_new_tokens",
    "reward_weights": "train.grpo_rewards[].weight", "learning_rate": "train.learning_rate",
    "num_train_epochs": "train.epochs", "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "lr_scheduler_type": "train.lr_scheduler_type", "warmup_steps": "train.warmup_steps", "seed": "seed",
    "output_dir": "the run directory",
}


def _grpo_checks(recipe: Recipe) -> None:
    """train.algorithm grpo: its reward terms, its passthrough keys, and generation batches of whole prompt groups."""
    train, g = recipe.train, recipe.generation
    if train.algorithm != "grpo":
        for key in ("grpo_rewards", "grpo"):
            if getattr(train, key):
                raise ConfigError(f"train.{key}: applies to train.algorithm grpo only")
        return
    dpo_only = [k for k in ("consistency", "scir", "treg", "cdpo") if getattr(recipe, k, None) is not None]
    if dpo_only:
        raise ConfigError(f"{dpo_only[0]}: a DPO method; it cannot be combined with train.algorithm grpo")
    if train.dpo:
        raise ConfigError("train.dpo: DPOConfig settings; with train.algorithm grpo use train.grpo")
    if train.max_length is not None:
        raise ConfigError("train.max_length: DPO only; GRPO's completions end at generation.max_new_tokens")
    if g.stop:
        raise ConfigError("generation.stop: not supported with train.algorithm grpo (TRL's sampler stops at EOS)")
    if g.backend != "transformers":
        raise ConfigError("generation.backend: GRPO samples inside TRL; for vLLM set train.grpo.use_vllm: true")
    if g.samples_per_prompt < 2:
        raise ConfigError("generation.samples_per_prompt: GRPO needs >= 2 completions per prompt (one group)")
    if g.temperature == 0:
        raise ConfigError("generation.temperature: GRPO samples its groups; 0 (greedy) is not allowed")
    if recipe.rounds > 0 and not train.grpo_rewards:
        raise ConfigError("train.grpo_rewards: GRPO needs at least one reward, e.g. [{source: self_certainty}]")
    from trl import GRPOConfig

    allowed = {f.name for f in dataclasses.fields(GRPOConfig)}
    for key in train.grpo:
        if key in _GRPO_MANAGED:
            raise ConfigError(f"train.grpo.{key}: set by {_GRPO_MANAGED[key]}; set it there")
        if key not in allowed:
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"train.grpo.{key}: not a trl.GRPOConfig field{extra}")
    from selfalign.rewards.functions import check_source

    for k, spec in enumerate(train.grpo_rewards):
        where = f"train.grpo_rewards[{k}].source"
        if spec.source in [s.source for s in train.grpo_rewards[:k]]:
            raise ConfigError(f"{where}: {spec.source!r} is listed twice")
        check_source(spec.source, where, recipe.rewards)
    # One generation batch (per process) must hold whole groups, and the round must have prompts for one batch.
    gen_batch, steps = train.grpo.get("generation_batch_size"), train.grpo.get("steps_per_generation")
    if gen_batch is not None and steps is not None:
        raise ConfigError("train.grpo.steps_per_generation: set it or train.grpo.generation_batch_size, not both")
    if gen_batch is None:
        steps_key = "train.grpo.steps_per_generation" if steps is not None else "train.gradient_accumulation_steps"
        where, size = f"train.batch_size × {steps_key}", train.batch_size * (steps or train.gradient_accumulation_steps)
    else:
        where, size = "train.grpo.generation_batch_size", gen_batch
    if not isinstance(size, int):
        return  # TRL reports its own type errors
    if size % g.samples_per_prompt:
        raise ConfigError(f"{where.split(' ')[0]}: {where} = {size} completions per generation batch is not a multiple "
                          f"of generation.samples_per_prompt = {g.samples_per_prompt}")
    if recipe.rounds > 0 and size // g.samples_per_prompt > recipe.prompts.train_per_round:
        raise ConfigError(f"prompts.train_per_round: {recipe.prompts.train_per_round} prompts cannot fill one GRPO "
                          f"generation batch of {size // g.samples_per_prompt} prompts ({where} = {size} completions / "
                          f"{g.samples_per_prompt}); raise it or lower train.batch_size")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe; raises ConfigError with a one-line message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read recipe ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{loc} invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys, got {type(raw).__name__}")
    return recipe_from_dict(raw, overrides, source=str(path))


def recipe_from_dict(raw: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "recipe") -> Recipe:
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy
    for assignment in overrides:
        try:
            _apply_override(raw, assignment)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    try:
        recipe = build(Recipe, raw)
        _cross_checks(recipe)
    except ConfigError as e:
        failed = str(e).split(":", 1)[0]
        set_keys = [a.split("=", 1)[0].strip() for a in overrides]
        from_set = any(failed == k or failed.startswith(k + ".") or k.startswith(failed + ".") for k in set_keys)
        origin = " (from --set)" if from_set else ""
        raise ConfigError(f"{source}: {e}{origin}") from None
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False)
