"""Kaplan et al. (2020, eq. 1.5)'s form, for comparison with Chinchilla's:

    L(N, D) = [ (N_c / N)^(alpha_N / alpha_D) + D_c / D ]^alpha_D

No irreducible term. Kaplan fitted it on non-embedding parameters; pass whichever N you mean.
Fitted with the same Huber objective on log loss and the same vectorised L-BFGS as approach 3,
in coordinates x = (log N_c, log D_c, alpha_N, alpha_D).
"""
from __future__ import annotations

import dataclasses
import itertools

import jax.numpy as jnp
import numpy as np

from scaling import bootstrap, optim
from scaling.law import FLOPS_PER_PARAM_TOKEN

NAMES = ("N_c", "D_c", "alpha_N", "alpha_D")
GRID = {"log_nc": [10.0, 20.0, 30.0], "log_dc": [10.0, 20.0, 30.0],
        "alpha_n": [0.05, 0.1, 0.3], "alpha_d": [0.05, 0.1, 0.3]}


def predict_log_loss(x, log_n, log_d):
    """log L in coordinates x = (log N_c, log D_c, alpha_N, alpha_D), x [..., 4] broadcast
    against log_n, log_d [..., n]."""
    log_nc, log_dc, alpha_n, alpha_d = (x[..., i, None] for i in range(4))
    return alpha_d * jnp.logaddexp((alpha_n / alpha_d) * (log_nc - log_n), log_dc - log_d)


@dataclasses.dataclass(frozen=True)
class KaplanLaw:
    N_c: float
    D_c: float
    alpha_N: float
    alpha_D: float

    @classmethod
    def from_x(cls, x) -> "KaplanLaw":
        # A bootstrap replica of a poorly identified fit can run off to log N_c ~ 1e3: that
        # is an infinite scale (and a wide interval), not a crash.
        with np.errstate(over="ignore"):
            n_c, d_c = (float(np.exp(np.float64(v))) for v in x[:2])
        return cls(N_c=n_c, D_c=d_c, alpha_N=float(x[2]), alpha_D=float(x[3]))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def loss(self, n, d):
        n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
        return ((self.N_c / n) ** (self.alpha_N / self.alpha_D) + self.D_c / d) ** self.alpha_D

    @property
    def a(self) -> float:
        """Under C = 6ND, minimising the bracket gives N_opt proportional to C**(alpha_D/(alpha_N+alpha_D))."""
        return self.alpha_D / (self.alpha_N + self.alpha_D)

    def optimal_n(self, compute):
        p = self.alpha_N / self.alpha_D
        return (p * self.N_c ** p * compute / (FLOPS_PER_PARAM_TOKEN * self.D_c)) ** (1 / (p + 1))


def fit(n, d, loss, *, bootstrap_replicas: int = 0, seed: int = 0, delta: float = 1e-3,
        max_iter: int = 2000) -> dict:
    """Fit Kaplan's form; returns its parameters, objective, exponent a, and 95% intervals."""
    ln, ld, ll = (np.log(np.asarray(v, np.float64)) for v in (n, d, loss))
    starts = np.array(list(itertools.product(*GRID.values())))
    g = optim.fit_from_grid(predict_log_loss, starts, ln, ld, ll, delta=delta, polish=4,
                            max_iter=max_iter)
    law = KaplanLaw.from_x(g.x)
    out = {**law.to_dict(), "a": law.a, "objective": g.value, "converged": g.converged,
           "n_points": len(ln), "ci": None}
    if bootstrap_replicas:
        w = bootstrap.resample_weights(len(ln), bootstrap_replicas, seed)
        x, _ = optim.refit_weighted(predict_log_loss, g.optima[:2], ln, ld, ll, w, delta=delta,
                                    max_iter=max_iter)
        laws = [KaplanLaw.from_x(r) for r in x]
        table = {k: [getattr(l, k) for l in laws] for k in NAMES}
        table["a"] = [l.a for l in laws]
        out["ci"] = bootstrap.intervals(table)
    out["law"] = law
    return out
