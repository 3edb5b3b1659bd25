"""Command line: `selfalign run RECIPE [--output-dir DIR] [--set key.path=value ...]` (a recipe file or a shipped
recipe's name), `selfalign report RUN_DIR`, `selfalign compare RUN_DIR RUN_DIR ...`, `selfalign recipes [cp NAME DEST]`,
`selfalign push RUN_DIR --repo-id OWNER/NAME`, `selfalign env`, `selfalign eval MODEL --evaluators verifier,win_rate
...` (the evaluators outside a run) or `selfalign eval MODEL --prompts SOURCE --best-of 1,2,4,8 ...` (best-of-N),
`selfalign sandbox build`, `selfalign critical-tokens RUN_DIR` (cDPO's critical tokens against the sandbox's known
first errors). Also `python -m selfalign` and `accelerate launch -m selfalign run`.

A user mistake prints one line to stderr and exits with code 2; no traceback. So does a run that stopped for a reason
the user can act on (`selfalign.errors`: a full disk or a missing permission while writing, a loss that is not
finite).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

from selfalign.config import ConfigError
from selfalign.errors import RunStopped


def _quiet_libraries(quiet: bool = False) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if quiet and os.environ.get("WANDB_MODE") == "offline":  # transformers prints a line to stdout on this import
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            import transformers.integrations.integration_utils  # noqa: F401
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices inside transformers/TRL
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def cmd_run(args: argparse.Namespace) -> int:
    from selfalign import catalog, distributed, pipeline
    from selfalign.recipe import load_recipe

    path = catalog.recipe_path(args.recipe)
    recipe = catalog.resolve_data_paths(load_recipe(path, args.set or []))
    output_dir = Path(args.output_dir or Path("runs") / path.stem)
    summary = pipeline.run(recipe, output_dir)
    last = summary["rounds"][-1]["eval"]
    if not distributed.is_main():
        return 0
    written = [] if args.no_report else _report(output_dir)
    if not args.quiet:
        from selfalign.evaluators import configured, headline_columns

        keys = ["accuracy_greedy", "accuracy_sampled", "mean_response_tokens"]
        keys += [k for _, k in headline_columns(configured(recipe.eval), last) if k not in keys]
        print(f"run finished: {output_dir} (last round: "
              + ", ".join(f"{k}={last[k]:.3f}" for k in keys if isinstance(last.get(k), float)) + ")")
        if written:
            print(f"report: {written[0]}")
    return 0


def _report(output_dir: Path) -> list[Path]:
    """The run's report at the end of `selfalign run`; a failure to draw it is a warning, never a failed run."""
    from selfalign.report import report_run

    try:
        return report_run(output_dir)
    except Exception as e:  # noqa: BLE001 - the run itself succeeded
        logging.getLogger("selfalign").warning("the run finished, but its report failed (%s: %s); "
                                               "`selfalign report %s` retries it", type(e).__name__, e, output_dir)
        return []


