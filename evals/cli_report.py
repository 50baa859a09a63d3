"""`python -m evals report RUN_DIR ... [--task NAME --n N] --out report.md`: the report card.

    python -m evals report runs/base runs/sft runs/dpo runs/rl --task arithmetic \
        --digits 2,2 --ops + --n 200 --out report.md

One row per run directory, in the order given. With --task every stage's model (a reward model
has no answers to score and is skipped) is evaluated now, greedy, on the task's held-out
problems, and its report is kept in --evals-dir: a rerun reuses it instead of evaluating again.
The card is written as markdown (OUT) and as JSON beside it (OUT with .json), both atomically.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from evals import harness, report, tasks
from evals.cli import _digits


def add_report(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="the report card of a model's stages (markdown)",
        description="One markdown row per run directory: parameters, tokens, wall time, "
                    "validation loss, the stage's held-out accuracy, task accuracy with its "
                    "interval and the paired gain over the row above, KL to the reference.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, in stage order")
    p.add_argument("--task", choices=("arithmetic", "gsm"), default=None,
                   help="evaluate every stage's model on this task now (greedy)")
    p.add_argument("--n", type=int, default=200, help="held-out problems (default 200)")
    p.add_argument("--digits", type=_digits, default=(4, 3),
                   help="arithmetic: digits of the two numbers (default 4,3)")
    p.add_argument("--ops", default="+-*", help="arithmetic: operators to draw (default +-*)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--evals-dir", default=None,
                   help="where each stage's evals report is kept and reused (default: an "
                        "'evals' folder beside --out)")
    p.add_argument("--title", default=None, help="a heading above the table")
    p.add_argument("--out", required=True, help="the markdown file to write")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--reevaluate", action="store_true",
                   help="evaluate again even where a kept report exists")
    p.set_defaults(func=run)


def task_key(task) -> str:
    """A file-name-safe name of the task with its options (arithmetic-2x2-plus)."""
    if task.name != "arithmetic":
        return task.name
    words = {"+": "plus", "-": "minus", "*": "times"}
    return f"arithmetic-{task.digits[0]}x{task.digits[1]}-" + "".join(
        words[o] for o in task.ops) + ("-tool" if task.tool else "")


def eval_path(evals_dir: Path, run_dir: str, task, n: int) -> Path:
    """Where a run's kept evaluation lives: keyed by the run's absolute path and its summary, so
    two runs named alike in different folders, or a run trained further, never share one."""
    run = Path(run_dir).resolve()
    summary = run / "summary.json"
    identity = f"{run}\n{summary.read_text() if summary.is_file() else ''}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return evals_dir / f"{run.name}-{digest}.{task_key(task)}.n{n}.json"


def evaluate_run(run_dir: str, task, n: int, max_new_tokens, path: Path,
                 reevaluate: bool = False) -> dict:
    """The run's evals report on `task`, from `path` when kept there (else made and kept)."""
    if path.exists() and not reevaluate:
        return report.load_eval(path)
    import infer

    model = infer.load(run_dir)
    out = harness.evaluate(model, task, n=n, max_new_tokens=max_new_tokens, temperature=0.0)
    harness.write_json({**out, "model": str(run_dir), "temperature": 0.0, "seed": 0}, path)
    return report.load_eval(path)


def card(runs: list[str], *, task=None, n: int = 200, max_new_tokens=None,
         evals_dir: Path | None = None, reevaluate: bool = False) -> list[dict]:
    """The rows of the card (see evals.report), evaluating each non-RM stage on `task`."""
    rows = [report.run_numbers(r) for r in runs]  # every folder checked before any work
    if task is not None:
        evals_dir.mkdir(parents=True, exist_ok=True)
        for row in rows:
            if row["stage"] != "rm":
                path = eval_path(evals_dir, row["run"], task, n)
                row["eval"] = evaluate_run(row["run"], task, n, max_new_tokens, path,
                                           reevaluate)
    return report.with_gains(rows)


def run(args: argparse.Namespace) -> int:
    from infer.cli.args import fail

    try:
        out = harness.check_output(args.out, force=args.force)
        if args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
        task = None
        if args.task:
            options = {"digits": args.digits, "ops": args.ops} if args.task == "arithmetic" \
                else {}
            task = tasks.get(args.task, **options)
        evals_dir = Path(args.evals_dir) if args.evals_dir else out.parent / "evals"
        rows = card(args.runs, task=task, n=args.n, max_new_tokens=args.max_new_tokens,
                    evals_dir=evals_dir, reevaluate=args.reevaluate)
    except (ValueError, OSError) as e:
        fail(str(e))
    text = report.markdown(rows, title=args.title)
    write_text(text, out)
    harness.write_json({"rows": [{k: v for k, v in r.items() if k != "eval"} |
                                 ({"eval": {k: v for k, v in r["eval"].items()
                                            if k not in ("scores", "prompts")}}
                                  if r.get("eval") else {}) for r in rows]},
                       out.with_suffix(".json"))
    print(text)
    print(f"-> {out}")
    return 0


def write_text(text: str, path: Path) -> None:
    """Atomically: a reader sees the old file or the whole new one."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
