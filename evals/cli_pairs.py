"""`python -m evals pairs`: on-policy preference pairs from a model's own graded samples.

    python -m evals pairs --model runs/sft --task arithmetic --digits 2,2 --ops + \
        --n 500 --samples 8 --seed 1 --held-out 200 --out pairs.jsonl

Each problem gets K sampled answers from the engine; the task's grader splits them into correct
(score 1) and wrong (score 0) ones, and a correct one is paired with a wrong one as
`{"prompt": [messages], "chosen": {message}, "rejected": {message}}`, the format `train dpo`
and `train rm` read. No human labels: the grader is the labeller. Problems where every sample
is right (nothing to prefer against) or every sample is wrong (nothing to prefer) give no pair
and are counted, as are answers cut off by the token limit, which are neither.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Sequence

from evals import harness, tasks
from evals.cli import _digits
from evals.tasks import Item


def make_pairs(items: Sequence[Item], completions: Sequence[Sequence[tuple[str, bool]]],
               scores: Sequence[Sequence[float]], *, per_problem: int = 1,
               seed: int = 0, reference_chosen: bool = False) -> tuple[list[dict], dict]:
    """(pairs, counts). For each item, up to `per_problem` pairs of a distinct correct (score
    >= 1) and a distinct wrong (score <= 0) finished completion, chosen at random with `seed`;
    partial scores and unfinished completions are left out: neither clearly better nor worse.
    counts: problems, pairs, and the problems skipped as all_correct, all_wrong or none_finished
    (every sample cut off). With `reference_chosen`, an all-wrong problem is paired with the
    task's worked answer as the chosen one (off-policy; counted as reference_pairs): for a
    model too weak to ever be right."""
    if per_problem < 1:
        raise ValueError(f"per_problem must be at least 1, got {per_problem}")
    rng = random.Random(seed)
    pairs: list[dict] = []
    counts = {"problems": len(items), "pairs": 0, "all_correct": 0, "all_wrong": 0,
              "none_finished": 0, "unfinished_samples": 0, "reference_pairs": 0}
    for item, comps, item_scores in zip(items, completions, scores, strict=True):
        finished = [(text, s) for (text, done), s in zip(comps, item_scores, strict=True) if done]
        counts["unfinished_samples"] += len(comps) - len(finished)
        # Distinct texts: two copies of one answer would make a pair of nothing.
        right = sorted({text for text, s in finished if s >= 1.0})
        wrong = sorted({text for text, s in finished if s <= 0.0})
        if not finished:
            counts["none_finished"] += 1
        elif not right:
            counts["all_wrong"] += 1
            if reference_chosen and item.worked and len(item.worked) == 1:
                right = [item.worked[0]["content"]]
                counts["reference_pairs"] += 1
        elif not wrong:
            counts["all_correct"] += 1
        rng.shuffle(right)
        rng.shuffle(wrong)
        for chosen, rejected in list(zip(right, wrong))[:per_problem]:
            pairs.append({"prompt": item.prompt,
                          "chosen": {"role": "assistant", "content": chosen},
                          "rejected": {"role": "assistant", "content": rejected}})
    counts["pairs"] = len(pairs)
    return pairs, counts


def sample_pairs(model, task, items: Sequence[Item], *, samples: int, temperature: float,
                 seed: int, per_problem: int = 1, batch_size: int = 32,
                 max_new_tokens: int | None = None, progress: bool = True,
                 reference_chosen: bool = False) -> tuple[list[dict], dict]:
    """(pairs, counts) from `samples` engine completions of each item by a loaded model;
    counts also hold the samples' accuracy."""
    generate = harness.engine_generator(model, temperature=temperature,
                                        max_new_tokens=max_new_tokens or task.max_new_tokens)
    results = harness.sample_completions(items, generate, samples=samples, seed=seed,
                                         batch_size=batch_size, progress=progress,
                                         desc=f"{task.name} pairs")
    scores = [[task.grade(it, text) if done else 0.0 for text, done in rs]
              for it, rs in zip(items, results)]
    pairs, counts = make_pairs(items, results, scores, per_problem=per_problem, seed=seed,
                               reference_chosen=reference_chosen)
    solved = sum(s >= 1.0 for row in scores for s in row)
    counts.update(samples=samples, sample_accuracy=solved / max(1, len(items) * samples))
    return pairs, counts


