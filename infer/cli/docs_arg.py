"""The `--docs DIR` flags of `python -m infer generate`, `chat` and `serve`: retrieval over the
user's own files (infer.retrieval), the passages put into the prompt as documents."""

from __future__ import annotations

from infer.cli import args as cli_args


def add_docs_args(parser) -> None:
    parser.add_argument("--docs", default=None, metavar="DIR",
                        help="answer from the .txt, .md and .jsonl files under DIR: the best "
                             "passages (BM25) go into the prompt as documents to cite as "
                             "[file:line]")
    parser.add_argument("--docs-k", type=int, default=5, metavar="K",
                        help="passages per question (default 5)")
    parser.add_argument("--dense", action="store_true",
                        help="with --docs, also rank by static embeddings "
                             "(tokenlearn-static-model), fused with BM25")


def retriever_from(args):
    """The Retriever of --docs, or None; bad flags or unreadable files fail in one line."""
    if args.docs is None:
        if args.dense:
            cli_args.fail("--dense needs --docs DIR")
        return None
    if args.docs_k < 1:
        cli_args.fail(f"--docs-k must be at least 1, got {args.docs_k}")
    from infer.retrieval import RetrievalError, Retriever

    try:
        return Retriever.from_dir(args.docs, dense=args.dense)
    except RetrievalError as e:
        cli_args.fail(str(e))
