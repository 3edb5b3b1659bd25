"""Write an lm-evaluation-harness task over local prompt rows: a JSONL of the rows and a task YAML that reads it
(`dataset_path: json`), so `eval.evaluators.lm_eval.tasks: [PATH/task.yaml]` runs offline.

    python scripts/lm_eval_local_task.py "sandbox://arith?terms=3&digits=2&seed=0" --split eval --limit 512 \\
        --out runs/lm_eval_sandbox
    python scripts/lm_eval_local_task.py recipes/data/gsm8k/train_512.jsonl --last 32 --out runs/lm_eval_gsm8k

The task generates greedily from each row's prompt (`doc_to_text: "{{prompt}}"`; with `apply_chat_template: true`
in the evaluator, inside the model's chat template), stops at `--until`, reads the final answer with a regex
filter (default: the sandbox's `A:<n>` at the end, or the last integer of the response) and scores lm-eval's
`exact_match` against the row's `answer`: the verifier's rule for integer answers, in lm-eval's own code.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SANDBOX_PATTERN = r"A:(\d+)\s*$"
LAST_INTEGER = r"(-?\d+)(?![\s\S]*\d)"  # the last integer, across lines


def task_yaml(name: str, data: Path, pattern: str, until: list[str], max_tokens: int) -> str:
    return "\n".join([
        f"task: {name}", "dataset_path: json", "dataset_kwargs:", "  data_files:", f"    test: {data.resolve()}",
        "test_split: test", "output_type: generate_until", 'doc_to_text: "{{prompt}}"', 'doc_to_target: "{{answer}}"',
        'target_delimiter: ""', "generation_kwargs:", f"  until: {json.dumps(until)}", "  do_sample: false",
        f"  max_gen_toks: {max_tokens}", "filter_list:", "  - name: final", "    filter:", "      - function: regex",
        f"        regex_pattern: {json.dumps(pattern)}", "      - function: take_first", "metric_list:",
        "  - metric: exact_match", "    aggregation: mean", "    higher_is_better: true", ""])


def main(argv: list[str] | None = None) -> int:
    from selfalign.data.prompts import load_prompts

    p = argparse.ArgumentParser(prog="lm_eval_local_task", description=__doc__.split("\n", 1)[0])
    p.add_argument("source", help="sandbox://arith?... or a .jsonl file of rows with prompt and answer")
    p.add_argument("--out", required=True, help="directory for rows.jsonl and task.yaml")
    p.add_argument("--name", default="selfalign_local", help="the task name (its eval.json keys)")
    p.add_argument("--split", default="eval", help="sandbox split (default eval)")
    p.add_argument("--limit", type=int, help="the first N rows (a sandbox source needs it)")
    p.add_argument("--last", type=int, help="the last N rows (a recipe's held-out eval_prompts)")
    p.add_argument("--pattern", help="regex whose first group is the answer (default: sandbox A:<n>, else the last "
                   "integer)")
    p.add_argument("--until", action="append", help="stop strings (default </s> and <|im_end|>)")
    p.add_argument("--max-tokens", type=int, default=256)
    args = p.parse_args(argv)
    rows = load_prompts(args.source, sandbox_split=args.split, limit=args.limit).rows
    if args.last:
        rows = rows[-args.last:]
    rows = [r for r in rows if r.get("answer") is not None]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"], "answer": r["answer"]}) + "\n"
                            for r in rows), encoding="utf-8")
    pattern = args.pattern or (SANDBOX_PATTERN if args.source.startswith("sandbox://") else LAST_INTEGER)
    (out / "task.yaml").write_text(task_yaml(args.name, data, pattern, args.until or ["</s>", "<|im_end|>"],
                                             args.max_tokens), encoding="utf-8")
    print(f"{out / 'task.yaml'}: task {args.name}, {len(rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
