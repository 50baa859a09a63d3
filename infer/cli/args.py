"""Arguments shared by the generate and chat commands, and loading the model they name."""

from __future__ import annotations

import argparse
import sys


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a GGUF file, a Hugging Face Llama directory, or a twofiles run "
                             "directory / checkpoint")


def add_sampling_args(parser: argparse.ArgumentParser, *, max_new_tokens: int,
                      default_note: str) -> None:
    """Sampling flags; temperature, top-k and top-p default to None ("not given"), so that
    `sampling_kwargs` can tell the user's choice from the model's recommendation."""
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help=f"most tokens to generate (default {max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=None,
                        help=f"0 = greedy (default: {default_note})")
    parser.add_argument("--top-k", type=int, default=None,
                        help=f"keep the k likeliest, 0 = off (default: {default_note})")
    parser.add_argument("--top-p", type=float, default=None,
                        help=f"nucleus mass, 1 = off (default: {default_note})")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT",
                        help="stop when this text appears (repeatable)")
    parser.add_argument("--weights", choices=("float32", "int8"), default="float32",
                        help="float32 (exact) or int8: int8 matrices (~0.4%% rounding per "
                             "weight), int8 prompt activations in blocks of 32, float16 cache; "
                             "~2.5x faster decoding on CPUs")


def check_sampling_flags(args) -> None:
    """Refuses bad flags with one line, before the model is loaded."""
    from infer.runtime.sampling import SamplingParams

    given = {k: getattr(args, k) for k in ("temperature", "top_k", "top_p")
             if getattr(args, k) is not None}
    try:
        SamplingParams(**given, seed=args.seed)
    except ValueError as e:
        fail(f"--{str(e).split()[0].replace('_', '-')}: {e}")
    if args.max_new_tokens < 1:
        fail(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")


def sampling_kwargs(args, model, *, chat: bool) -> tuple[dict, str]:
    """(engine keyword arguments, where the settings come from). Flags the user gave win; the
    rest come from the model's recommendation for chat (infer.runtime.sampling_defaults) and
    are greedy for a plain completion."""
    from infer.runtime import sampling_defaults

    check_sampling_flags(args)
    base = (sampling_defaults.for_model(model) if chat else
            sampling_defaults.Recommended(0.0, 0, 1.0, "the default for a completion"))
    given = {k: getattr(args, k) for k in ("temperature", "top_k", "top_p")
             if getattr(args, k) is not None}
    settings = {**base.settings(), **given}
    source = base.source if not given else (
        f"{', '.join('--' + k.replace('_', '-') for k in given)} as given"
        + ("" if len(given) == 3 else f"; the rest from {base.source}"))
    return dict(max_new_tokens=args.max_new_tokens, **settings, seed=args.seed,
                stop_strings=args.stop, weights=args.weights), source


def describe_sampling(sampling: dict, source: str) -> str:
    """One line for a banner: the settings a reply is sampled with, and their source."""
    if sampling["temperature"] == 0:
        shown = "greedy"
    else:
        shown = (f"temperature {sampling['temperature']:g}, "
                 f"top-p {'off' if sampling['top_p'] == 1 else format(sampling['top_p'], 'g')}, "
                 f"top-k {sampling['top_k'] or 'off'}, seed {sampling['seed']}")
    return f"{shown} ({source})"


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_model(source: str):
    """infer.load(source), with a load failure reported as one line naming the source."""
    import infer

    try:
        return infer.load(source)
    except (OSError, ValueError) as e:
        fail(f"could not load --model {source}: {e}")
