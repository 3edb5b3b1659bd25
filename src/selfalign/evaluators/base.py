"""What an evaluator is given and what it returns, and what the registry knows about each.

An evaluator measures one model, M_t of a round (or the model `selfalign eval` is given), and returns

    run(cfg, ctx, name) -> EvalResult(metrics, columns, samples)

`metrics` are flat numbers for eval.json (the stage puts them under `<name>/`, except the verifier's legacy keys);
`columns` are per held-out prompt (merged into eval_samples.jsonl, so the W&B eval table shows them); `samples` are
any other records (written to `eval/<name>_samples.jsonl` and a W&B table). The context (`EvalContext`) offers
the held-out rows, the model's responses to them, K samples per prompt, a baseline's responses and samples, and
other models by role or path, each computed once; a round (`stages/evaluate.py`) and `selfalign eval`
(`evaluators/standalone.py`) each implement it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfalign.config import ConfigError

#: model roles a judge or scorer may name (otherwise a model path or hub id)
ROLES = ("policy", "initial", "base", "previous")
#: baselines resolved from the run directory (otherwise a model path, or a .json / .jsonl file of outputs)
RUN_BASELINES = ("initial", "previous")


@dataclass
class EvalResult:
    metrics: dict[str, float | int | None]
    columns: dict[str, list] = field(default_factory=dict)  # column → one value per held-out prompt
    samples: list[dict] = field(default_factory=list)  # other records (W&B table, <name>_samples.jsonl)


@dataclass
class Outputs:
    """A model's responses to the held-out prompts, one per prompt, with their lengths in tokens."""

    texts: list[str]
    tokens: list[int]


@dataclass(frozen=True)
class EvaluatorSpec:
    """A registered evaluator: its type name in recipes, its options (a dataclass), what it does, and

    - run(cfg, ctx, name) -> EvalResult;
    - headline(cfg, metrics, name) -> [(console label, eval.json key)]: the numbers the per-round table shows;
    - needs: `responses` (the held-out responses of `eval.greedy` / `eval.sampled`), `samples` (K per prompt);
    - check(cfg, eval_cfg, where): recipe checks of its options (eval_cfg: the `eval` section);
    - legacy: its metrics keep the top-level eval.json keys of before the registry (the verifier's);
    - available(where): raises a one-line ConfigError before a run starts when it cannot run (a missing extra).
    """

    name: str
    config: type
    run: Callable[[Any, EvalContext, str], EvalResult]
    summary: str
    headline: Callable[[Any, dict, str], list[tuple[str, str]]]
    needs: tuple[str, ...] = ()
    check: Callable[[Any, Any, str], None] | None = None
    samples_per_prompt: Callable[[Any], int] | None = None  # needs `samples`: how many per prompt
    legacy: bool = False
    available: Callable[[str], None] | None = None  # before a run starts: ConfigError(where) when it cannot run


def default_mode(decoding: str | None, eval_cfg: Any, where: str) -> str:
    """The decoding of the held-out responses an evaluator reads: `decoding`, or greedy when `eval.greedy` is on,
    else sampled; a ConfigError when that mode is off in `eval`."""
    mode = decoding or ("greedy" if eval_cfg.greedy else "sampled")
    if not getattr(eval_cfg, mode):
        raise ConfigError(f"{where}.decoding: {mode} responses are off (eval.{mode}: false)")
    return mode


