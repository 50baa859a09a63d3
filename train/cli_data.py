"""The data subcommands of `python -m train`: `tokenizer` and `prepare`.

    python -m train tokenizer --input PATH... --vocab-size N --out FILE [--force]
    python -m train prepare --source SRC --tokenizer FILE --out DIR

`train/__main__.py` wires them in with `add_subcommands(subparsers)`; each parser's `func` runs
the command and returns the exit status.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

MEASURE_BYTES = 64 << 20  # compression is reported on at most this much text

def _error(message) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _check_out_file(path: Path, force: bool) -> None:
    """Refuses to replace an existing file (unless `force`) or anything that is not a file,
    before minutes of training are spent on it."""
    if path.is_dir():
        raise ValueError(f"--out {path} is a directory; name the tokenizer file to write, "
                         f"e.g. {path / 'tokenizer.json'}")
    if path.exists() and not force:
        raise ValueError(f"--out {path} exists; choose another name, or pass --force to "
                         "replace it")


def _tokenizer(args) -> int:
    from train import corpus, tokenizer

    try:
        _check_out_file(Path(args.out), args.force)
        sources = [corpus.open_source(s, text_field=args.text_field,
                                      tfds_data_dir=args.tfds_data_dir) for s in args.input]

        def texts():
            return (doc for c in sources for doc in corpus.limited(c.documents(), args.max_docs))

        start = time.perf_counter()
        ranks, pattern = tokenizer.train_tokenizer(texts(), args.vocab_size, progress=True)
        seconds = time.perf_counter() - start
        fp = tokenizer.save(args.out, ranks, pattern)
        # Compression on (the first MEASURE_BYTES of) the training text: the number people
        # compare tokenizers by.
        enc = tokenizer.load(args.out)
        n_bytes = n_tokens = 0
        for doc in texts():
            if n_bytes >= MEASURE_BYTES:
                break
            n_bytes += len(doc.encode("utf-8"))
            n_tokens += len(tokenizer.encode_text(enc, doc))
    except (OSError, ValueError) as e:
        return _error(e)
    report = {"out": args.out, "fingerprint": fp, "vocab_size": enc.n_vocab,
              "train_seconds": round(seconds, 2), "measured_bytes": n_bytes,
              "measured_tokens": n_tokens, "bytes_per_token": round(n_bytes / max(n_tokens, 1), 3)}
    print(json.dumps(report, indent=1))
    return 0


def _prepare(args) -> int:
    from train import prepare

    try:
        meta = prepare.prepare(args.source, args.tokenizer, args.out,
                               val_fraction=args.val_fraction, max_docs=args.max_docs,
                               text_field=args.text_field, tfds_data_dir=args.tfds_data_dir,
                               overwrite=args.overwrite, progress=not args.no_progress)
    except (OSError, ValueError) as e:
        return _error(e)
    summary = {k: meta[k] for k in ("source", "tokenizer_fingerprint", "vocab_size", "dtype",
                                    "seconds", "tokens_per_second")}
    for split in prepare.SPLITS:
        summary[split] = {k: meta[split][k] for k in ("documents", "tokens", "bytes")}
    print(json.dumps(summary, indent=1))
    return 0


def _source_options(p) -> None:
    p.add_argument("--text-field", default="text",
                   help="field holding the text in .jsonl/.parquet/TFDS (default: text)")
    p.add_argument("--tfds-data-dir", default=None, help="TFDS data dir for tfds: sources")
    p.add_argument("--max-docs", type=int, default=None,
                   help="use only the first N documents (quick runs)")


def add_subcommands(subparsers) -> None:
    p = subparsers.add_parser(
        "tokenizer", help="train a byte-level BPE tokenizer",
        description="Train byte-level BPE (GPT-4-style split pattern, chat special tokens) and "
                    "write the tokenizer file (tiktoken ranks, JSON).")
    p.add_argument("--input", nargs="+", required=True, metavar="SRC",
                   help="'demo', files/folders/globs (.txt, .jsonl, .parquet) or tfds:NAME[:SPLIT]")
    p.add_argument("--vocab-size", type=int, required=True,
                   help="vocabulary size including the special tokens, e.g. 8192")
    p.add_argument("--out", required=True, help="tokenizer file to write, e.g. tokenizer.json")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    _source_options(p)
    p.set_defaults(func=_tokenizer)

    p = subparsers.add_parser(
        "prepare", help="tokenize a corpus into token shards",
        description="Tokenize a corpus into flat token shards with a train/val split by "
                    "document and a metadata file; reuses DIR when already prepared alike.")
    p.add_argument("--source", required=True,
                   help="'demo', files/folders/globs (.txt, .jsonl, .parquet; comma-separated) "
                        "or tfds:NAME[/CONFIG][:SPLIT]")
    p.add_argument("--tokenizer", required=True, help="tokenizer file from `train tokenizer`")
    p.add_argument("--out", required=True, help="folder to write the shards into")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of documents for validation (default 0.1)")
    p.add_argument("--overwrite", action="store_true",
                   help="write DIR anew even if it already holds shards (by default DIR is "
                        "reused when it holds this source and tokenizer, refused otherwise)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _source_options(p)
    p.set_defaults(func=_prepare)
