"""The evaluation harness: a task's problems through a model, graded, with intervals.

    report = harness.evaluate(infer.load("smollm2"), tasks.get("gsm"), n=100, samples=4,
                              temperature=0.8)
    report["accuracy"], report["ci95"], report["pass_at_k"], report["majority_at_k"]

Generated tasks run every (problem, sample) row through infer's engine in batches (rows of one
problem differ by their random draws); choice tasks score each option's log-likelihood. A
completion that ran out of tokens scores 0: an answer cut short is not an answer, and its last
number could be the right one by accident.

The numbers: `accuracy` is the mean score over all completions (per problem, then over
problems), and `ci95` its Wilson interval over the n problems (not n x samples: samples of one
problem are not independent trials). `pass_at_k` is the unbiased estimator over each problem's
samples (a sample counts as correct when it scores 1), `majority_at_k` the score of the most
common final answer among the first k samples, for k = 1, 2, 4, ... up to `samples`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from evals import stats
from evals.tasks import Item, Task, TaskError

# conversations, seed -> [(completion text, finished: ended by itself rather than by the limit)]
Generator = Callable[[list[list[dict]], int], list[tuple[str, bool]]]


def engine_generator(model, *, max_new_tokens: int, temperature: float, top_k: int = 0,
                     top_p: float = 1.0, weights: str = "float32", **engine_kwargs) -> Generator:
    """A Generator answering conversations with infer's engine (chat template, stop at the
    end of the assistant's turn)."""
    from infer.runtime import engine

    def generate(conversations: list[list[dict]], seed: int) -> list[tuple[str, bool]]:
        gen = engine.generate_text(model, conversations, chat=True,
                                   max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_k=top_k, top_p=top_p, seed=seed, weights=weights,
                                   **engine_kwargs)
        return [(c.text, c.finish_reason == "stop") for c in gen]

    return generate


def sample_completions(items: Sequence[Item], generate: Generator, *, samples: int, seed: int,
                       batch_size: int, progress: bool = True,
                       desc: str = "") -> list[list[tuple[str, bool]]]:
    """`samples` completions per item, generated in batches of `batch_size` rows."""
    rows = [i for i in range(len(items)) for _ in range(samples)]
    out: list[list[tuple[str, bool]]] = [[] for _ in items]
    with tqdm(total=len(rows), desc=desc, unit="sample", disable=not progress) as bar:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            # A seed per batch: the same (seed, batch size) reproduces every completion.
            results = generate([items[i].prompt for i in chunk], seed + start)
            for i, result in zip(chunk, results, strict=True):
                out[i].append(result)
            bar.update(len(chunk))
    return out


def summarise(task: Task, items: Sequence[Item], completions: list[list[str]],
              scores: list[list[float]]) -> dict:
    """The report: accuracy with its interval, pass@k, majority@k and every item."""
    n, samples = len(items), len(completions[0])
    per_item = [sum(s) / len(s) for s in scores]
    ks = stats.ks_up_to(samples)
    correct = [sum(score >= 1.0 for score in s) for s in scores]
    answers = [[task.answer(c) for c in cs] for cs in completions]
    lo, hi = stats.wilson(sum(per_item), n)
    return {
        "task": task.name,
        "n": n,
        "samples": samples,
        "accuracy": sum(per_item) / n,
        "ci95": [lo, hi],
        "pass_at_k": {str(k): sum(stats.pass_at_k(samples, c, k) for c in correct) / n
                      for k in ks},
        "majority_at_k": {str(k): sum(stats.majority_at_k(a, s, k)
                                      for a, s in zip(answers, scores)) / n for k in ks},
        "items": [{"prompt": it.prompt, "reference": it.reference, "completions": cs,
                   "scores": s} for it, cs, s in zip(items, completions, scores)],
    }


def run_generated(task: Task, items: Sequence[Item], generate: Generator, *, samples: int = 1,
                  seed: int = 0, batch_size: int = 32, progress: bool = True) -> dict:
    """Generates, grades and summarises; a completion cut off by the token limit scores 0."""
    results = sample_completions(items, generate, samples=samples, seed=seed,
                                 batch_size=batch_size, progress=progress, desc=task.name)
    completions = [[text for text, _ in rs] for rs in results]
    scores = [[task.grade(it, text) if finished else 0.0 for text, finished in rs]
              for it, rs in zip(items, results)]
    return summarise(task, items, completions, scores)


def run_choice(task: Task, items: Sequence[Item], model, *, progress: bool = True) -> dict:
    """Scores every option by log-likelihood; the likeliest is each item's one completion."""
    from evals.tasks.choice import likeliest

    chosen = [[likeliest(model, it)] for it in tqdm(items, desc=task.name, unit="item",
                                                     disable=not progress)]
    scores = [[task.grade(it, c[0])] for it, c in zip(items, chosen)]
    return summarise(task, items, chosen, scores)


def evaluate(model, task: Task, *, n: int | None, samples: int = 1, temperature: float = 0.0,
             seed: int = 0, max_new_tokens: int | None = None, batch_size: int = 32,
             progress: bool = True, **engine_kwargs) -> dict:
    """A task's report for a loaded model (`infer.load`)."""
    if samples < 1 or batch_size < 1:
        raise TaskError(f"samples and batch_size must be at least 1, got {samples} and "
                        f"{batch_size}")
    items = task.items(n, seed=seed)
    if task.kind == "choice":
        if samples != 1:
            raise TaskError(f"{task.name}: a choice task is scored by log-likelihood, not "
                            f"sampled; leave samples at 1 (got {samples})")
        return run_choice(task, items, model, progress=progress)
    generate = engine_generator(model, max_new_tokens=max_new_tokens or task.max_new_tokens,
                                temperature=temperature, **engine_kwargs)
    return run_generated(task, items, generate, samples=samples, seed=seed,
                         batch_size=batch_size, progress=progress)


def check_output(path: str | os.PathLike, *, force: bool) -> Path:
    """The report's path, refused before any work when it exists (without `force`) or its
    folder does not."""
    out = Path(path)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; choose another --json path or pass --force to "
                              "replace it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder of {out} does not exist; create it first")
    return out


def write_json(report: dict, path: str | os.PathLike) -> None:
    """Writes the report atomically: a reader sees the old file or the whole new one."""
    out = Path(path)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(report, f, ensure_ascii=False, indent=1)
            f.write("\n")
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
