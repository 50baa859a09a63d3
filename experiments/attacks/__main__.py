"""The attack measurements on SmolLM2-135M-Instruct, one JSON per (kind, defense) here.

    python -m experiments.attacks --kinds injection            # 3 defenses x (50 attacked + 50 benign)
    python -m experiments.attacks --kinds jailbreak extraction

The model is loaded once; a report already written is kept (rerun to finish the rest). Each
JSON is `python -m evals attack`'s report for the same flags.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RUNS = {"injection": ["none", "datamark", "base64"], "jailbreak": ["none"],
        "extraction": ["none"]}


def main(argv=None) -> int:
    import infer
    from evals import harness
    from evals.attacks import run

    parser = argparse.ArgumentParser(prog="python -m experiments.attacks")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--kinds", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--weights", default="int8", choices=("float32", "int8"))
    parser.add_argument("--out", default=str(Path(__file__).parent))
    args = parser.parse_args(argv)
    model = infer.load(args.model)
    for kind in args.kinds:
        for defense in RUNS[kind]:
            out = Path(args.out) / f"{kind}_{defense}.json"
            if out.exists():
                print(f"{out}: done before, kept")
                continue
            report = run.evaluate(model, kind, n=args.n, defense=defense,
                                  max_new_tokens=args.max_new_tokens, weights=args.weights)
            report = {"model": args.model, "weights": args.weights, **report}
            harness.write_json(report, out)
            summary = ", ".join(f"{g} {r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
                                for g, r in report["groups"].items())
            print(f"{kind} {defense} ({report['seconds']} s): {summary}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
