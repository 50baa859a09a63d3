"""`python -m evals curve`: accuracy against samples per problem (system 2), as JSON, a table
and a plot.

    python -m evals curve --model smollm2 --task arithmetic --digits 2,2 --n 48 \\
        --max-samples 16 --json curve.json --plot curve.png [--rm runs/rm] [--tools calculator]

Every problem gets --max-samples completions, drawn once; every point n = 1, 2, 4, ... is
computed from them (evals.curve): majority vote, best-of-n with the task's grader as the
verifier (pass@n) and, with --rm, best-of-n with a trained reward model as the verifier.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from evals import cli, curve, harness, tasks
from evals.tasks import Item, Task


def add_curve(subparsers) -> None:
    p = subparsers.add_parser(
        "curve", help="accuracy against samples per problem (majority, best-of-n)",
        description="Draw --max-samples completions per problem once and give, for n = 1, "
                    "2, 4, ... samples, the accuracy of majority vote and of best-of-n with "
                    "the grader (pass@n) or a reward model (--rm) as the verifier, each the "
                    "expectation over random n-subsets, with 95%% bootstrap intervals.")
    p.add_argument("--model", required=True,
                   help="anything infer.load reads: a GGUF file, a Hugging Face directory, a "
                        "twofiles run or params file, or smollm2")
    p.add_argument("--task", required=True, choices=[t for t in tasks.names() if t != "choice"])
    p.add_argument("--n", type=int, default=50, help="how many problems (default 50)")
    p.add_argument("--max-samples", type=int, default=32,
                   help="completions per problem (default 32); the largest n")
    p.add_argument("--rm", default=None, metavar="RUN_DIR",
                   help="a reward model (python -m train rm) to rank the samples too")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (> 0)")
    p.add_argument("--seed", type=int, default=0,
                   help="draws the problems, the samples and the resampling")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens per completion (default: the task's, e.g. 64 for arithmetic)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per engine call")
    p.add_argument("--tools", action="append", default=[], metavar="NAME",
                   help="a tool the model may call, run by the engine (calculator)")
    p.add_argument("--digits", type=cli._digits, default=(4, 3),
                   help="arithmetic: digits of the two numbers (default 4,3)")
    p.add_argument("--ops", default="+-*", help="arithmetic: operators to draw (default +-*)")
    p.add_argument("--weights", choices=("float32", "int8"), default="float32")
    p.add_argument("--json", required=True, metavar="OUT", help="where to write the curves")
    p.add_argument("--plot", default=None, metavar="PNG", help="also draw them")
    p.add_argument("--force", action="store_true", help="replace OUT (and PNG) if they exist")
    p.set_defaults(func=run, file=None)


def answer_message(completion: str) -> dict:
    """The assistant's turn a reward model scores: the completion as it was written."""
    return {"role": "assistant", "content": completion}


def measure(task: Task, items: Sequence[Item], generate: harness.Generator, *, samples: int,
            seed: int = 0, batch_size: int = 32, rm=None, progress: bool = True) -> dict:
    """The curves of `samples` completions per item, with every completion, its score, its
    answer and (with `rm`, anything with .score(conversations) -> [N]) its reward. A
    completion cut off by the token limit scores 0 and gives no answer to vote with."""
    results = harness.sample_completions(items, generate, samples=samples, seed=seed,
                                         batch_size=batch_size, progress=progress,
                                         desc=task.name)
    texts = [[text for text, _ in rs] for rs in results]
    scores = [[float(task.grade(it, t)) if done else 0.0 for t, done in rs]
              for it, rs in zip(items, results)]
    answers = [[task.answer(t) if done else None for t, done in rs] for rs in results]
    rewards = None
    if rm is not None:
        conversations = [it.prompt + [answer_message(t)] for it, ts in zip(items, texts)
                         for t in ts]
        rewards = np.asarray(rm.score(conversations), float).reshape(len(items), samples)
        rewards = rewards.tolist()
    report = curve.curves(scores, answers, rewards, seed=seed)
    report["items"] = [
        {"prompt": it.prompt, "reference": it.reference, "completions": ts, "scores": s,
         "answers": a, **({"rewards": rewards[i]} if rewards is not None else {})}
        for i, (it, ts, s, a) in enumerate(zip(items, texts, scores, answers))]
    return {"task": task.name, **report}