class EvalContext:
    """The services evaluators share (subclasses: a round's, `selfalign eval`'s). Attributes: `rows` (held-out prompt
    rows with `prompt_text`), `tokenizer`, `eval_cfg` (the `eval` section), `seed`, `out_dir` (where evaluators write
    files), `generator` (the model's name in exports), `round` (None outside a run), `main` (this process writes)."""

    rows: list[dict]
    tokenizer: Any
    eval_cfg: Any
    seed: int
    out_dir: Path
    generator: str
    round: int | None = None
    main: bool = True
    stop: tuple[str, ...] = ()

    @property
    def verifiable(self) -> bool:
        from selfalign.rewards.verifier import is_sandbox_row

        return bool(self.rows) and all(r.get("answer") is not None or is_sandbox_row(r) for r in self.rows)

    @property
    def max_new_tokens(self) -> int:
        raise NotImplementedError

    def outputs(self, mode: str) -> Outputs:
        """The model's held-out responses, `greedy` or `sampled` (eval.temperature / top_p)."""
        raise NotImplementedError

    def samples(self, k: int) -> list[list[str]]:
        """k sampled responses per held-out prompt (eval.temperature / top_p), the same for every evaluator."""
        raise NotImplementedError

    def baseline_outputs(self, baseline: str, mode: str, where: str) -> list[str]:
        """A baseline's held-out responses: a run's `initial` / `previous` model, a model path, or a file."""
        raise NotImplementedError

    def baseline_samples(self, baseline: str, k: int, where: str) -> list[list[str]]:
        raise NotImplementedError

    def model(self, spec: str, where: str) -> tuple[Any, Any]:
        """(model, tokenizer) by role (`policy`, `initial`, `base`, `previous`) or model path, in eval mode."""
        raise NotImplementedError

    def roles(self) -> Callable[[str], Any] | None:
        """The run's other models by role for rewards that read one (`implicit`), None outside a run."""
        return None

    def reward_names(self) -> list[str]:
        """The internal rewards a recipe configures (outside a run: two that need no other model)."""
        return ["likelihood", "self_certainty"]

    def reward_options(self, name: str, where: str) -> Any:
        """Reward `name`'s options: the recipe's `rewards.<name>` when it has them, else the defaults."""
        from selfalign.rewards import reward_config

        return reward_config(name, None, where)


class ModelsByPath:
    """Models loaded from a path (a judge, a scorer, a baseline), once each, and what they generate."""

    def __init__(self, device=None):
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._device = device

    def load(self, path: str, where: str) -> tuple[Any, Any]:
        from selfalign import models
        from selfalign.config import ModelConfig

        if path not in self._loaded:
            cfg = ModelConfig(path=path)
            try:
                directory = models.base_model_path(cfg)
                tokenizer = models.load_tokenizer(directory, cfg)
                model = models.load_model(directory, cfg, self._device or models.default_device()).eval()
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
            self._loaded[path] = (model, tokenizer)
        return self._loaded[path]


def generate_outputs(model, tokenizer, rows: list[dict], mode: str, eval_cfg: Any, max_new_tokens: int, seed: int,
                     stop=(), num_samples: int = 1) -> list[list[Any]]:
    """`num_samples` responses per row from `model` (its own chat template), greedy or with eval's sampling."""
    import torch

    from selfalign.data.prompts import render_prompt
    from selfalign.generation import generate

    prompts = [render_prompt(tokenizer, r) for r in rows]
    torch.manual_seed(seed)
    return generate(model, tokenizer, prompts, num_samples=num_samples,
                    temperature=0.0 if mode == "greedy" else eval_cfg.temperature, top_p=eval_cfg.top_p,
                    max_new_tokens=max_new_tokens, batch_size=eval_cfg.batch_size, stop=list(stop),
                    with_logprobs=False)


def read_reference_outputs(path: str, rows: list[dict], where: str) -> list[str]:
    """One reference output per held-out row from a file: AlpacaEval's model-outputs JSON (a list of
    {instruction, output, ...}) or JSONL rows with `output` (or `response`) and `id` / `prompt_id` or
    `instruction` / `prompt`. Rows are matched by id when the file has ids, else by the prompt text."""
    import json

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{where}: {path}: no such file of reference outputs")
    try:
        text = p.read_text(encoding="utf-8")
        records = json.loads(text) if p.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: {path}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ConfigError(f"{where}: {path}: expected a list of objects")
    by_id, by_prompt = {}, {}
    for i, r in enumerate(records):
        output = r.get("output", r.get("response"))
        if not isinstance(output, str):
            raise ConfigError(f"{where}: {path}: row {i + 1} has no string 'output'")
        key = r.get("id", r.get("prompt_id"))
        if key is not None:
            by_id[str(key)] = output
        prompt = r.get("instruction", r.get("prompt"))
        if isinstance(prompt, str):
            by_prompt[prompt] = output
    out = []
    for row in rows:
        found = by_id.get(str(row.get("id"))) if by_id else None
        if found is None:
            found = by_prompt.get(row["prompt"])
        if found is None:
            raise ConfigError(f"{where}: {path} has no output for held-out prompt {row.get('id')!r} "
                              f"({row['prompt'][:60]!r})")
        out.append(found)
    return out


def is_output_file(baseline: str) -> bool:
    return Path(baseline).suffix in (".json", ".jsonl")
