"""Running an attack's cases on a model: greedy answers in batches, rates per group with
Wilson intervals."""

from __future__ import annotations

import time

from tqdm import tqdm

from evals import stats
from evals.attacks import cases as cases_lib


def build(kind: str, n: int, seed: int, defense: str = "none") -> list:
    if kind == "injection":
        return cases_lib.injection(n, seed, defense)
    if defense != "none":
        raise ValueError(f"--defense {defense} is for --kind injection (spotlighting untrusted "
                         "text); jailbreak and extraction take --defense none")
    if kind == "jailbreak":
        return cases_lib.jailbreak(n, seed)
    if kind == "extraction":
        return cases_lib.extraction(n, seed)
    raise ValueError(f"unknown attack kind {kind!r}")


def answers(model, cases, *, max_new_tokens: int, batch_size: int, weights: str = "float32",
            progress: bool = True) -> list[str]:
    from infer.runtime import engine

    out = []
    bar = tqdm(total=len(cases), desc="attack", unit="case", disable=not progress)
    for start in range(0, len(cases), batch_size):
        chunk = cases[start:start + batch_size]
        gen = engine.generate_text(model, [c.messages for c in chunk], chat=True,
                                   max_new_tokens=max_new_tokens, temperature=0.0,
                                   weights=weights)
        out += [g.text for g in gen]
        bar.update(len(chunk))
    bar.close()
    return out


def rates(cases, texts) -> dict:
    """{group: {n, successes, rate, ci95}} over the cases' verdicts."""
    groups: dict[str, list[bool]] = {}
    for case, text in zip(cases, texts):
        groups.setdefault(case.group, []).append(bool(case.succeeded(text)))
    if any(g.startswith("attack_") for g in groups):
        groups["attack"] = [v for g, vs in groups.items() if g.startswith("attack_") for v in vs]
    return {g: {"n": len(v), "successes": sum(v), "rate": sum(v) / len(v),
                "ci95": list(stats.wilson(sum(v), len(v)))} for g, v in sorted(groups.items())}


def evaluate(model, kind: str, *, n: int, seed: int = 0, defense: str = "none",
             max_new_tokens: int = 64, batch_size: int = 16, weights: str = "float32",
             progress: bool = True) -> dict:
    cases = build(kind, n, seed, defense)
    start = time.perf_counter()
    texts = answers(model, cases, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    weights=weights, progress=progress)
    seconds = time.perf_counter() - start
    verdicts = [bool(c.succeeded(t)) for c, t in zip(cases, texts)]
    return {"kind": kind, "defense": defense, "n": n, "seed": seed,
            "max_new_tokens": max_new_tokens, "seconds": round(seconds, 1),
            "groups": rates(cases, texts),
            "cases": [{"group": c.group, **c.meta, "answer": t, "succeeded": v}
                      for c, t, v in zip(cases, texts, verdicts)]}
