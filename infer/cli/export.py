"""`python -m infer export --model SRC --format gguf|safetensors|twofiles --out PATH`."""

from __future__ import annotations

import sys


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write a model as GGUF, HF safetensors, or the two files",
        description="Write a model (any source `infer.load` reads) as a GGUF file (llama.cpp, "
                    "transformers), a Hugging Face safetensors directory, or the two files: a "
                    "flat params file and a dependency-free C runner.")
    p.add_argument("--model", required=True,
                   help="a GGUF file, a Hugging Face Llama directory, a twofiles run directory "
                        "or checkpoint, or 'smollm2'")
    p.add_argument("--format", required=True, choices=("gguf", "safetensors", "twofiles"))
    p.add_argument("--out", required=True,
                   help="output path: a .gguf file, or a directory for safetensors/twofiles")
    p.add_argument("--dtype", default=None, choices=("f32", "f16", "q8_0"),
                   help="GGUF weight type (default f16; norms stay f32); safetensors and "
                        "twofiles are always f32, so --dtype is refused there")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier export at --out (only its own files; a directory "
                        "holding other files is refused)")
    p.set_defaults(func=run)


def run(args) -> int:
    import infer
    from infer.formats.export import export

    try:
        m = infer.load(args.model)
    except (OSError, ValueError) as e:
        print(f"error: could not load --model {args.model}: {e}", file=sys.stderr)
        return 2
    try:
        paths = export(m, args.format, args.out, dtype=args.dtype, force=args.force)
    except (OSError, ValueError) as e:  # ExportError and the format writers' own errors
        print(f"error: export to {args.out} failed: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    if args.format == "twofiles":
        out = args.out
        print(f"run it:  cc -O3 -o {out}/run {out}/run.c -lm && {out}/run {out}/model.bin "
              f"-p 'Once upon a time' -n 64", file=sys.stderr)
    return 0
