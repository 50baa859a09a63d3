"""`python -m evals ratings` (Bradley–Terry ratings of battles) and `python -m evals arena`
(the web arena that collects them)."""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

def add_subcommands(subparsers) -> None:
    _add_ratings(subparsers)
    _add_arena(subparsers)


def _add_ratings(subparsers) -> None:
    p = subparsers.add_parser(
        "ratings", help="Bradley–Terry ratings of arena battles",
        description="Bradley–Terry ratings by maximum likelihood (ties count half) on the Elo "
                    "scale, mean 1000 (or --anchor MODEL = 1000), with 95%% bootstrap "
                    "intervals, the online Elo (K=4) and the win-rate matrix.")
    p.add_argument("--battles", required=True, metavar="FILE",
                   help="FastChat battles as JSONL ({model_a, model_b, winner} a line) or an "
                        "arena votes.sqlite")
    p.add_argument("--json", required=True, metavar="OUT", help="where to write the ratings")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="also draw the ratings and the win-rate matrix")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples (default 1000)")
    p.add_argument("--anchor", default=None, metavar="MODEL",
                   help="rate this model 1000 (default: the mean rating is 1000)")
    p.add_argument("--seed", type=int, default=0, help="seeds the resampling")
    p.add_argument("--force", action="store_true", help="replace OUT (and PNG) if they exist")
    p.set_defaults(func=ratings_command)


def _add_arena(subparsers) -> None:
    p = subparsers.add_parser(
        "arena", help="serve the arena: two anonymous models, one vote",
        description="Serve a page where two anonymous models answer one prompt side by side "
                    "and the user votes; votes go into a SQLite database, /leaderboard "
                    "rates them.")
    p.add_argument("--model", action="append", required=True, metavar="[NAME=]SRC",
                   help="a model infer.load reads (GGUF, Hugging Face directory, twofiles run "
                        "or params file, smollm2); repeat, at least twice. Its name is NAME, "
                        "or the file's name")
    p.add_argument("--db", required=True, help="the votes database (created if missing)")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on (default loopback; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--max-new-tokens", type=int, default=256, help="per answer (default 256)")
    p.add_argument("--weights", choices=("float32", "int8"), default="float32")
    p.add_argument("--bootstrap", type=int, default=200,
                   help="resamples for the leaderboard's intervals (default 200)")
    p.set_defaults(func=arena_command)


def read_any_battles(path) -> list:
    """Battles from a JSONL file or an arena votes database, told apart by the file's header."""
    from evals import ratings
    from evals.arena import votes

    return votes.read_battles(path) if votes.is_sqlite(path) else ratings.read_battles(path)


def ratings_command(args) -> int:
    from evals import harness, ratings
    from infer.cli.args import fail

    try:
        if args.bootstrap < 0:
            raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}")
        out = harness.check_output(args.json, force=args.force)
        plot_out = None if args.plot is None else harness.check_output(args.plot,
                                                                       force=args.force)
        battles = read_any_battles(args.battles)
        table = ratings.rate(battles, bootstrap=args.bootstrap, anchor=args.anchor,
                             seed=args.seed)
    except (ValueError, OSError) as e:
        fail(str(e))
    harness.write_json({**table.to_json(), "battles": len(battles),
                        "source": str(args.battles)}, out)
    if plot_out is not None:
        from evals import ratings_plot

        ratings_plot.plot(table, plot_out)
    width = max(len(m) for m in table.models)
    for model, rating, (lo, hi), n in zip(table.models, table.rating, table.ci95,
                                          table.battles):
        print(f"{model:<{width}}  {rating:7.1f}  [{lo:7.1f}, {hi:7.1f}]  {n} battles")
    print(f"{len(battles)} battles -> {out}" + (f", {plot_out}" if plot_out else ""))
    return 0


def model_names(sources: list[str]) -> dict[str, str]:
    """name -> source for `--model [NAME=]SRC` flags; refuses a repeated name."""
    named = {}
    for arg in sources:
        name, sep, src = arg.partition("=")
        if not sep or os.sep in name or not name:
            src = arg
            path = Path(arg.rstrip(os.sep))
            name = path.stem if path.suffix in (".gguf", ".bin") else path.name
        if name in named:
            raise ValueError(f"two --model flags are named {name!r}; name them apart with "
                             f"--model NAME=SRC")
        named[name] = src
    if len(named) < 2:
        raise ValueError(f"the arena needs at least two --model flags, got {len(named)}")
    return named


def answerer(model, *, max_new_tokens: int, weights: str):
    """The model's chat reply to a prompt, sampled with its recommended settings and a fresh
    seed for each battle."""
    from infer.runtime import sampling_defaults
    from infer.runtime.engine import generate_text

    settings = sampling_defaults.for_model(model).settings()

    def answer(prompt: str) -> str:
        return generate_text(model, prompt, chat=True, max_new_tokens=max_new_tokens,
                             weights=weights, seed=random.randrange(2**31),
                             **settings)[0].text

    return answer


def arena_command(args) -> int:
    from infer.cli.args import fail, load_model

    try:
        if args.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
        if args.bootstrap < 0:
            raise ValueError(f"--bootstrap must be >= 0, got {args.bootstrap}")
        named = model_names(args.model)
        from evals.arena import votes

        votes.check_path(args.db)
    except (ValueError, OSError) as e:
        fail(str(e))
    import uvicorn

    from evals.arena.app import create_app

    answerers = {}
    for name, src in named.items():
        print(f"loading {name} from {src}", flush=True)
        answerers[name] = answerer(load_model(src), max_new_tokens=args.max_new_tokens,
                                   weights=args.weights)
    try:
        store = votes.VoteStore(args.db)
    except (ValueError, OSError) as e:
        fail(str(e))
    app = create_app(answerers, store, bootstrap=args.bootstrap)
    print(f"arena of {', '.join(named)} on http://{args.host}:{args.port}/ "
          f"(leaderboard: /leaderboard), votes in {args.db}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    store.close()
    return 0
