"""The `--tools` flag of `python -m infer generate` and `chat`."""

from __future__ import annotations

from infer.cli import args as cli_args


def add_tools_arg(parser) -> None:
    from infer.tools import TOOLS

    parser.add_argument("--tools", default="", metavar="NAMES",
                        help="comma-separated tools the model may call, run by the engine with "
                             f"their output forced into the answer (known: {', '.join(TOOLS)})")


def tools_from(args) -> list[str]:
    """The tool names of --tools, refused (one line, exit 2) if any is unknown."""
    from infer.tools import check_names

    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    try:
        check_names(names)
    except ValueError as e:
        cli_args.fail(f"--tools: {e}")
    return names
