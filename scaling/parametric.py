"""Chinchilla approach 3: fit L(N, D) = E + A/N^alpha + B/D^beta to runs, with bootstrap intervals.

As in Hoffmann et al. (2022, appendix D.2) and Epoch AI's replication (Besiroglu et al. 2024):
minimise the Huber loss (delta 1e-3), summed over runs (not averaged: averaging shrinks the
objective below L-BFGS's tolerances and stops it early, the fault Epoch found), between the
observed log loss and log L in the log-sum-exp parameterisation
    log L = LSE(a - alpha log N, b - beta log D, e),   A = e^a, B = e^b, E = e^e,
with L-BFGS from every point of a grid of starts. The grid runs in two phases so the slow tail
of bad starts does not set the cost: every start for `grid_iter` (50) iterations, then the best
`polish` (16) to convergence. On 2 CPU cores, Hoffmann et al.'s 4,500-start grid on Epoch AI's
240 Chinchilla points takes about 20 s after compilation; the 162-point coarse grid about 2 s,
and it finds the same optimum there.
"""
from __future__ import annotations

import dataclasses
import itertools
import warnings

import jax.numpy as jnp
import numpy as np

from scaling import bootstrap, optim
from scaling.law import NAMES, Law, derived

LOG_NAMES = ("a", "b", "e", "alpha", "beta")  # coordinates the optimiser sees

# Hoffmann et al.'s grid: 6 x 6 x 5 x 5 x 5 = 4500 starts.
CHINCHILLA_GRID = {
    "a": np.arange(0.0, 30.0, 5.0), "b": np.arange(0.0, 30.0, 5.0),
    "e": np.arange(-1.0, 1.5, 0.5),
    "alpha": np.arange(0.0, 2.5, 0.5), "beta": np.arange(0.0, 2.5, 0.5),
}
# A small grid spanning the same box, for quick fits (tests, notebooks in fast mode).
COARSE_GRID = {
    "a": np.array([0.0, 10.0, 25.0]), "b": np.array([0.0, 10.0, 25.0]),
    "e": np.array([-1.0, 1.0]), "alpha": np.array([0.0, 0.5, 2.0]),
    "beta": np.array([0.0, 0.5, 2.0]),
}


class FitWarning(UserWarning):
    """The fit finished but its result deserves a second look (message says why)."""


def predict_log_loss(x, log_n, log_d):
    """log L(N, D) in the log-sum-exp parameterisation x = (a, b, e, alpha, beta).
    x [..., 5] broadcasts against log_n, log_d [..., n]; written out (no stack) because this
    line is the inner loop of every fit."""
    a, b, e, alpha, beta = (x[..., i, None] for i in range(5))
    t1, t2 = a - alpha * log_n, b - beta * log_d
    m = jnp.maximum(jnp.maximum(t1, t2), e)
    return m + jnp.log(jnp.exp(t1 - m) + jnp.exp(t2 - m) + jnp.exp(e - m))


def grid_points(grid: dict) -> np.ndarray:
    """[S, 5] starts, the product of the per-coordinate values in `LOG_NAMES` order."""
    return np.array(list(itertools.product(*(np.asarray(grid[k], float) for k in LOG_NAMES))))


@dataclasses.dataclass
class ParametricFit:
    law: Law
    objective: float            # summed Huber loss at the optimum
    n_points: int
    converged: bool
    steps: int                  # L-BFGS iterations of the winning start (both phases)
    start: list                 # the grid point it started from, in LOG_NAMES coordinates
    n_starts: int
    n_near_best: int            # polished starts that reached the best objective (to 1e-9)
    warnings: list
    samples: np.ndarray | None = None   # [R, 5] bootstrap (E, A, B, alpha, beta)
    bootstrap_unconverged: int = 0

    def intervals(self, budget: float, level: float = 0.95) -> dict | None:
        """95% percentile intervals of the parameters and of everything derived at `budget`."""
        if self.samples is None:
            return None
        table = {k: self.samples[:, i] for i, k in enumerate(NAMES)}
        rows = [_derived_or_nan(Law(*s), budget) for s in self.samples]
        for k in rows[0]:
            table[k] = np.array([r[k] for r in rows])
        return bootstrap.intervals(table, level)

    def to_json(self, budget: float) -> dict:
        """The fit's JSON: parameters, intervals, objective, compute-optimal split at `budget`."""
        out = self.law.to_dict()
        out.update(objective=self.objective, n_points=self.n_points, converged=self.converged,
                   steps=self.steps, start=self.start, n_starts=self.n_starts,
                   n_near_best=self.n_near_best, budget=float(budget),
                   compute_convention="C = 6 N D")
        try:
            out.update(derived(self.law, budget))
        except ValueError as e:  # alpha or beta <= 0: nothing to plan with
            out["derived_error"] = str(e)
        out["ci"] = self.intervals(budget)
        out["bootstrap"] = 0 if self.samples is None else int(len(self.samples))
        out["bootstrap_unconverged"] = self.bootstrap_unconverged
        out["warnings"] = list(self.warnings)
        return out


