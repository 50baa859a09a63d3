"""`python -m infer serve`: the OpenAI-compatible HTTP server and its web chat at `/`."""

from __future__ import annotations

import ipaddress

from infer.cli import args as cli_args
from infer.cli import docs_arg


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="serve models over the OpenAI HTTP API, with a web chat at /",
        description="Serve models over the OpenAI HTTP API (/v1/chat/completions, "
                    "/v1/completions, /v1/models, /health) with a web chat at /.")
    p.add_argument("--model", action="append", required=True, metavar="SRC",
                   help="a model to serve (repeatable); clients name it by this string")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on the /v1 endpoints")
    p.add_argument("--weights", choices=("float32", "int8"), default="float32",
                   help="float32 (exact) or int8 matrices (faster decoding on CPUs)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests that may wait for the engine; more get 429 (default 64)")
    p.add_argument("--max-batch", type=int, default=16,
                   help="most greedy requests run together in one batch (default 16)")
    p.add_argument("--warmup", type=int, default=0, metavar="POSITIONS",
                   help="compile the engine for requests up to this many tokens (prompt + "
                        "reply) before serving them (default 0: on first use)")
    p.add_argument("--cors-origin", default=None, metavar="ORIGIN",
                   help="let pages from this origin (e.g. http://localhost:3000) call the API; "
                        "by default no cross-origin page may")
    docs_arg.add_docs_args(p)
    p.set_defaults(func=run)


def check_flags(args) -> None:
    """Refuses bad flags with one line, before any model is loaded."""
    if not 0 < args.port < 65536:
        cli_args.fail(f"--port must be in 1..65535, got {args.port}")
    if args.max_queue < 1 or args.max_batch < 1:
        cli_args.fail("--max-queue and --max-batch must be >= 1")
    if args.warmup < 0:
        cli_args.fail(f"--warmup must be >= 0, got {args.warmup}")
    if len(set(args.model)) != len(args.model):
        cli_args.fail(f"--model: each model once, got {args.model}")
    if args.api_key is not None and not args.api_key:
        cli_args.fail("--api-key is empty; give a key or leave the flag out")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args) -> int:
    import uvicorn

    from infer.serve.app import create_app
    from infer.serve.worker import Worker

    check_flags(args)
    retriever = docs_arg.retriever_from(args)
    models = {src: cli_args.load_model(src) for src in args.model}
    worker = Worker(models, weights=args.weights, max_queue=args.max_queue,
                    max_batch=args.max_batch, warmup=args.warmup).start()
    app = create_app(worker, api_key=args.api_key, cors_origin=args.cors_origin,
                     retriever=retriever, docs_k=args.docs_k)
    if not _is_loopback(args.host) and args.api_key is None:
        print(f"warning: listening on {args.host} without --api-key: anyone who can reach it "
              "can use it")
    print(f"serving {', '.join(models)} at http://{args.host}:{args.port}/ (web chat) and "
          f"http://{args.host}:{args.port}/v1 (OpenAI API)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        worker.close()
    return 0
