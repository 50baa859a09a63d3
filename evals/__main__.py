"""`python -m evals {run,curve,pairs,report,ratings,arena} ...` (`python -m evals --help`)."""

from __future__ import annotations

import argparse
import sys

from evals import cli, cli_arena, cli_attack, cli_curve, cli_pairs, cli_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evals",
                                     description="Measure models on tasks, with intervals.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    cli.add_run(subparsers)
    cli_arena.add_subcommands(subparsers)
    cli_attack.add_subcommand(subparsers)
    cli_curve.add_curve(subparsers)
    cli_pairs.add_pairs(subparsers)
    cli_report.add_report(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
