"""`python -m experiments.tool_use [--out runs/tool_use] [--stage STAGE]`: the tool-use experiment.

    python -m experiments.tool_use                      # every stage; reruns skip finished ones
    python -m experiments.tool_use --stage sft --arm tool   # one stage (each under ~10 CPU min)
    python -m experiments.tool_use --stage report       # results.json and the plot
    python -m experiments.tool_use --stage proxy        # tool model, 100 validation problems

Stages in order: base, data, sft (both arms, or --arm), eval (the four cells), diagnose,
report. Everything but the report goes to --out; the report to --results (committed). `proxy`
(not part of `all`) scores the latest checkpoint of --arm (default tool) on validation problems,
to decide on steps without looking at the held-out ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from experiments.tool_use import run  # noqa: E402

STAGES = ("base", "data", "sft", "eval", "diagnose", "report")
RESULTS = Path(__file__).parent / "results"


def _settings(args) -> run.Settings:
    s = run.Settings(out=Path(args.out))
    changes = {k: v for k, v in (("sft_steps", args.sft_steps), ("n_eval", args.n_eval),
                                 ("n_tool", args.n_tool), ("base_steps", args.base_steps))
               if v is not None}
    if args.sft_steps is not None:  # one length, unless --sft-raised-from says otherwise
        changes["sft_raised_from"] = tuple(args.sft_raised_from)
    return dataclasses.replace(s, **changes)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.tool_use",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/tool_use", help="work folder (runs, data, reports)")
    p.add_argument("--results", default=str(RESULTS), help="where results.json and the plot go")
    p.add_argument("--stage", choices=STAGES + ("all", "proxy"), default="all")
    p.add_argument("--arm", choices=run.ARMS, help="only this arm (sft and eval stages)")
    p.add_argument("--sft-steps", type=int, help=f"default {run.Settings.sft_steps}")
    p.add_argument("--sft-raised-from", type=int, nargs="*", default=[], metavar="STEPS",
                   help="with --sft-steps: lengths trained to first, in turn (default: none; "
                        f"without --sft-steps: {' '.join(map(str, run.Settings.sft_raised_from))})")
    p.add_argument("--n-tool", type=int, help=f"default {run.Settings.n_tool}")
    p.add_argument("--n-eval", type=int, help=f"default {run.Settings.n_eval}")
    p.add_argument("--base-steps", type=int, help=f"default {run.Settings.base_steps}")
    args = p.parse_args(argv)
    s = _settings(args)
    arms = [args.arm] if args.arm else list(run.ARMS)
    todo = STAGES if args.stage == "all" else (args.stage,)
    if args.stage == "proxy":
        r = run.proxy(s, args.arm or "tool")
        print(f"proxy {args.arm or 'tool'} model at step {r['step']}, validation problems: "
              f"{r['accuracy']:.3f} {r['ci95']} (n={r['n']})", flush=True)
        return 0
    if "base" in todo:
        run.base(s)
    if "data" in todo:
        print("data:", json.dumps(run.data(s)), flush=True)
    if "sft" in todo:
        for arm in arms:
            run.sft(s, arm)
    if "eval" in todo:
        for arm in arms:
            for tools in (True, False):
                r = run.evaluate(s, arm, tools)
                print(f"eval {arm} model, calculator {'on' if tools else 'off'}: "
                      f"{r['accuracy']:.3f} {r['ci95']}", flush=True)
    if "diagnose" in todo:
        print("diagnostic:", json.dumps(run.diagnostic(s)), flush=True)
    if "report" in todo:
        from experiments.tool_use import report
        results = report.gather(s)
        out = Path(args.results)
        run.write_json(results, out / "results.json")
        report.plot(results, out / "tool_use.png")
        print(f"wrote {out / 'results.json'} and {out / 'tool_use.png'}")
    return 0


if __name__ == "__main__":
    from train import host_malloc
    host_malloc.reexec_with_tunables()  # it trains in this process: train/host_malloc.py
    sys.exit(main())
