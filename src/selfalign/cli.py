"""Command line: `selfalign run RECIPE.yaml [--output-dir DIR] [--set key.path=value ...]`,
`selfalign eval MODEL --prompts SOURCE --best-of 1,2,4,8 ...` (best-of-N selection), `selfalign sandbox build`,
`selfalign critical-tokens RUN_DIR` (cDPO's critical tokens against the sandbox's known first errors).
Also `python -m selfalign` and `accelerate launch -m selfalign run ...`.

A user mistake prints one line to stderr and exits with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

from selfalign.config import ConfigError


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices inside transformers/TRL
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def cmd_run(args: argparse.Namespace) -> int:
    from selfalign import distributed, pipeline
    from selfalign.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set or [])
    output_dir = Path(args.output_dir or Path("runs") / Path(args.recipe).stem)
    summary = pipeline.run(recipe, output_dir)
    last = summary["rounds"][-1]["eval"]
    if distributed.is_main():
        print(f"run finished: {output_dir} (last round: "
              + ", ".join(f"{k}={v:.3f}" for k, v in last.items() if isinstance(v, float)) + ")")
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


def cmd_eval(args: argparse.Namespace) -> int:
    from selfalign.best_of_n import BestOfNSettings, parse_best_of, parse_rules, run_best_of_n, write_report

    settings = BestOfNSettings(best_of=parse_best_of(args.best_of), rules=parse_rules(args.select),
                               temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                               batch_size=args.batch_size, seed=args.seed, borda_power=args.borda_power)
    for message, ok in (("--temperature must be >= 0", args.temperature >= 0),
                        ("--temperature 0 (greedy) gives one sample per prompt; use --best-of 1",
                         args.temperature > 0 or settings.best_of == [1]),
                        ("--top-p must be in (0, 1]", 0 < args.top_p <= 1),
                        ("--max-new-tokens must be >= 1", args.max_new_tokens >= 1),
                        ("--batch-size must be >= 1", args.batch_size >= 1),
                        ("--borda-power must be >= 0", args.borda_power >= 0),
                        ("--num-prompts must be >= 1", args.num_prompts is None or args.num_prompts >= 1)):
        if not ok:
            raise ConfigError(message)
    sandbox_source = args.prompts.startswith("sandbox://")
    if sandbox_source and args.num_prompts is None:
        raise ConfigError(f"{args.prompts}: a sandbox source is unbounded; give --num-prompts")
    file_source = Path(args.prompts).suffix in (".jsonl", ".json")
    split = args.split or ("eval" if sandbox_source else None if file_source else "test")
    if sandbox_source and split not in ("train", "eval"):
        raise ConfigError(f"--split: a sandbox source has the splits train and eval, not {split!r}")
    if args.model != "sandbox" and not Path(args.model).exists() and not _HUB_ID.match(args.model):
        raise ConfigError(f"{args.model}: no such model directory (give a model directory or 'sandbox')")

    from selfalign import models
    from selfalign.config import ModelConfig
    from selfalign.data.prompts import load_prompts

    prompts = load_prompts(args.prompts, split=split or "test", sandbox_split=split or "eval", limit=args.num_prompts)
    cfg = ModelConfig(path=args.model)
    path = models.base_model_path(cfg)
    tokenizer = models.load_tokenizer(path, cfg)
    model = models.load_model(path, cfg, models.default_device()).eval()
    t0 = time.perf_counter()
    report, records = run_best_of_n(model, tokenizer, prompts.rows, settings,
                                    judge_template="sandbox" if prompts.verifier == "sandbox" else "srlm")
    report = {"model": args.model, "prompts": args.prompts, "split": split, **report,
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    written = write_report(report, records, args.output)
    if report["accuracy"] is not None:
        top = max(report["best_of"])
        print(f"best-of-{top} accuracy: " + ", ".join(f"{rule}={by_n[str(top)]:.3f}"
                                                       for rule, by_n in report["accuracy"].items()))
    print("wrote " + ", ".join(str(p) for p in written))
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
    parser = argparse.ArgumentParser(prog="selfalign", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a recipe (resumes when OUTPUT_DIR holds an unfinished run)")
    run.add_argument("recipe", help="recipe YAML file")
    run.add_argument("--output-dir", help="run directory (default: runs/<recipe name>)")
    run.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a recipe value")
    run.set_defaults(func=cmd_run)
    ev = sub.add_parser("eval", help="best-of-N: sample N responses per prompt, select one by each rule")
    ev.add_argument("model", help="a model directory, or 'sandbox' (the built-in sandbox model)")
    ev.add_argument("--prompts", required=True, help="sandbox://arith?..., a .jsonl file, or an HF dataset")
    ev.add_argument("--split", help="sandbox: train or eval (default eval, the held-out problems); "
                    "HF dataset: its split (default test)")
    ev.add_argument("--num-prompts", type=int, help="evaluate the first K rows (default all; needed for sandbox)")
    ev.add_argument("--best-of", default="1,2,4,8", metavar="N,N,...", help="sample counts (default 1,2,4,8)")
    ev.add_argument("--select", default="self_certainty,borda,majority,likelihood", metavar="RULE,...",
                    help="selection rules: majority, borda, or any registered reward that needs no other model "
                    "(self_certainty, likelihood, judge, ptrue, verifier, ...)")
    ev.add_argument("--temperature", type=float, default=1.0)
    ev.add_argument("--top-p", type=float, default=1.0)
    ev.add_argument("--max-new-tokens", type=int, default=256)
    ev.add_argument("--batch-size", type=int, default=64, help="sequences per generate / scoring pass")
    ev.add_argument("--borda-power", type=float, default=0.5, help="p in (N − r + 1)^p (0: majority voting)")
    ev.add_argument("--output", default="runs/best_of_n", help="report directory (default runs/best_of_n)")
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
    args = make_parser().parse_args(argv)
    main_process = os.environ.get("RANK", "0") == "0"  # under a launcher, the other processes log warnings only
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    _quiet_libraries()
    try:
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if args.func is not cmd_run and processes > 1:
            raise ConfigError(f"selfalign {args.command}: runs in one process ({processes} were launched); start it "
                              "without accelerate launch (only `selfalign run` shares its work between processes)")
        return args.func(args)
    except ConfigError as e:
        print(f"selfalign: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfalign: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