def table(report: dict) -> str:
    """The curves as a text table: one row per n, accuracy [95% interval] per method."""
    methods = [m for m in ("majority", "oracle", "reward_model") if m in report]
    head = f"{'n':>4}  " + "  ".join(f"{m:>22}" for m in methods)
    rows = [head]
    for i, n in enumerate(report["ns"]):
        cells = [f"{report[m]['accuracy'][i]:.3f} [{report[m]['ci95'][i][0]:.3f}, "
                 f"{report[m]['ci95'][i][1]:.3f}]" for m in methods]
        rows.append(f"{n:>4}  " + "  ".join(f"{c:>22}" for c in cells))
    return "\n".join(rows)


def title(report: dict) -> str:
    """The plot's title: model, task (with its arithmetic options), temperature, tools."""
    options = report.get("options") or {}
    what = (f"{options['digits'][0]}- by {options['digits'][1]}-digit {options['ops']}"
            if "digits" in options else "")
    tools = f", tools: {', '.join(report['tools'])}" if report.get("tools") else ""
    return f"{report['model']} on {report['task']} {what}, T={report['temperature']}{tools}"


def _check_flags(args) -> None:
    for flag in ("n", "max_samples", "batch_size", "max_new_tokens"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if not args.temperature > 0:
        raise ValueError(f"--temperature must be > 0 (a curve over samples needs samples that "
                         f"differ), got {args.temperature}")
    if args.tools:
        from infer import tools as infer_tools

        infer_tools.check_names(args.tools)
    if args.rm is not None:
        from infer.formats import run_checkpoint

        run_checkpoint.locate(args.rm)  # a missing run is named before any model loads


def run(args) -> int:
    from infer.cli.args import fail, load_model

    started = time.time()
    try:
        _check_flags(args)
        out = harness.check_output(args.json, force=args.force)
        png = harness.check_output(args.plot, force=args.force) if args.plot else None
        task = tasks.get(args.task, **cli._task_options(args))
        items = task.items(args.n, seed=args.seed)
    except (ValueError, OSError) as e:
        fail(str(e))
    rm = None
    if args.rm is not None:
        from evals import reward_model

        try:
            rm = reward_model.load(args.rm)
        except (ValueError, OSError) as e:
            fail(str(e))
    model = load_model(args.model)
    engine = {"weights": args.weights, **({"tools": args.tools} if args.tools else {})}
    generate = harness.engine_generator(
        model, max_new_tokens=args.max_new_tokens or task.max_new_tokens,
        temperature=args.temperature, **engine)
    try:
        report = measure(task, items, generate, samples=args.max_samples, seed=args.seed,
                         batch_size=args.batch_size, rm=rm)
    except ValueError as e:
        fail(str(e))
    report = {**report, "model": args.model, "temperature": args.temperature,
              "seed": args.seed, "tools": args.tools, "rm": args.rm,
              "options": {"digits": list(args.digits), "ops": args.ops}
              if args.task == "arithmetic" else {}, "wall_s": round(time.time() - started, 1)}
    harness.write_json(report, out)
    print(table(report))
    for method in ("majority", "oracle", "reward_model"):
        dropped = curve.drops_beyond_interval(report["ns"], report[method]) \
            if method in report else []
        if dropped:
            print(f"note: {method} fell below the previous point's interval at n = "
                  f"{', '.join(map(str, dropped))}")
    if png is not None:
        from evals import curve_plot

        curve_plot.plot(report, png, title=title(report))
    print(f"{task.name}: {report['n']} problems x {report['samples']} samples -> {out}"
          + (f", {png}" if png else ""))
    return 0
