r"""python -m scaling {fit,plan,sweep}: fit a scaling law, plan a budget, run a sweep.

    python -m scaling fit runs.csv --json fit.json --plot fit.png --bootstrap 200 [--holdout]
    python -m scaling plan --fit fit.json --compute 1e21 [--target-loss 2.5]
    python -m scaling sweep --budgets 2.5e11 8e11 2.5e12 --out runs/sweep \
        --config scaling/configs/cpu_sweep.json --runs-per-budget 5 --spread 12 --lr-width 48
    (the recorded CPU sweep and its exact command: scaling/results/README.md)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _fit(args) -> int:
    from scaling import analysis, records
    _check_outputs_are_not_inputs(args)
    rename = dict(_column(c) for c in args.column)
    runs = [r for path in args.csv for r in records.read(path, rename=rename)]
    t = time.time()
    result = analysis.fit_all(runs, budget=args.budget, bootstrap_replicas=args.bootstrap,
                              seed=args.seed, grid=args.grid, with_kaplan=not args.no_kaplan,
                              drop_highest=args.drop_highest)
    out = result.to_json()
    out["fit_wall_s"] = time.time() - t
    out["source"] = args.csv
    if args.plot:
        result.plot(args.plot)
        out["plot"] = args.plot
    if args.holdout:
        out["holdout"] = analysis.holdout(runs, bootstrap_replicas=args.bootstrap, seed=args.seed,
                                          grid=args.grid)
    records.write_json(args.json, out)
    print(analysis.summary_text(out))
    if args.holdout:
        print(analysis.holdout_text(out["holdout"]))
    print(f"wrote {args.json}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def _check_outputs_are_not_inputs(args) -> None:
    inputs = {os.path.realpath(p) for p in args.csv}
    for flag, out in (("--json", args.json), ("--plot", args.plot)):
        if out and os.path.realpath(out) in inputs:
            raise ValueError(f"{flag} {out} is one of the run files being fitted; writing there "
                             "would replace the runs: choose another path")


def _plan(args) -> int:
    from scaling import analysis
    with open(args.fit) as f:
        fit = json.load(f)
    print(analysis.plan_text(fit, args.compute, args.target_loss))
    return 0


def _sweep(args) -> int:
    from scaling import sweep
    t = time.time()
    done = sweep.run_sweep(args.out, args.budgets, config=args.config, overrides=args.set,
                           runs_per_budget=args.runs_per_budget,
                           tokens_per_param=args.tokens_per_param, spread=args.spread,
                           min_steps=args.min_steps, lr_width=args.lr_width,
                           aspect=tuple(args.aspect), dry_run=args.dry_run)
    if not args.dry_run:
        print(f"{len(done)} run(s) recorded in {args.out}/records.csv "
              f"({time.time() - t:.0f} s this call); fit them with: "
              f"python -m scaling fit {args.out}/records.csv --json {args.out}/fit.json "
              f"--plot {args.out}/fit.png --bootstrap 200")
    return 0


def _column(item: str) -> tuple[str, str]:
    ours, sep, theirs = item.partition("=")
    if not sep or ours not in ("params", "tokens", "loss", "flops") or not theirs:
        raise SystemExit(f"error: --column {item!r}: expected OURS=THEIRS with OURS one of "
                         "params, tokens, loss, flops (e.g. --column 'params=Model Size')")
    return ours, theirs


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit L(N, D) to run records (CSV: params,tokens,loss[,flops])")
    f.add_argument("csv", nargs="+", help="run records: CSV with params,tokens,loss (or "
                   "params,flops,loss), or a records.json; several files are pooled")
    f.add_argument("--json", required=True, help="where to write the fit")
    f.add_argument("--column", action="append", default=[], metavar="OURS=THEIRS",
                   help="read a CSV whose columns have other names, e.g. "
                   "--column 'params=Model Size' --column 'flops=Training FLOP'")
    f.add_argument("--plot", help="PNG with IsoFLOP curves, frontier and residuals")
    f.add_argument("--bootstrap", type=int, default=200, help="resamples for 95%% intervals "
                   "(0: none)")
    f.add_argument("--budget", type=float, help="FLOPs at which to report the compute-optimal "
                   "split (default: the largest run's 6ND)")
    f.add_argument("--grid", choices=("chinchilla", "coarse"), default="chinchilla",
                   help="starting points: Hoffmann et al.'s 4500, or a 162-point coarse grid")
    f.add_argument("--drop-highest", type=int, default=0, metavar="K",
                   help="leave out the K highest-loss runs (Epoch AI drop 5 of Chinchilla's)")
    f.add_argument("--no-kaplan", action="store_true", help="skip the Kaplan-form comparison")
    f.add_argument("--holdout", action="store_true", help="also fit without the largest budget "
                   "and predict its runs (needs a `budget` column)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(run=_fit)

    q = sub.add_parser("plan", help="compute-optimal N, D and loss for a budget, from a fit")
    q.add_argument("--fit", required=True, help="a fit JSON written by `fit`")
    q.add_argument("--compute", type=float, required=True, help="budget in FLOPs (6ND)")
    q.add_argument("--target-loss", type=float, help="also: compute needed to reach this loss")
    q.set_defaults(run=_plan)

    s = sub.add_parser("sweep", help="plan and train an IsoFLOP sweep (resumable)")
    s.add_argument("--budgets", type=float, nargs="+", required=True, help="FLOPs per budget")
    s.add_argument("--out", required=True, help="sweep directory")
    s.add_argument("--config", default="tiny", help="base training config (name or JSON file)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the base config (repeatable), e.g. --set optim.lr=1e-3")
    s.add_argument("--runs-per-budget", type=int, default=4)
    s.add_argument("--tokens-per-param", type=float, default=20.0,
                   help="centre each budget's sizes on N = sqrt(C / (6 x this))")
    s.add_argument("--spread", type=float, default=8.0, help="ratio of largest to smallest N "
                   "within a budget")
    s.add_argument("--min-steps", type=int, default=20)
    s.add_argument("--lr-width", type=int, metavar="D_MODEL", help="runs wider than this get the "
                   "peak LR base_lr * D_MODEL / d_model (1/width scaling; default: one LR for all)")
    s.add_argument("--aspect", type=float, nargs=2, default=(8.0, 256.0), metavar=("MIN", "MAX"),
                   help="keep d_model / n_layers within [MIN, MAX] (default: 8 256)")
    s.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    s.set_defaults(run=_sweep)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as e:  # bad input: say what and where, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from train import host_malloc
    host_malloc.reexec_with_tunables()  # it trains in this process: train/host_malloc.py
    sys.exit(main())
