"""`python -m evals run`: a task's accuracy for a model, with its interval, as one JSON file."""

from __future__ import annotations

import argparse

from evals import harness, tasks


def _digits(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers like 4,3, got {text!r}")
    return a, b


def add_run(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="evaluate a model on a task",
        description="Evaluate a model on a task: accuracy with its Wilson 95%% interval, "
                    "pass@k and majority@k, and every completion with its score.")
    p.add_argument("--model", required=True,
                   help="anything infer.load reads: a GGUF file, a Hugging Face directory, a "
                        "twofiles run or params file, or smollm2")
    p.add_argument("--task", required=True, choices=tasks.names())
    p.add_argument("--n", type=int, default=None,
                   help="how many problems (default 100; a choice task: all of its file)")
    p.add_argument("--samples", type=int, default=1, help="completions per problem (K)")
    p.add_argument("--temperature", type=float, default=None,
                   help="default: 0 (greedy) with one sample, 0.8 with more")
    p.add_argument("--seed", type=int, default=0, help="draws the problems and the samples")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens per completion (default: the task's, e.g. 64 for arithmetic)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per engine call")
    p.add_argument("--tools", action="append", default=[], metavar="NAME",
                   help="a tool the model may call, run by the engine (calculator); for "
                        "arithmetic it also makes the worked answers call it")
    p.add_argument("--digits", type=_digits, default=(4, 3),
                   help="arithmetic: digits of the two numbers (default 4,3)")
    p.add_argument("--ops", default="+-*", help="arithmetic: operators to draw (default +-*)")
    p.add_argument("--file", default=None,
                   help="choice: a BIG-bench-style task.json (default: the built-in set)")
    p.add_argument("--weights", choices=("float32", "int8"), default="float32")
    p.add_argument("--json", required=True, metavar="OUT", help="where to write the report")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run)


def _task_options(args) -> dict:
    if args.task == "arithmetic":
        return {"digits": args.digits, "ops": args.ops, "tool": "calculator" in args.tools}
    if args.task == "choice":
        return {"path": args.file}
    return {}


def _check_flags(args) -> None:
    for flag in ("samples", "batch_size", "n", "max_new_tokens"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.file is not None and args.task != "choice":
        raise ValueError("--file is for --task choice")
    if args.tools:
        from infer import tools as infer_tools

        infer_tools.check_names(args.tools)


def run(args) -> int:
    from infer.cli.args import fail, load_model

    try:
        _check_flags(args)
        out = harness.check_output(args.json, force=args.force)
        task = tasks.get(args.task, **_task_options(args))
    except (ValueError, OSError) as e:
        fail(str(e))
    model = load_model(args.model)
    temperature = args.temperature if args.temperature is not None else (
        0.0 if args.samples == 1 else 0.8)
    n = args.n if args.n is not None or task.kind == "choice" else 100
    engine = {"weights": args.weights, **({"tools": args.tools} if args.tools else {})}
    try:
        report = harness.evaluate(model, task, n=n, samples=args.samples,
                                  temperature=temperature, seed=args.seed,
                                  max_new_tokens=args.max_new_tokens,
                                  batch_size=args.batch_size, **engine)
    except ValueError as e:
        fail(str(e))
    report = {**report, "model": args.model, "temperature": temperature, "seed": args.seed,
              "tools": args.tools}
    harness.write_json(report, out)
    ci = report["ci95"]
    print(f"{task.name}: accuracy {report['accuracy']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}, "
          f"n={report['n']}, {report['samples']} sample(s) each) -> {out}")
    return 0