def without_held_out(task, items: list[Item], held_out: int) -> tuple[list[Item], int]:
    """The items whose prompts are not among the task's first `held_out` problems of seed 0
    (what `evals run --n N` and `train rl` score), and how many were dropped."""
    if not held_out:
        return items, 0
    seen = {json.dumps(it.prompt, sort_keys=True) for it in task.items(held_out, seed=0)}
    kept = [it for it in items if json.dumps(it.prompt, sort_keys=True) not in seen]
    return kept, len(items) - len(kept)


def write_jsonl(records: Sequence[dict], path: str | os.PathLike) -> None:
    """Writes one JSON object a line, atomically: the old file or the whole new one."""
    out = Path(path)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def add_pairs(subparsers) -> None:
    p = subparsers.add_parser(
        "pairs", help="preference pairs from a model's own graded samples",
        description="Sample K answers per problem, grade them with the task's grader, and pair "
                    "a correct answer with a wrong one (JSONL for train dpo / train rm).")
    p.add_argument("--model", required=True, help="anything infer.load reads")
    p.add_argument("--task", required=True, choices=("arithmetic", "gsm"))
    p.add_argument("--n", type=int, default=100, help="problems to sample (default 100)")
    p.add_argument("--samples", type=int, default=8, help="answers per problem (K, default 8)")
    p.add_argument("--per-problem", type=int, default=1,
                   help="at most this many pairs per problem, each answer used once (default 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--seed", type=int, default=1,
                   help="draws the problems and the samples (default 1; seed 0 is the task's "
                        "evaluation set)")
    p.add_argument("--held-out", type=int, default=0, metavar="N",
                   help="drop problems among the task's first N of seed 0, the ones `evals run "
                        "--n N` scores (default 0: keep all)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens per answer (default: the task's)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per engine call")
    p.add_argument("--digits", type=_digits, default=(4, 3),
                   help="arithmetic: digits of the two numbers (default 4,3)")
    p.add_argument("--ops", default="+-*", help="arithmetic: operators to draw (default +-*)")
    p.add_argument("--reference-chosen", action="store_true",
                   help="where every sample is wrong, pair the task's worked answer (as the "
                        "chosen one) with a wrong sample: off-policy, for very weak models")
    p.add_argument("--out", required=True, help="the pairs JSONL to write")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run)


def _check(args) -> None:
    for flag in ("n", "samples", "per_problem", "batch_size", "max_new_tokens"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.samples < 2:
        raise ValueError("--samples must be at least 2: a pair needs a right and a wrong answer")
    if args.held_out < 0:
        raise ValueError(f"--held-out must be >= 0, got {args.held_out}")
    if not args.temperature > 0:
        raise ValueError(f"--temperature must be > 0 (identical greedy samples make no pairs), "
                         f"got {args.temperature}")


def run(args) -> int:
    from infer.cli.args import fail, load_model

    try:
        _check(args)
        out = harness.check_output(args.out, force=args.force)
        options = {"digits": args.digits, "ops": args.ops} if args.task == "arithmetic" else {}
        task = tasks.get(args.task, **options)
        items, dropped = without_held_out(task, task.items(args.n, seed=args.seed),
                                          args.held_out)
    except (ValueError, OSError) as e:
        fail(str(e))
    model = load_model(args.model)
    pairs, counts = sample_pairs(model, task, items, samples=args.samples,
                                 temperature=args.temperature, seed=args.seed,
                                 per_problem=args.per_problem, batch_size=args.batch_size,
                                 max_new_tokens=args.max_new_tokens,
                                 reference_chosen=args.reference_chosen)
    write_jsonl(pairs, out)
    counts["held_out_dropped"] = dropped
    summary = Path(f"{out}.counts.json")
    harness.write_json({**counts, "model": args.model, "task": task.name, "seed": args.seed,
                        "temperature": args.temperature}, summary)
    print(f"{task.name}: {counts['pairs']} pairs from {len(items)} problems "
          f"({counts['all_correct']} all correct, {counts['all_wrong']} all wrong, {counts['none_finished']} all cut off; "
          f"{dropped} held-out dropped; sample accuracy {counts['sample_accuracy']:.3f}) -> {out}")
    return 0
