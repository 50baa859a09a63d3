"""`python -m train rl --base SRC --task NAME --out DIR [--set rl.group_size=8 ...]`.

Rerunning the same command resumes exactly (the rollouts too); raising steps continues a
finished run.
"""

from __future__ import annotations

from pathlib import Path


def add_subcommands(sub) -> None:
    p = sub.add_parser("rl", help="reinforcement learning on a task's grader (GRPO family)",
                       description="Sample answers to a task's problems with the live model, "
                                   "score them with the task's grader and update towards the "
                                   "better ones of each group.")
    p.add_argument("--base", required=True,
                   help="a twofiles run, a GGUF file, a Hugging Face directory, or smollm2")
    p.add_argument("--task", required=True, help="an evals task with a grader: arithmetic, gsm")
    p.add_argument("--out", required=True, help="run directory (resumed when it holds this run)")
    p.add_argument("--config", default="rl", help="named config or JSON file (default: rl)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE",
                   help="override a config field, e.g. rl.group_size=8, rl.beta_kl=0.04, "
                        "rl.task_options={\"digits\":[2,2]}, steps=200")
    p.add_argument("--force", action="store_true",
                   help="train into --out even if it holds a run with a different config")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args):
    from train import config as train_config
    from train import rl

    base = str(Path(args.base).resolve()) if Path(args.base).exists() else args.base
    cfg = train_config.apply_overrides(train_config.load(args.config),
                                       [f"rl.base={base}", f"rl.task={args.task}",
                                        *args.overrides])
    return rl.run(cfg, args.out, force=args.force, progress=not args.no_progress)
