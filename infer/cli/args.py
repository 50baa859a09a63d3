"""Arguments shared by the generate and chat commands, and loading the model they name."""

from __future__ import annotations

import argparse
import sys


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a GGUF file, a Hugging Face Llama directory, or a twofiles run "
                             "directory / checkpoint")


def add_sampling_args(parser: argparse.ArgumentParser, *, max_new_tokens: int,
                      temperature: float) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help=f"most tokens to generate (default {max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=temperature,
                        help=f"0 = greedy (default {temperature})")
    parser.add_argument("--top-k", type=int, default=0, help="keep the k likeliest (0 = off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (1 = off)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT",
                        help="stop when this text appears (repeatable)")
    parser.add_argument("--weights", choices=("float32", "int8"), default="float32",
                        help="float32 (exact) or int8: int8 matrices (~0.4%% rounding per "
                             "weight), int8 prompt activations in blocks of 32, float16 cache; "
                             "~2.5x faster decoding on CPUs")


def sampling_kwargs(args) -> dict:
    from infer.runtime.sampling import SamplingParams

    try:  # validate here so a bad flag is an argparse-style message, not a traceback
        SamplingParams(args.temperature, args.top_k, args.top_p, args.seed)
    except ValueError as e:
        fail(f"--{str(e).split()[0].replace('_', '-')}: {e}")
    if args.max_new_tokens < 1:
        fail(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop_strings=args.stop,
                weights=args.weights)


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
