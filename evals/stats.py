"""The statistics every reported accuracy carries: a Wilson interval, pass@k and majority@k.

    wilson(8, 10)                 # (0.490, 0.943): the 95% interval of 8 successes in 10
    pass_at_k(n=10, c=3, k=2)     # 0.533: chance that 2 of the 10 samples include a correct one
    majority_at_k(["7", "7", "8"], [1, 1, 0], k=3)   # 1.0: the most common answer is right
    paired_bootstrap(before, after)   # {"diff": 0.12, "ci": [0.05, 0.19], ...}: same problems
"""

from __future__ import annotations

import collections
import math
from typing import Hashable, Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% by default). Unlike the normal
    approximation p ± z·sqrt(p(1-p)/n), it stays inside [0, 1] and does not collapse to a point
    at 0/n or n/n, which is where small evaluations often land. `successes` may be a sum of
    fractional rewards in [0, 1]."""
    if n < 1:
        raise ValueError(f"wilson: n must be at least 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson: successes must be between 0 and n={n}, got {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # At 0/n and n/n the bound is exactly 0 or 1; rounding would leave it a hair inside.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of which c are correct (Chen et al. 2021,
    "Evaluating Large Language Models Trained on Code"): 1 - C(n-c, k) / C(n, k), the chance that
    k samples drawn without replacement include a correct one. Computed as the product
    prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_at_k(answers: Sequence[Hashable | None], scores: Sequence[float], k: int) -> float:
    """The score of the most common answer among the first k samples (self-consistency, Wang et
    al. 2022). `answers[i]` is sample i's extracted final answer (None: it gave none, and does
    not vote); ties go to the answer seen first. 0 when no sample answered."""
    if len(answers) != len(scores) or not 1 <= k <= len(answers):
        raise ValueError(f"majority_at_k: need as many answers as scores and 1 <= k <= "
                         f"{len(answers)}, got {len(answers)} answers, {len(scores)} scores, "
                         f"k={k}")
    votes = collections.Counter(a for a in answers[:k] if a is not None)
    if not votes:
        return 0.0
    winner = max(votes, key=lambda a: (votes[a], -answers.index(a)))
    return float(scores[answers.index(winner)])


def ks_up_to(samples: int) -> list[int]:
    """1, 2, 4, ... up to `samples`, and `samples` itself when it is not a power of two."""
    ks = [1 << i for i in range(samples.bit_length()) if 1 << i <= samples]
    return ks + ([samples] if samples not in ks else [])


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """The gain mean(b) - mean(a) of two models scored on the same problems (a[i] and b[i]
    are problem i's scores), with a percentile bootstrap interval that resamples problems,
    keeping each problem's two scores together. Pairing is the point: the easy and hard
    problems are shared, so their spread cancels from the difference and a gain too small for
    two separate Wilson intervals to tell apart can still be shown. Returns the difference,
    its interval, the share of resamples at or below 0 (a one-sided bootstrap p-value), and
    the problems only one model solved (b_only: gained, a_only: lost)."""
    a_N, b_N = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a_N.ndim != 1 or a_N.shape != b_N.shape or len(a_N) < 1:
        raise ValueError(f"paired_bootstrap: need two equally long, non-empty lists of "
                         f"per-problem scores, got shapes {a_N.shape} and {b_N.shape}")
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"paired_bootstrap: need resamples >= 1 and 0 < level < 1, got "
                         f"{resamples} and {level}")
    d_N = b_N - a_N
    rng = np.random.default_rng(seed)
    # Resample in chunks: resamples x n indices at once could be gigabytes.
    means = []
    chunk = max(1, 2**22 // len(d_N))
    for start in range(0, resamples, chunk):
        idx_RN = rng.integers(0, len(d_N), size=(min(chunk, resamples - start), len(d_N)))
        means.append(d_N[idx_RN].mean(axis=1))
    means_R = np.concatenate(means)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means_R, [tail, 1 - tail])
    return {"diff": float(d_N.mean()), "ci": [float(lo), float(hi)],
            "p_le_0": float((means_R <= 0).mean()), "n": len(d_N),
            "b_only": int((d_N > 0).sum()), "a_only": int((d_N < 0).sum()),
            "resamples": resamples, "level": level}
