"""`python -m model --preset NAME [--set field=value ...] [--json]`: a model's shape and cost.

Nothing is allocated: counts come from the config alone.
"""

from __future__ import annotations

import argparse
import json
import sys

from model.accounting import count_params, flops_per_token
from model.config import ConfigError, apply_overrides
from model.presets import names, preset


def describe(name: str, overrides: list[str]) -> dict:
    cfg = apply_overrides(preset(name), overrides)
    return {"config": cfg.to_dict(), **count_params(cfg), "flops_per_token": flops_per_token(cfg)}


def _table() -> str:
    rows = [f"{'preset':<14}{'params':>18}{'non-embedding':>18}{'train FLOPs/token':>20}"]
    for name in names():
        d = describe(name, [])
        rows.append(f"{name:<14}{d['params']:>18,}{d['non_embedding_params']:>18,}"
                    f"{d['flops_per_token']:>20.4g}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help=f"one of: {', '.join(names())} (omit for a table)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a config field; repeatable")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.preset is None:
        print(_table())
        return 0
    try:
        d = describe(args.preset, args.set)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        for k, v in d["config"].items():
            print(f"{k:>22}: {v}")
        for k in ("params", "non_embedding_params"):
            print(f"{k:>22}: {d[k]:,}")
        print(f"{'flops_per_token':>22}: {d['flops_per_token']:.6g}  (training: fwd + bwd)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
