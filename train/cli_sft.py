"""`python -m train sft --base SRC --data FILE.jsonl [--val FILE.jsonl] --out DIR [--set ...]`.

Rerunning the same command resumes; raising steps (or sft.epochs) continues a finished run.
"""

from __future__ import annotations

from pathlib import Path


def add_subcommands(sub) -> None:
    p = sub.add_parser("sft", help="supervised fine-tuning on conversations (full or LoRA)",
                       description="Fine-tune any model infer.load reads on OpenAI-style "
                                   "JSONL conversations; the loss counts assistant tokens only.")
    p.add_argument("--base", required=True,
                   help="a twofiles run, a GGUF file, a Hugging Face directory, or smollm2")
    p.add_argument("--data", required=True, help="conversations, one {\"messages\": [...]} a line")
    p.add_argument("--val", help="held-out conversations: validation loss on assistant tokens")
    p.add_argument("--out", required=True, help="run directory (resumed when it holds this run)")
    p.add_argument("--config", default="sft", help="named config or JSON file (default: sft)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE",
                   help="override a config field, e.g. lora.rank=8, sft.epochs=5, optim.lr=3e-4")
    p.add_argument("--force", action="store_true",
                   help="train into --out even if it holds a run with a different config")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args):
    from train import config as train_config
    from train import sft

    # Paths are saved absolute, so the run loads from anywhere.
    absolute = lambda p: str(Path(p).resolve()) if Path(p).exists() else p  # noqa: E731
    base_sets = [f"sft.base={absolute(args.base)}", f"sft.data={absolute(args.data)}"]
    if args.val:
        base_sets.append(f"sft.val={absolute(args.val)}")
    cfg = train_config.apply_overrides(train_config.load(args.config),
                                       base_sets + list(args.overrides))
    return sft.run(cfg, args.out, force=args.force, progress=not args.no_progress)