def cmd_report(args: argparse.Namespace) -> int:
    from selfalign.errors import WriteFailed
    from selfalign.report import report_run

    if args.samples < 0:
        raise ConfigError("--samples must be >= 0")
    try:
        written = report_run(args.run_dir, args.output, samples=args.samples)
    except (PermissionError, WriteFailed) as e:  # a teammate's run: readable, not writable
        if isinstance(e, WriteFailed) and e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise ConfigError(f"{e.filename}: not writable; write the report elsewhere with --output DIR") from None
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from selfalign.report import compare_runs

    written = compare_runs(args.run_dirs, args.output, labels=args.label)
    md = (Path(args.output) / "compare.md").read_text()
    before, _, after = md.partition("## Figures")
    print(before.rstrip() + "\n\n" + after[after.find("## Per metric"):].rstrip())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from selfalign import catalog

    if args.recipes_command == "cp":
        print(catalog.copy(args.name, args.dest, force=args.force))
        return 0
    if args.recipes_command == "path":
        print(catalog.find(args.name))
        return 0
    recipes = catalog.shipped()
    width = max(map(len, recipes), default=0)
    launch = {k: v for k, v in recipes.items() if k.startswith(catalog.LAUNCH_CONFIGS + "/")}
    print(f"Recipes (selfalign run NAME; selfalign recipes cp NAME DEST to edit a copy), in {catalog.recipes_root()}:")
    for name, path in recipes.items():
        if name not in launch:
            print(f"  {name:<{width}}  {catalog.description(path, 110)}")
    print("Launch configs (accelerate launch --config_file $(selfalign recipes path NAME) -m selfalign run ...):")
    for name, path in launch.items():
        print(f"  {name:<{width}}  {catalog.description(path, 110)}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from selfalign.env import format_report, report

    print(format_report(report()))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from selfalign.hub import push

    where = push(args.run_dir, args.repo_id, args.round, private=args.private, revision=args.revision,
                 licence=args.license, merge=args.merge, to_dir=args.to_dir, message=args.message)
    print(f"{'wrote' if args.to_dir else 'pushed to'} {where}")
    return 0


def cmd_sandbox_build(args: argparse.Namespace) -> int:
    import yaml

    from selfalign.config import build
    from selfalign.sandbox.cache import sandbox_model_path
    from selfalign.sandbox.config import SandboxModelConfig

    overrides = {}
    for assignment in args.set or []:
        key, _, value = assignment.partition("=")
        overrides[key] = yaml.safe_load(value)
    cfg = build(SandboxModelConfig, overrides, "model.sandbox")
    print(sandbox_model_path(cfg, shipped=False))
    return 0


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")  # owner/name, loadable from the HF cache


def _check_eval_source(args: argparse.Namespace) -> str | None:
    """The split of `--prompts` (None: no prompts given), after the checks both modes of `selfalign eval` share."""
    if args.num_prompts is not None and args.num_prompts < 1:
        raise ConfigError("--num-prompts must be >= 1")
    if args.model != "sandbox" and args.model != "smollm2-135m-instruct" and not Path(args.model).exists() \
            and not _HUB_ID.match(args.model):
        raise ConfigError(f"{args.model}: no such model directory (give a model directory or 'sandbox')")
    if args.prompts is None:
        return None
    sandbox_source = args.prompts.startswith("sandbox://")
    if sandbox_source and args.num_prompts is None:
        raise ConfigError(f"{args.prompts}: a sandbox source is unbounded; give --num-prompts")
    file_source = Path(args.prompts).suffix in (".jsonl", ".json")
    split = args.split or ("eval" if sandbox_source else None if file_source else "test")
    if sandbox_source and split not in ("train", "eval"):
        raise ConfigError(f"--split: a sandbox source has the splits train and eval, not {split!r}")
    return split


def _load_eval_model(name: str):
    from selfalign import models

    return models.load_for_eval(name)


def cmd_eval(args: argparse.Namespace) -> int:
    if args.evaluators is not None:
        if args.best_of is not None or args.select is not None or args.borda_power is not None:
            raise ConfigError("--evaluators runs the evaluators; --best-of / --select / --borda-power run best-of-N "
                              "selection: use one or the other")
        return _cmd_eval_evaluators(args)
    if args.recipe is not None or args.baseline is not None or args.set:
        raise ConfigError("--recipe, --baseline and --set apply to --evaluators")
    from selfalign.best_of_n import BestOfNSettings, parse_best_of, parse_rules, run_best_of_n, write_report

    temperature = 1.0 if args.temperature is None else args.temperature
    top_p = 1.0 if args.top_p is None else args.top_p
    max_new_tokens = 256 if args.max_new_tokens is None else args.max_new_tokens
    batch_size = 64 if args.batch_size is None else args.batch_size
    borda_power = 0.5 if args.borda_power is None else args.borda_power
    settings = BestOfNSettings(best_of=parse_best_of(args.best_of or "1,2,4,8"),
                               rules=parse_rules(args.select or "self_certainty,borda,majority,likelihood"),
                               temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, seed=args.seed, borda_power=borda_power)
    for message, ok in (("--temperature must be >= 0", temperature >= 0),
                        ("--temperature 0 (greedy) gives one sample per prompt; use --best-of 1",
                         temperature > 0 or settings.best_of == [1]),
                        ("--top-p must be in (0, 1]", 0 < top_p <= 1),
                        ("--max-new-tokens must be >= 1", max_new_tokens >= 1),
                        ("--batch-size must be >= 1", batch_size >= 1),
                        ("--borda-power must be >= 0", borda_power >= 0),
                        ("--num-prompts must be >= 1", args.num_prompts is None or args.num_prompts >= 1)):
        if not ok:
            raise ConfigError(message)
    if args.prompts is None:
        raise ConfigError("--prompts: best-of-N needs prompts (sandbox://arith?..., a .jsonl file, or an HF dataset)")
    split = _check_eval_source(args)

    from selfalign.data.prompts import load_prompts

    prompts = load_prompts(args.prompts, split=split or "test", sandbox_split=split or "eval", limit=args.num_prompts)
    model, tokenizer = _load_eval_model(args.model)
    t0 = time.perf_counter()
    report, records = run_best_of_n(model, tokenizer, prompts.rows, settings,
                                    judge_template="sandbox" if prompts.verifier == "sandbox" else "srlm")
    report = {"model": args.model, "prompts": args.prompts, "split": split, **report,
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    written = write_report(report, records, args.output or "runs/best_of_n")
    if report["accuracy"] is not None:
        top = max(report["best_of"])
        print(f"best-of-{top} accuracy: " + ", ".join(f"{rule}={by_n[str(top)]:.3f}"
                                                       for rule, by_n in report["accuracy"].items()))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _cmd_eval_evaluators(args: argparse.Namespace) -> int:
    """`selfalign eval MODEL --evaluators ...`: the evaluators of a recipe's `eval` section (or their defaults) on
    MODEL, outside a run."""
    from selfalign import catalog
    from selfalign.config import EvalConfig, apply_override, build, load_yaml
    from selfalign.evaluators import EVALUATORS, configured
    from selfalign.evaluators.base import RUN_BASELINES

    names = [n.strip() for n in args.evaluators.split(",") if n.strip()]
    if not names:
        raise ConfigError("--evaluators: give evaluator names, e.g. verifier,win_rate,alpaca_eval")
    raw_eval: dict = {}
    if args.recipe is not None:
        raw_eval = dict(load_yaml(catalog.recipe_path(args.recipe)).get("eval") or {})
    chosen = raw_eval.get("evaluators")
    recipe_instances = {n: {} for n in chosen} if isinstance(chosen, list) else dict(chosen or {})
    instances: dict = {}
    for n in names:
        if n in recipe_instances:
            instances[n] = recipe_instances[n] or {}
        elif n in EVALUATORS:
            instances[n] = {}
        else:
            from selfalign.config import did_you_mean

            raise ConfigError(f"--evaluators: {n!r} is neither a registered evaluator ({', '.join(EVALUATORS)}) "
                              f"nor an instance of --recipe{did_you_mean(n, [*EVALUATORS, *recipe_instances])}")
    raw = {"eval": {**raw_eval, "evaluators": instances}}
    for flag, key in (("temperature", "temperature"), ("top_p", "top_p"), ("max_new_tokens", "max_new_tokens"),
                      ("batch_size", "batch_size")):
        if getattr(args, flag) is not None:
            raw["eval"][key] = getattr(args, flag)
    for assignment in args.set or []:
        apply_override(raw, assignment)
    if set(raw) != {"eval"}:
        raise ConfigError(f"--set: only eval.* keys apply here, not {', '.join(sorted(set(raw) - {'eval'}))}")
    eval_cfg = build(EvalConfig, raw["eval"], "eval")
    if args.baseline is not None:
        for name, options in eval_cfg.evaluators.items():
            kind = (options or {}).get("type", name)
            fields = EVALUATORS[kind].config.__dataclass_fields__ if kind in EVALUATORS else {}
            if options is not None and "baseline" in fields:
                options["baseline"] = args.baseline
    listed = configured(eval_cfg)
    for inst in listed:
        inst.check_available()
        baseline = getattr(inst.cfg, "baseline", None)
        if baseline in RUN_BASELINES:
            raise ConfigError(f"eval.evaluators.{inst.name}.baseline: {baseline!r} names a model of a run; outside "
                              "a run give --baseline MODEL_OR_OUTPUTS_FILE")
    needs_rows = any(i.spec.needs for i in listed)
    split = _check_eval_source(args)
    if needs_rows and args.prompts is None:
        raise ConfigError("--prompts: " + ", ".join(i.name for i in listed if i.spec.needs) + " need held-out "
                          "prompts (sandbox://arith?..., a .jsonl file, or an HF dataset)")
    rows = []
    if args.prompts is not None:
        from selfalign.data.prompts import load_prompts

        rows = load_prompts(args.prompts, split=split or "test", sandbox_split=split or "eval",
                            limit=args.num_prompts).rows
    from selfalign.evaluators.standalone import StandaloneEvalContext, headline_text, run_evaluators

    model, tokenizer = _load_eval_model(args.model)
    k = max((i.spec.samples_per_prompt(i.cfg) for i in listed if i.spec.samples_per_prompt), default=0)
    out = Path(args.output or "runs/eval")
    ctx = StandaloneEvalContext(model, tokenizer, args.model, rows, eval_cfg, out, seed=args.seed,
                                max_new_tokens=eval_cfg.max_new_tokens or 256, k_samples=k)
    metrics, seconds = run_evaluators(listed, ctx)
    print(headline_text(listed, metrics))
    print("seconds: " + ", ".join(f"{n}={s:.1f}" for n, s in seconds.items()))
    print(f"wrote {out / 'eval.json'}")
    return 0


def cmd_critical_tokens(args: argparse.Namespace) -> int:
    from selfalign.critical_tokens import analyze_run, write_report

    for message, ok in (("--rollouts must be >= 0", args.rollouts >= 0),
                        ("--rollout-solutions must be >= 1", args.rollout_solutions >= 1)):
        if not ok:
            raise ConfigError(message)
    report, records = analyze_run(args.run_dir, args.round, args.rollout_solutions, args.rollouts, args.seed)
    for e in report["rounds"]:
        print(f"round {e['round']}: {e['solutions']} wrong solutions; top-1 / top-3 precision: "
              + ", ".join(f"{name} {p['top1']:.3f} / {p['top3']:.3f}" for name, p in e["precision"].items()
                          if p["top1"] is not None))
    written = write_report(report, records, args.output or args.run_dir)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def make_parser() -> argparse.ArgumentParser:
    from selfalign import __version__

    parser = argparse.ArgumentParser(prog="selfalign", description="Self-improving language models: generate, "
                                     "reward with the model's own reward models, train with TRL, repeat.")
    parser.add_argument("--version", action="version", version=f"selfalign {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress and no log lines: only the per-round "
                        "table (and warnings)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a recipe (resumes when OUTPUT_DIR holds an unfinished run)")
    run.add_argument("recipe", help="a recipe YAML file, or the name of a shipped recipe (`selfalign recipes`)")
    run.add_argument("--output-dir", help="run directory (default: runs/<recipe name>)")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a recipe value")
    run.add_argument("--no-report", action="store_true", help="do not write report.html / report.md at the end")
    run.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                     help="only the per-round table (as `selfalign -q run`)")
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="write RUN_DIR/report.html (self-contained, with plots) and report.md")
    rep.add_argument("run_dir", help="a run directory (finished or not)")
    rep.add_argument("--output", help="where to write them (default: RUN_DIR)")
    rep.add_argument("--samples", type=int, default=12, help="chosen vs rejected pairs (or rollouts) shown per "
                     "round (default 12)")
    rep.set_defaults(func=cmd_report)
    cmp = sub.add_parser("compare", help="the same metrics across runs: one table per metric and one set of plots")
    cmp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cmp.add_argument("--label", action="append", help="a name per run, in order (repeat it; runs with the same label "
                     "are averaged: mean ± std); default: the directory names")
    cmp.add_argument("--output", default="runs/compare", help="where to write compare.html, compare.md and "
                     "compare.json (default runs/compare)")
    cmp.set_defaults(func=cmd_compare)
    rec = sub.add_parser("recipes", help="list the shipped recipes; `recipes cp NAME DEST` copies one")
    rec.set_defaults(func=cmd_recipes, recipes_command=None)
    rec_sub = rec.add_subparsers(dest="recipes_command")
    rcp = rec_sub.add_parser("cp", help="copy a shipped recipe to edit it")
    rcp.add_argument("name", help="e.g. quickstart, sandbox/cream")
    rcp.add_argument("dest", help="a file, or a directory to copy it into")
    rcp.add_argument("--force", action="store_true", help="overwrite DEST")
    rpath = rec_sub.add_parser("path", help="print a shipped recipe's (or launch config's) file path")
    rpath.add_argument("name")
    env = sub.add_parser("env", help="versions, CUDA and GPUs: what a bug report needs")
    env.set_defaults(func=cmd_env)
    push = sub.add_parser("push", help="push a round's model or LoRA adapter to the Hugging Face Hub with a model card")
    push.add_argument("run_dir")
    push.add_argument("--repo-id", required=True, help="OWNER/NAME on the Hub")
    push.add_argument("--round", type=int, help="the round to push (default: the last trained round)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--revision", help="a branch to push to (created if missing; default main)")
    push.add_argument("--license", help="the card's licence id (e.g. apache-2.0, llama3); default: the base model's "
                      "when selfalign knows it, else 'other'")
    push.add_argument("--merge", action="store_true", help="LoRA: push merged full weights even where the adapter "
                      "alone would do")
    push.add_argument("--message", help="the commit message")
    push.add_argument("--to-dir", help="write the folder (weights + README.md model card) here instead of pushing")
    push.set_defaults(func=cmd_push)
    ev = sub.add_parser("eval", help="evaluate a model: the evaluators (--evaluators), or best-of-N selection")
    ev.add_argument("model", help="a model directory, or 'sandbox' (the built-in sandbox model)")
    ev.add_argument("--prompts", help="held-out prompts: sandbox://arith?..., a .jsonl file, or an HF dataset")
    ev.add_argument("--split", help="sandbox: train or eval (default eval, the held-out problems); "
                    "HF dataset: its split (default test)")
    ev.add_argument("--num-prompts", type=int, help="evaluate the first K rows (default all; needed for sandbox)")
    ev.add_argument("--evaluators", metavar="NAME,...", help="run these evaluators (verifier, lm_eval, win_rate, "
                    "alpaca_eval, bon_win_rate, reward_auroc, or instances of --recipe's eval.evaluators) instead "
                    "of best-of-N selection")
    ev.add_argument("--recipe", help="--evaluators: take the eval section (and evaluator options) of this recipe")
    ev.add_argument("--baseline", help="--evaluators: the baseline of win_rate / bon_win_rate: a model path, or a "
                    ".json / .jsonl file of reference outputs")
    ev.add_argument("--set", action="append", metavar="eval.KEY=VALUE", help="--evaluators: override an eval "
                    "setting, e.g. eval.evaluators.lm_eval.tasks=[gsm8k]")
    ev.add_argument("--best-of", metavar="N,N,...", help="best-of-N: sample counts (default 1,2,4,8)")
    ev.add_argument("--select", metavar="RULE,...",
                    help="best-of-N: selection rules: majority, borda, or any registered reward that needs no other "
                    "model (self_certainty, likelihood, judge, ptrue, verifier, ...); default "
                    "self_certainty,borda,majority,likelihood")
    ev.add_argument("--temperature", type=float, help="default 1.0 (--evaluators: the recipe's eval.temperature)")
    ev.add_argument("--top-p", type=float, help="default 1.0")
    ev.add_argument("--max-new-tokens", type=int, help="default 256")
    ev.add_argument("--batch-size", type=int, help="sequences per generate / scoring pass (default 64; "
                    "--evaluators: eval.batch_size)")
    ev.add_argument("--borda-power", type=float, help="best-of-N: p in (N − r + 1)^p (0: majority voting; "
                    "default 0.5)")
    ev.add_argument("--output", help="report directory (default runs/best_of_n, --evaluators: runs/eval)")
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=cmd_eval)
    sandbox = sub.add_parser("sandbox", help="the built-in sandbox task and model")
    sandbox_sub = sandbox.add_subparsers(dest="sandbox_command", required=True)
    sb = sandbox_sub.add_parser("build", help="build (or find in the cache) the sandbox base model; prints its path "
                                "(the default settings' model also ships with the package; this rebuilds it)")
    sb.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a SandboxModelConfig field")
    sb.set_defaults(func=cmd_sandbox_build)
    ct = sub.add_parser("critical-tokens", help="cDPO: are the lowest-scored tokens of wrong sandbox solutions their "
                        "first wrong tokens? precision against baselines, and the rollout check")
    ct.add_argument("run_dir", help="a run directory whose pairs carry token scores (cdpo or treg recipe)")
    ct.add_argument("--round", type=int, action="append", help="round to analyse (repeatable; default: every round "
                    "with token scores)")
    ct.add_argument("--rollouts", type=int, default=8, help="continuations sampled per prefix (0: no rollout check)")
    ct.add_argument("--rollout-solutions", type=int, default=16, help="wrong solutions in the rollout check")
    ct.add_argument("--seed", type=int, default=0)
    ct.add_argument("--output", help="report directory (default: RUN_DIR)")
    ct.set_defaults(func=cmd_critical_tokens)
    return parser


def main(argv: list[str] | None = None) -> int:
    from selfalign import progress

    args = make_parser().parse_args(argv)
    main_process = os.environ.get("RANK", "0") == "0"  # under a launcher, the other processes log warnings only
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet or not main_process else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    progress.configure("quiet" if args.quiet else "auto")
    if args.quiet or not main_process:  # DeepSpeed logs its warnings to stdout, where the per-round table goes
        logging.getLogger("DeepSpeed").addFilter(lambda record: record.levelno >= logging.ERROR)
    _quiet_libraries(args.quiet)
    try:
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if args.func is not cmd_run and processes > 1:
            raise ConfigError(f"selfalign {args.command}: runs in one process ({processes} were launched); start it "
                              "without accelerate launch (only `selfalign run` shares its work between processes)")
        return args.func(args)
    except (ConfigError, RunStopped) as e:
        print(f"selfalign: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a library's write (a trainer's checkpoint, W&B) on a full disk or without permission
        from selfalign.artifacts import WRITE_ERRORS, write_failed

        if e.errno not in WRITE_ERRORS:
            raise
        print(f"selfalign: error: {write_failed(e.filename or 'a file', e, cleaned=False)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfalign: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
