"""`python -m infer {generate,chat,export,serve} ...` (see `python -m infer --help`)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each subcommand lives in its own module with `add_subcommand(subparsers)`.
_SUBCOMMANDS = ("infer.cli.generate", "infer.cli.chat", "infer.cli.export", "infer.cli.serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infer",
                                     description="Run, chat with and export language models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a missing dependency inside it is a real error
                raise
            continue
        module.add_subcommand(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
