"""Chinchilla approach 2: IsoFLOP profiles.

Per compute budget, fit a parabola of loss against log N (and against log D); its vertex is that
budget's compute-optimal model. Across budgets, N_opt proportional to C**a and D_opt to C**b are
straight lines in log-log. Intervals come from resampling runs within each budget.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from scaling import bootstrap


def group_budgets(compute, budget=None, bins_per_decade: int = 4) -> np.ndarray:
    """A budget label per run: the nominal `budget` when every run has one, else log10 compute
    rounded to the nearest 1/`bins_per_decade` of a decade (IsoFLOP budgets are usually
    1, 3 (~10^0.5) and 6 (~10^0.75) times a power of ten; runs of one budget differ only by
    rounding, e.g. of the step count)."""
    if budget is not None and all(b is not None for b in budget):
        _, labels = np.unique(np.asarray(budget, np.float64), return_inverse=True)
        return labels
    _, labels = np.unique(np.round(np.log10(np.asarray(compute, np.float64)) * bins_per_decade),
                          return_inverse=True)
    return labels


@dataclasses.dataclass
class Profile:
    compute: float     # geometric mean compute of the budget's runs
    n_opt: float
    d_opt: float
    loss_opt: float
    coef_n: np.ndarray  # loss = c0 x^2 + c1 x + c2, x = log10 N
    n_runs: int
    interior: bool      # the vertex lies within the sampled N range


def _vertex(x, y):
    c = np.polyfit(x, y, 2)
    if c[0] <= 0:
        return None, c
    return -c[1] / (2 * c[0]), c


def profiles(n, d, loss, compute, labels) -> tuple[list[Profile], list[str]]:
    """One Profile per budget with >= 3 runs and an upward-curving parabola; warnings for the rest."""
    out, notes = [], []
    ln, ldd = np.log10(n), np.log10(d)
    for g in np.unique(labels):
        m = labels == g
        c = float(np.exp(np.mean(np.log(compute[m]))))
        if len(np.unique(n[m])) < 3:
            notes.append(f"budget {c:.3g} FLOPs has {m.sum()} run(s); a profile needs 3 sizes")
            continue
        xn, cn = _vertex(ln[m], loss[m])
        xd, _ = _vertex(ldd[m], loss[m])
        if xn is None or xd is None:
            notes.append(f"budget {c:.3g} FLOPs: loss does not curve upward in log N; no minimum")
            continue
        interior = ln[m].min() <= xn <= ln[m].max()
        if not interior:
            notes.append(f"budget {c:.3g} FLOPs: the minimum N = {10 ** xn:.3g} lies outside the "
                         "sampled sizes (extrapolated); add runs around it")
        out.append(Profile(compute=c, n_opt=float(10 ** xn), d_opt=float(10 ** xd),
                           loss_opt=float(np.polyval(cn, xn)), coef_n=cn, n_runs=int(m.sum()),
                           interior=bool(interior)))
    return out, notes


def power_laws(profs: list[Profile]) -> dict:
    """N_opt = k_N C^a and D_opt = k_D C^b by least squares in log-log."""
    profs = [p for p in profs if p.interior]  # an extrapolated vertex is no measurement
    if len(profs) < 2:
        raise ValueError(f"IsoFLOP power laws need >= 2 budgets with an interior minimum, got "
                         f"{len(profs)}")
    lc = np.log10([p.compute for p in profs])
    a, log_kn = np.polyfit(lc, np.log10([p.n_opt for p in profs]), 1)
    b, log_kd = np.polyfit(lc, np.log10([p.d_opt for p in profs]), 1)
    return {"a": float(a), "b": float(b), "k_N": float(10 ** log_kn), "k_D": float(10 ** log_kd)}


def fit(n, d, loss, compute, budget=None, *, bootstrap_replicas: int = 0, seed: int = 0) -> dict:
    """Approach 2 on runs: per-budget minima, exponents a and b, and 95% intervals."""
    n, d, loss, compute = (np.asarray(v, np.float64) for v in (n, d, loss, compute))
    labels = group_budgets(compute, budget)
    profs, notes = profiles(n, d, loss, compute, labels)
    out = {"profiles": profs, "warnings": notes, "ci": None}
    try:
        out.update(power_laws(profs))
    except ValueError as e:
        out["warnings"].append(f"{e}: no power law")
        return out
    if bootstrap_replicas:
        w = bootstrap.resample_weights(len(n), bootstrap_replicas, seed, groups=labels)
        table = {"a": [], "b": []}
        for row in w:
            keep = np.repeat(np.arange(len(n)), row.astype(int))
            try:
                p, _ = profiles(n[keep], d[keep], loss[keep], compute[keep], labels[keep])
                pl = power_laws(p)
            except (ValueError, np.linalg.LinAlgError):
                continue  # a resample without enough distinct sizes: no estimate
            table["a"].append(pl["a"])
            table["b"].append(pl["b"])
        out["ci"] = bootstrap.intervals(table)
        out["bootstrap_used"] = len(table["a"])
    return out
