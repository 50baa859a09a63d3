"""`python -m experiments.poisoning pretrain|sft --out DIR`: run (or resume) a sweep, then write
DIR/summary.json and the plot. Rerunning skips every run already scored in DIR/results.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.poisoning", description=__doc__)
    sub = p.add_subparsers(dest="kind", required=True)
    pre = sub.add_parser("pretrain", help="poisoned pretraining documents: count x size x seed")
    pre.add_argument("--sizes", default="small,large",
                     help="corpus sizes to run: small, large or both (default)")
    sft = sub.add_parser("sft", help="poisoned instruction-tuning examples: count")
    for q, counts, seeds in ((pre, "0,25,50,100,250", "0,1,2"), (sft, "0,10,25,50,100", "0")):
        q.add_argument("--out", required=True, help="experiment directory (resumed)")
        q.add_argument("--counts", type=_ints, default=_ints(counts),
                       help=f"poisoned counts (default {counts})")
        q.add_argument("--seeds", type=_ints, default=_ints(seeds), help=f"default {seeds}")
        q.add_argument("--progress", action="store_true", help="progress bars of each run")
    args = p.parse_args(argv)

    from experiments.poisoning import report
    from scaling.records import write_json
    out = Path(args.out)
    if args.kind == "pretrain":
        from experiments.poisoning import pretrain_attack as pa
        unknown = set(args.sizes.split(",")) - set(pa.SIZES)
        if unknown:
            p.error(f"--sizes: unknown {sorted(unknown)}; known: {', '.join(pa.SIZES)}")
        sizes = {s: pa.SIZES[s] for s in args.sizes.split(",")}
        rows = pa.run_all(out, sizes=sizes, counts=args.counts, seeds=args.seeds,
                          progress=args.progress)
        summary = report.pretrain_summary(rows)
        report.plot_pretrain(summary, str(out / "pretrain.png"))
    else:
        from experiments.poisoning import sft_attack
        rows = sft_attack.run_all(out, counts=args.counts, seeds=args.seeds,
                                  progress=args.progress)
        summary = report.sft_summary(rows)
        report.plot_sft(summary, str(out / "sft.png"))
    write_json(str(out / "summary.json"), summary)
    print(f"wrote {out / 'summary.json'} and the plot beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
