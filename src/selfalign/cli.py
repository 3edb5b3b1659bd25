"""Command line: `selfalign run RECIPE.yaml [--output-dir DIR] [--set key.path=value ...]`,
`selfalign sandbox build`. Also `python -m selfalign` and `accelerate launch -m selfalign run ...`.

A user mistake prints one line to stderr and exits with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
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
    from selfalign.config import load_recipe
    from selfalign.engine import Engine

    recipe = load_recipe(args.recipe, args.set or [])
    output_dir = Path(args.output_dir or Path("runs") / Path(args.recipe).stem)
    summary = Engine(recipe, output_dir).run_all()
    last = summary["rounds"][-1]["eval"]
    print(f"run finished: {output_dir} (last round: "
          + ", ".join(f"{k}={v:.3f}" for k, v in last.items() if isinstance(v, float)) + ")")
    return 0


def cmd_sandbox_build(args: argparse.Namespace) -> int:
    import yaml

    from selfalign.config import build
    from selfalign.data.sandbox_model import SandboxModelConfig, sandbox_model_path

    overrides = {}
    for assignment in args.set or []:
        key, _, value = assignment.partition("=")
        overrides[key] = yaml.safe_load(value)
    cfg = build(SandboxModelConfig, overrides, "model.sandbox")
    print(sandbox_model_path(cfg))
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
    sandbox = sub.add_parser("sandbox", help="the built-in sandbox task and model")
    sandbox_sub = sandbox.add_subparsers(dest="sandbox_command", required=True)
    sb = sandbox_sub.add_parser("build", help="build (or find in the cache) the sandbox base model; prints its path")
    sb.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a SandboxModelConfig field")
    sb.set_defaults(func=cmd_sandbox_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    _quiet_libraries()
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"selfalign: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfalign: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
