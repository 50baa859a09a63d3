"""`python -m experiments.pipeline --out runs/pipeline [--base SRC] [--fast] [--budget S]`.

Runs the stages in order (see experiments/pipeline/__init__.py), skipping finished ones, then
writes OUT/report.md (the report card and the headline numbers), OUT/results.json,
OUT/pipeline.png and the DPO and RL metrics; --results DIR also copies them there. With
--budget, no new stage starts after that many seconds: the command exits 3 and the next run
continues where it stopped, so a long pipeline can run in pieces on a shared machine (Ctrl-C
inside a stage does the same after saving a checkpoint).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from experiments.pipeline import measure, plots, stages
from experiments.pipeline.settings import FAST, FULL

UNFINISHED = 3  # exit status: stopped at the budget, rerun to continue
RESULT_FILES = ("report.md", "results.json", "pipeline.png", "dpo_metrics.jsonl",
                "rl_metrics.jsonl")


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.pipeline",
                                description="Pretrain, SFT, on-policy pairs, DPO, a reward "
                                            "model and RL, then the report card.")
    p.add_argument("--out", required=True, help="folder for every stage's run (resumed)")
    p.add_argument("--base", default=None,
                   help="start from this model instead of pretraining one (anything "
                        "infer.load reads that uses the project's chat tokens)")
    p.add_argument("--fast", action="store_true", help="a tiny version of every stage (~2 min)")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="start no stage after this many seconds (exit 3: rerun to continue)")
    p.add_argument("--results", default=None, metavar="DIR",
                   help="also copy report.md, results.json and pipeline.png here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


class OutOfBudget(Exception):
    pass


def run(args) -> dict:
    s = FAST if args.fast else FULL
    out = Path(args.out).resolve()  # runs name their base by absolute path, as the CLI does
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    started = time.time()
    clock_path = out / "pipeline_wall_s.json"  # wall time summed over the pieces of a run
    spent_before = json.loads(clock_path.read_text())["s"] if clock_path.exists() else 0.0

    def stage(name, fn, *a):
        if args.budget is not None and time.time() - started > args.budget:
            raise OutOfBudget(name)
        print(f"== pipeline: {name}", flush=True)
        t0 = time.time()
        result = fn(*a)
        clock_path.write_text(json.dumps({"s": spent_before + time.time() - started}))
        print(f"== pipeline: {name} done in {time.time() - t0:.0f} s", flush=True)
        return result

    base = args.base or stage("base (pretrain)", stages.pretrain, s, out, progress)
    sft = stage("sft", stages.sft, s, base, out, progress)
    pairs = stage("pairs", stages.pairs, s, sft, out, progress)
    dpo = stage("dpo", stages.dpo, s, sft, pairs, out, progress)
    rm = stage("rm", stages.rm, s, sft, pairs, out, progress)
    rl = stage("rl", stages.rl, s, sft, out, progress)
    runs = ([base] if not args.base else []) + [sft, dpo, rm, rl]
    rows = stage("evaluate", measure.card, s, runs, out)
    curve = stage("best-of-n", measure.best_of_n, s, sft, rm, out, progress)
    sampled = stage("rl sampled pass@1", measure.rl_sampled, s, sft, rl, out, progress)
    wall = spent_before + time.time() - started
    clock_path.write_text(json.dumps({"s": wall}))
    return write_card(s, rows, curve, wall, out, Path(args.results) if args.results else None,
                      sampled)


def write_card(s, rows, curve, wall: float, out: Path, results_dir: Path | None,
               sampled: dict | None = None) -> dict:
    from evals import cli_report, harness, report

    res = measure.results(s, rows, curve, wall, sampled)
    lines = measure.summary_lines(res)
    m, sec = divmod(round(wall), 60)
    text = (report.markdown(rows, title="Report card: the laptop pipeline")
            + f"Pipeline wall time (every stage, evaluations included): {m} min {sec:02d} s.\n\n"
            + "\n".join(f"- {line}" for line in lines) + "\n")
    cli_report.write_text(text, out / "report.md")
    harness.write_json(res, out / "results.json")
    plots.draw(rows, curve, out / "pipeline.png")
    for row in rows:  # the curves the notebook draws, beside the card
        if row["stage"] in ("dpo", "rl"):
            shutil.copyfile(Path(row["run"]) / "metrics.jsonl",
                            out / f"{row['stage']}_metrics.jsonl")
    if results_dir is not None:
        results_dir.mkdir(parents=True, exist_ok=True)
        for name in RESULT_FILES:
            shutil.copyfile(out / name, results_dir / name)
    print(text)
    return res


def main(argv=None) -> int:
    from train.loop import Interrupted

    args = parse(argv)
    try:
        run(args)
    except OutOfBudget as e:
        print(f"== pipeline: out of budget before {e}; rerun the same command to continue",
              flush=True)
        return UNFINISHED
    except Interrupted as e:  # Ctrl-C (SIGINT) inside a stage: its checkpoint is saved
        print(f"== pipeline: stopped ({e}); rerun the same command to continue", flush=True)
        return UNFINISHED
    return 0


if __name__ == "__main__":
    from train import host_malloc
    host_malloc.reexec_with_tunables()  # it trains in this process: train/host_malloc.py
    sys.exit(main())
