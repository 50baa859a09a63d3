"""Nonparametric bootstrap over runs: resamples as weight vectors, and percentile intervals."""
from __future__ import annotations

import numpy as np


def resample_weights(n: int, replicas: int, seed: int = 0, groups=None) -> np.ndarray:
    """[replicas, n] counts of how often each run is drawn when n runs are drawn with
    replacement. With `groups` (one label per run), runs are resampled within each group, so
    every IsoFLOP budget keeps its number of runs."""
    rng = np.random.default_rng(seed)
    w = np.zeros((replicas, n), np.float64)
    if groups is None:
        groups = np.zeros(n, int)
    groups = np.asarray(groups)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        draws = rng.integers(0, len(idx), size=(replicas, len(idx)))
        for r in range(replicas):
            np.add.at(w[r], idx[draws[r]], 1.0)
    return w


def percentile_interval(samples, level: float = 0.95) -> tuple[float, float]:
    """Central percentile interval of the finite samples."""
    s = np.asarray(samples, np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return (float("nan"), float("nan"))
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(s, [tail, 100 - tail])
    return (float(lo), float(hi))


def intervals(table: dict, level: float = 0.95) -> dict:
    """{name: [samples]} -> {name: [lo, hi]}."""
    return {k: list(percentile_interval(v, level)) for k, v in table.items()}
