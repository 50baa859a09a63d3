"""`python -m train dpo|rm --base SRC --pairs FILE.jsonl [--val FILE.jsonl] --out DIR [--set ...]`.

Rerunning the same command resumes; raising steps (or dpo.epochs, rm.epochs) continues a
finished run.
"""

from __future__ import annotations

from pathlib import Path

STAGES = {
    "dpo": ("direct preference optimisation on chosen/rejected pairs (full or LoRA)",
            "Tune any model infer.load reads towards the chosen answers of preference pairs, "
            "against itself as the reference; e.g. --set dpo.beta=0.1 dpo.reference=frozen."),
    "rm": ("a reward model (the base plus a scalar head) from chosen/rejected pairs",
           "Train the base with a reward head read at the last token on the Bradley-Terry "
           "loss of preference pairs."),
}


def add_subcommands(sub) -> None:
    for name, (help_text, description) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=description)
        p.add_argument("--base", required=True,
                       help="a twofiles run, a GGUF file, a Hugging Face directory, or smollm2")
        p.add_argument("--pairs", required=True, help='preference pairs, one {"prompt": '
                       '[messages], "chosen": {message}, "rejected": {message}} a line')
        p.add_argument("--val", help="held-out pairs: accuracy before and after")
        p.add_argument("--out", required=True,
                       help="run directory (resumed when it holds this run)")
        p.add_argument("--config", default=name, help=f"named config or JSON file "
                                                      f"(default: {name})")
        p.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="A.B=VALUE", help=f"override a config field, e.g. steps=100, "
                       f"optim.lr=1e-5{', dpo.beta=0.3' if name == 'dpo' else ''}")
        p.add_argument("--force", action="store_true",
                       help="train into --out even if it holds a run with a different config")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=_run)


def _run(args):
    from train import config as train_config
    from train import dpo, rm

    # Paths are saved absolute, so the run loads from anywhere.
    absolute = lambda p: str(Path(p).resolve()) if Path(p).exists() else p  # noqa: E731
    section = args.command
    sets = [f"{section}.base={absolute(args.base)}", f"{section}.pairs={absolute(args.pairs)}"]
    if args.val:
        sets.append(f"{section}.val={absolute(args.val)}")
    cfg = train_config.apply_overrides(train_config.load(args.config),
                                       sets + list(args.overrides))
    driver = dpo if section == "dpo" else rm
    return driver.run(cfg, args.out, force=args.force, progress=not args.no_progress)