def _derived_or_nan(law: Law, budget: float) -> dict:
    try:
        # A wild bootstrap resample (alpha or beta near 0) under- or overflows G to 0 or inf; its
        # derived values are then inf or nan, which the percentiles tolerate: no warning needed.
        with np.errstate(all="ignore"):
            return derived(law, budget)
    except ValueError:
        return {k: float("nan") for k in ("a", "b", "N_opt", "D_opt", "tokens_per_param",
                                          "loss_opt")}


def _logs(n, d, loss):
    return (np.log(np.asarray(n, np.float64)), np.log(np.asarray(d, np.float64)),
            np.log(np.asarray(loss, np.float64)))


def fit(n, d, loss, *, grid: dict | None = None, bootstrap_replicas: int = 0, seed: int = 0,
        delta: float = 1e-3, polish: int = 16, grid_iter: int = 50, max_iter: int = 2000,
        bootstrap_starts: int = 4) -> ParametricFit:
    """Fit the law to runs (arrays of N, D, final loss). `bootstrap_replicas` > 0 refits that
    many resamples of the runs, each from the full fit's best `bootstrap_starts` optima."""
    grid = CHINCHILLA_GRID if grid is None else grid
    ln, ld, ll = _logs(n, d, loss)
    starts = grid_points(grid)
    g = optim.fit_from_grid(predict_log_loss, starts, ln, ld, ll, delta=delta, polish=polish,
                            grid_iter=grid_iter, max_iter=max_iter)
    result = ParametricFit(
        law=Law.from_log(g.x), objective=g.value, n_points=len(ln), converged=g.converged,
        steps=g.steps, start=g.start.tolist(), n_starts=len(starts), n_near_best=g.n_near_best,
        warnings=_diagnose(g.x, g.converged, grid))
    if bootstrap_replicas:
        w = bootstrap.resample_weights(len(ln), bootstrap_replicas, seed)
        x, conv = optim.refit_weighted(predict_log_loss, g.optima[:bootstrap_starts], ln, ld, ll,
                                       w, delta=delta, max_iter=max_iter)
        result.samples = np.stack([list(Law.from_log(r).to_dict().values()) for r in x])
        result.bootstrap_unconverged = int(np.sum(~conv))
    for w in result.warnings:
        warnings.warn(w, FitWarning, stacklevel=2)
    return result


def _diagnose(x, converged, grid) -> list[str]:
    out = []
    if not converged:
        out.append("L-BFGS did not converge for the best start (iteration limit reached with a "
                   "large gradient); the parameters may be off. Raise max_iter or check the data.")
    for k, v in zip(LOG_NAMES, x):
        lo, hi = float(np.min(grid[k])), float(np.max(grid[k]))
        if v <= lo or v >= hi:
            out.append(f"the optimum's {k} = {v:.4g} sits on or beyond the edge of the start grid "
                       f"[{lo:g}, {hi:g}]; widen the grid to be sure no better optimum lies "
                       "outside it.")
    if x[3] <= 0 or x[4] <= 0:
        out.append(f"fitted alpha = {x[3]:.4g}, beta = {x[4]:.4g}: a non-positive exponent means "
                   "loss does not fall with scale in these runs; the law cannot plan compute.")
    return out


def residuals(law: Law, n, d, loss) -> np.ndarray:
    """log(observed) - log(predicted), per run."""
    return np.log(np.asarray(loss, np.float64)) - np.log(law.loss(n, d))
