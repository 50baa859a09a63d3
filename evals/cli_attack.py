"""`python -m evals attack`: an attack's success rate on a model, with intervals, as JSON."""

from __future__ import annotations

from evals import harness
from evals.attacks import DEFENSES, KINDS

# What each kind's groups mean, for the one-line summary.
_MEANING = {"attack": "injection success", "attack_document": "via documents",
            "attack_tool": "via tool outputs", "benign": "benign",
            "harmful": "refusal (harmful)", "harmful_jailbreak": "refusal (harmful+jailbreak)",
            "leak": "secret leaked"}


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "attack", help="measure an attack on a model",
        description="Measure an attack: prompt injection through documents and tool outputs "
                    "(success = the canary in the answer, and the benign task's accuracy), "
                    "jailbreaks (refusal of harmful requests, direct and wrapped, and "
                    "over-refusal of benign ones), or system-prompt extraction (leak rate); "
                    "each rate with its Wilson 95%% interval.")
    p.add_argument("--model", required=True, help="anything infer.load reads, or smollm2")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--defense", default="none", choices=DEFENSES,
                   help="injection: spotlighting of untrusted text (default none)")
    p.add_argument("--n", type=int, default=50, help="cases per group (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--weights", choices=("float32", "int8"), default="float32")
    p.add_argument("--json", required=True, metavar="OUT", help="where to write the report")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    from evals.attacks import run as attack_run
    from infer.cli.args import fail, load_model

    try:
        for flag in ("n", "max_new_tokens", "batch_size"):
            if getattr(args, flag) < 1:
                raise ValueError(f"--{flag.replace('_', '-')} must be at least 1")
        out = harness.check_output(args.json, force=args.force)
        attack_run.build(args.kind, 1, args.seed, args.defense)  # flags and corpora, before loading
    except (ValueError, OSError) as e:
        fail(str(e))
    model = load_model(args.model)
    report = attack_run.evaluate(model, args.kind, n=args.n, seed=args.seed,
                                 defense=args.defense, max_new_tokens=args.max_new_tokens,
                                 batch_size=args.batch_size, weights=args.weights)
    report = {"model": args.model, **report}
    harness.write_json(report, out)
    for group, r in report["groups"].items():
        lo, hi = r["ci95"]
        print(f"{_MEANING.get(group, group)}: {r['rate']:.3f} (95% CI {lo:.3f}-{hi:.3f}, "
              f"n={r['n']})")
    print(f"-> {out}")
    return 0
