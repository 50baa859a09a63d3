"""Command line: `python -m train pretrain --config NAME|FILE --out DIR [--set a.b=value ...]`.

Rerunning the same command resumes from the latest checkpoint in DIR.
Several processes (one per host or per accelerator group) each run the same command with
--coordinator HOST:PORT --num-processes N --process-id I; on TPU pods and Slurm these are found
automatically.
"""

from __future__ import annotations

import argparse
import json
import sys


def _pretrain_args(sub) -> None:
    p = sub.add_parser("pretrain", help="next-token prediction on a corpus",
                       description="Train (or resume) a model from a named config or JSON file.")
    p.add_argument("--config", required=True, help="named config (demo, bench, tiny) or a JSON file")
    p.add_argument("--out", required=True, help="run directory (resumed when it holds this run)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE",
                   help="override a config field, e.g. steps=100 or model.n_layers=2 (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="train into --out even if it holds a run with a different config "
                        "(that run's own files are deleted; a directory holding any other "
                        "file is refused even so)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--coordinator", help="HOST:PORT of process 0, for multi-process runs")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _pretrain_args(sub)
    from train import cli_data, cli_datasets, cli_preferences, cli_rl, cli_sft  # import on use
    cli_data.add_subcommands(sub)
    cli_datasets.add_subcommands(sub)
    cli_sft.add_subcommands(sub)
    cli_preferences.add_subcommands(sub)
    cli_rl.add_subcommands(sub)
    args = parser.parse_args(argv)
    if args.command in ("sft", "dpo", "rm", "rl"):
        return _guarded(lambda: args.func(args))
    if args.command != "pretrain":
        return args.func(args)

    # Joining the multi-process runtime must come before any JAX device is touched.
    from train import distributed
    try:
        distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    except ValueError as e:
        parser.error(str(e))

    def pretrain():
        from train import config as train_config
        from train import pretrain

        cfg = train_config.apply_overrides(train_config.load(args.config), args.overrides)
        return pretrain.run(cfg, args.out, force=args.force, progress=not args.no_progress)

    return _guarded(pretrain)


def _guarded(train) -> int:
    """Runs a stage's `train()`, printing its summary; errors about the user's input are one
    line naming it, no traceback (exit 2); divergence exits 3, Ctrl-C 130."""
    from model.config import ConfigError
    from train import corpus, loader, loop, prepare, tokenizer
    from train.datasets import conversations
    input_errors = (ConfigError, FileNotFoundError, corpus.CorpusError, prepare.PrepareError,
                    loader.LoaderError, tokenizer.TokenizerError,
                    conversations.ConversationError)
    try:
        import infer
        summary = train()
    except (*input_errors, infer.LoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except loop.NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except loop.Interrupted as e:
        print(str(e), file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C
        print("interrupted; rerun the same command to resume from the latest checkpoint",
              file=sys.stderr)
        return 130
    import jax
    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    from train import host_malloc
    host_malloc.reexec_with_tunables()  # before jax is imported: see train/host_malloc.py
    sys.exit(main())
