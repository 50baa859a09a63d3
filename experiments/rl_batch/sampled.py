"""RL's gain in sampled pass@1: k samples per held-out problem at the sampling temperature.

    python -m experiments.rl_batch.sampled --base runs/pipe6/sft \
        --model runs/rl7/batch/p32_lr1e-4_T0.7 --model runs/rl7/batch/p32_lr2e-4 \
        --k 16 --temperature 0.7 1.0 --n 500 --json runs/rl7/sampled.json

Greedy pass@1 scores one answer per problem, 0 or 1, so at n = 500 its paired interval is about
+-2.6 pt wide and RL's +2.4 pt never cleared 0 (results.md). The field reports a sampled model's
pass@1 as the mean over k samples per problem at the sampling temperature (DeepSeek-R1: 64
responses per query at T 0.6, pass@1 = (1/k) sum of the k correctness scores, averaged over
problems). Each problem then contributes a fraction in [0, 1] instead of a coin, so the
per-problem variance shrinks, and it is the distribution RL at temperature T trains.

Both models answer the same seed-0 held-out problems (those `train rl` drops from training) with
the same sampling seeds (the harness seeds each engine batch by its first row, so at one batch
size model A's j-th sample of a problem and model B's draw the same random numbers: common random
numbers, which also narrow the paired difference). The gain's 95% interval is a paired bootstrap
over problems (evals.stats.paired_bootstrap on the per-problem pass@1), so its n is the number
of problems, not n x k. A model's pass@1 is `python -m evals run --task arithmetic --digits 2,2
--ops + --n N --samples K --temperature T --batch-size 400 --seed 0`'s accuracy (checked: 0.5825
for pipe6's SFT model at n 50, k 16, T 0.7, both ways); evals run's --seed also draws the
problems, so only seed 0 is comparable.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from experiments.pipeline.settings import FULL
from experiments.pipeline.stages import task_options

# The pipeline's task, read from its settings: a + b with two 2-digit numbers, answered in the
# head (no tool), where SFT leaves room.
PIPELINE_TASK = ("arithmetic", task_options(FULL))
# 25 problems x 16 samples a batch: 500 problems are 20 equal batches, one compiled shape.
BATCH_SIZE = 400


def pass1_per_problem(scores_NK: Sequence[Sequence[float]]) -> np.ndarray:
    """Each problem's sampled pass@1: the mean of its k samples' scores (1 correct, 0 not)."""
    s_NK = np.asarray(scores_NK, np.float64)
    if s_NK.ndim != 2 or s_NK.size == 0:
        raise ValueError(f"need per-problem lists of k sample scores (problems x k), got shape "
                         f"{s_NK.shape}")
    return s_NK.mean(axis=1)


def paired_gain(base_NK, model_NK, *, resamples: int = 10_000, seed: int = 0) -> dict:
    """pass@1 of both models over the same problems and the gain model - base with its paired
    bootstrap 95% interval over problems (each problem's two pass@1 values kept together)."""
    from evals import stats

    base_N, model_N = pass1_per_problem(base_NK), pass1_per_problem(model_NK)
    if np.shape(base_NK) != np.shape(model_NK):
        raise ValueError(f"the two models need the same problems and k, got score arrays of "
                         f"shapes {np.shape(base_NK)} and {np.shape(model_NK)}")
    gain = stats.paired_bootstrap(base_N, model_N, resamples=resamples, seed=seed)
    # pass@k at k = all samples: whether a problem has a correct sample at all. A pass@1 gain
    # with none here is RL sharpening answers the base already had among its samples.
    base_any_N, model_any_N = (np.asarray(s, np.float64).max(axis=1) >= 1
                               for s in (base_NK, model_NK))
    covered = stats.paired_bootstrap(base_any_N, model_any_N, resamples=resamples, seed=seed)
    return {"base_pass1": float(base_N.mean()), "pass1": float(model_N.mean()),
            "gain": gain["diff"], "ci": gain["ci"], "p_le_0": gain["p_le_0"], "n": gain["n"],
            "k": int(np.shape(base_NK)[1]), "resamples": resamples,
            "problems_gained": gain["b_only"], "problems_lost": gain["a_only"],
            "base_pass_at_k": float(base_any_N.mean()), "pass_at_k": float(model_any_N.mean()),
            "pass_at_k_gain": covered["diff"], "pass_at_k_ci": covered["ci"],
            "base_per_problem": base_N.round(4).tolist(),
            "per_problem": model_N.round(4).tolist()}


def load_task(task: str = PIPELINE_TASK[0], options: dict | None = None):
    """The evals task `task` with `options` (default: the pipeline's 2-digit + without a tool)."""
    from evals import tasks

    return tasks.get(task, **(PIPELINE_TASK[1] if options is None else options))


def sample_scores(generate, task, items, *, k: int, seed: int = 0,
                  batch_size: int = BATCH_SIZE, progress: bool = True) -> list[list[float]]:
    """k graded samples per item from `generate` (an evals.harness Generator), through the
    harness `python -m evals run` uses: rows item-major, engine batch b seeded seed + its first
    row, a completion cut off by the token limit scoring 0."""
    from evals import harness

    report = harness.run_generated(task, items, generate, samples=k, seed=seed,
                                   batch_size=batch_size, progress=progress)
    return [item["scores"] for item in report["items"]]


def kl_max(run_dir: str) -> float | None:
    """The largest KL to the reference an RL run logged (None for a run that logs none)."""
    from train.metrics import read

    path = Path(run_dir) / "metrics.jsonl"
    kl = [r["kl"] for r in read(path) if "kl" in r] if path.exists() else []
    return max(kl) if kl else None


@functools.lru_cache(maxsize=None)
def _load(path: str):
    import infer

    return infer.load(path)


@functools.lru_cache(maxsize=None)
def _scores(model_dir: str, task: str, options_json: str, n: int, k: int, temperature: float,
            seed: int, batch_size: int, progress: bool) -> tuple:
    """sample_scores, kept for the process: a CLI run comparing several models with one base
    samples the base once per temperature."""
    from evals import harness

    t = load_task(task, json.loads(options_json))
    items = t.items(n, seed=0)  # the held-out problems `train rl` drops from its training set
    generate = harness.engine_generator(_load(model_dir), max_new_tokens=t.max_new_tokens,
                                        temperature=temperature)
    return tuple(map(tuple, sample_scores(generate, t, items, k=k, seed=seed,
                                          batch_size=batch_size, progress=progress)))


def sampled_gain(base_dir: str, model_dir: str, *, k: int = 16, temperature: float = 0.7,
                 n: int = 500, seed: int = 0, greedy: bool = True,
                 batch_size: int = BATCH_SIZE, resamples: int = 10_000,
                 task: str = PIPELINE_TASK[0], task_options: dict | None = None,
                 progress: bool = True) -> dict:
    """The model's gain over the base in sampled pass@1 (k samples per problem at
    `temperature`) on the task's first n seed-0 problems, with its paired bootstrap 95%
    interval; with `greedy`, the greedy gain beside it for reference."""
    if temperature <= 0:
        raise ValueError(f"sampled_gain: temperature must be above 0 (greedy is the `greedy` "
                         f"entry), got {temperature}")
    options = json.dumps(PIPELINE_TASK[1] if task_options is None else task_options,
                         sort_keys=True)
    started = time.time()
    result = paired_gain(*(_scores(d, task, options, n, k, temperature, seed, batch_size,
                                   progress) for d in (base_dir, model_dir)),
                         resamples=resamples)
    result.update(base=base_dir, model=model_dir, task=task, task_options=json.loads(options),
                  temperature=temperature, seed=seed, batch_size=batch_size,
                  # wall_s: this pair's sampling; a base sampled for an earlier pair costs 0
                  wall_s=round(time.time() - started, 1), kl_max=kl_max(model_dir))
    if greedy:
        result["greedy"] = paired_gain(*(_scores(d, task, options, n, 1, 0.0, 0, batch_size,
                                                 progress) for d in (base_dir, model_dir)),
                                       resamples=resamples)
    return result


def line(r: dict) -> str:
    """One readable line: both pass@1 values and the gain with its interval, in points."""
    def pt(x):
        return f"{100 * x:+.1f}"

    text = (f"{r['model']} T {r['temperature']} k {r['k']}: pass@1 {r['base_pass1']:.3f} -> "
            f"{r['pass1']:.3f}, gain {pt(r['gain'])} pt [{pt(r['ci'][0])}, {pt(r['ci'][1])}] "
            f"(paired bootstrap 95%, n={r['n']} problems, p(gain<=0) {r['p_le_0']:.4f}); "
            f"pass@{r['k']} {r['base_pass_at_k']:.3f} -> {r['pass_at_k']:.3f} "
            f"[{pt(r['pass_at_k_ci'][0])}, {pt(r['pass_at_k_ci'][1])}]")
    if "greedy" in r:
        g = r["greedy"]
        text += (f"; greedy {g['base_pass1']:.3f} -> {g['pass1']:.3f}, {pt(g['gain'])} pt "
                 f"[{pt(g['ci'][0])}, {pt(g['ci'][1])}]")
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.rl_batch.sampled",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the model RL started from (e.g. the SFT run)")
    p.add_argument("--model", required=True, action="append",
                   help="an RL run (or any model infer loads); repeat for several")
    p.add_argument("--k", type=int, default=16, help="samples per problem (default 16)")
    p.add_argument("--temperature", type=float, nargs="+", default=[0.7],
                   help="sampling temperatures, each measured (default 0.7)")
    p.add_argument("--n", type=int, default=500, help="held-out seed-0 problems (default 500)")
    p.add_argument("--seed", type=int, default=0, help="the sampling seed both models share")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="rows per engine call")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--json", default=None, metavar="OUT", help="write every result here")
    args = p.parse_args(argv)
    if args.k < 1 or args.n < 1 or args.batch_size < 1 or args.resamples < 1:
        p.error(f"--k, --n, --batch-size and --resamples must be at least 1, got {args.k}, "
                f"{args.n}, {args.batch_size} and {args.resamples}")
    if any(t <= 0 for t in args.temperature):
        p.error(f"--temperature must be above 0 (greedy is measured anyway), got "
                f"{args.temperature}")
    for d in [args.base, *args.model]:
        if not Path(d).exists():
            p.error(f"{d} does not exist; give a run directory or a model file infer loads")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        p.error(f"--json {args.json}: its folder does not exist")
    results = []
    for i, temperature in enumerate(args.temperature):
        for model_dir in args.model:
            r = sampled_gain(args.base, model_dir, k=args.k, temperature=temperature, n=args.n,
                             seed=args.seed, greedy=i == 0, batch_size=args.batch_size,
                             resamples=args.resamples)
            print(line(r), flush=True)
            results.append(r)
            if args.json:  # rewritten after each pair, so a stopped run keeps what it measured
                from evals import harness
                harness.write_json({"results": results}, args.json)


if __name__ == "__main__":
    main()
