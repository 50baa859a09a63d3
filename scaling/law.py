"""The Chinchilla parametric law L(N, D) = E + A / N^alpha + B / D^beta and its closed forms.

Pure numpy, float64. Compute is counted as C = 6 N D here (the convention under which the
closed forms below are exact and under which Hoffmann et al. and Epoch AI fit their laws); the
sweep planner converts between that and the exact FLOPs that `model.flops_per_token` counts.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

FLOPS_PER_PARAM_TOKEN = 6.0  # C = 6 N D: forward 2 N D + backward 4 N D
NAMES = ("E", "A", "B", "alpha", "beta")


@dataclasses.dataclass(frozen=True)
class Law:
    """L(N, D) = E + A / N**alpha + B / D**beta (N parameters, D training tokens, L nats/token)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    @classmethod
    def from_log(cls, x) -> "Law":
        """From the log-sum-exp parameterisation (a, b, e, alpha, beta) = (log A, log B, log E, ...)."""
        a, b, e, alpha, beta = (float(v) for v in x)
        with np.errstate(over="ignore"):  # a wild bootstrap resample may overflow: inf, not raise
            E, A, B = (float(np.exp(v)) for v in (e, a, b))
        return cls(E=E, A=A, B=B, alpha=alpha, beta=beta)

    def to_log(self) -> np.ndarray:
        """(log A, log B, log E, alpha, beta): the vector the optimiser works on."""
        return np.array([math.log(self.A), math.log(self.B), math.log(self.E), self.alpha, self.beta])

    def to_dict(self) -> dict:
        return {k: float(getattr(self, k)) for k in NAMES}

    @classmethod
    def from_dict(cls, d: dict) -> "Law":
        missing = [k for k in NAMES if k not in d]
        if missing:
            raise ValueError(f"a fitted law needs keys {list(NAMES)}; missing {missing}")
        return cls(**{k: float(d[k]) for k in NAMES})

    def loss(self, n, d):
        """Predicted loss at N parameters and D tokens (arrays broadcast)."""
        n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
        return self.E + self.A * n ** -self.alpha + self.B * d ** -self.beta

    # ---- compute-optimal allocation under C = 6 N D (Hoffmann et al. 2022, eq. 4) ----

    def _check_plannable(self):
        if not (self.alpha > 0 and self.beta > 0 and self.A > 0 and self.B > 0):
            raise ValueError(
                f"the law cannot plan compute: need A, B, alpha, beta > 0, got {self.to_dict()}")

    @property
    def a(self) -> float:
        """N_opt grows as C**a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """D_opt grows as C**b (a + b = 1)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """N_opt = G (C/6)**a, D_opt = (C/6)**b / G."""
        self._check_plannable()
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def optimal_n(self, compute):
        """Parameters minimising L(N, C / 6N) at compute C (FLOPs, 6ND convention)."""
        return self.G * (_positive(compute, "compute") / FLOPS_PER_PARAM_TOKEN) ** self.a

    def optimal_d(self, compute):
        """Tokens at the compute-optimal point: C / (6 N_opt)."""
        compute = _positive(compute, "compute")
        return compute / (FLOPS_PER_PARAM_TOKEN * self.optimal_n(compute))

    def tokens_per_param(self, compute):
        return self.optimal_d(compute) / self.optimal_n(compute)

    def optimal_loss(self, compute):
        """The lowest loss reachable with C FLOPs: E + K (C/6)**-gamma (closed form)."""
        return self.E + self._K() * (_positive(compute, "compute") / FLOPS_PER_PARAM_TOKEN) ** -self._gamma()

    def compute_for_loss(self, target):
        """FLOPs (6ND) a compute-optimal run needs to reach loss `target`; inverse of optimal_loss."""
        target = np.asarray(target, np.float64)
        if np.any(~np.isfinite(target)) or np.any(target <= self.E):
            raise ValueError(
                f"target loss {target} is unreachable: it must exceed the irreducible loss E = {self.E:.4f}")
        return FLOPS_PER_PARAM_TOKEN * (self._K() / (target - self.E)) ** (1.0 / self._gamma())

    def _gamma(self) -> float:
        # Both reducible terms fall as (C/6)**-(alpha*beta/(alpha+beta)) along the optimum.
        return self.alpha * self.beta / (self.alpha + self.beta)

    def _K(self) -> float:
        g = self.G
        return self.A * g ** -self.alpha + self.B * g ** self.beta


def _positive(x, name):
    x = np.asarray(x, np.float64)
    if np.any(~np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"{name} must be positive and finite, got {x}")
    return x if x.ndim else float(x)


def derived(law: Law, compute: float) -> dict:
    """Everything a planner reads off the law at one budget (used for bootstrap intervals too)."""
    return {
        "a": law.a,
        "b": law.b,
        "N_opt": float(law.optimal_n(compute)),
        "D_opt": float(law.optimal_d(compute)),
        "tokens_per_param": float(law.tokens_per_param(compute)),
        "loss_opt": float(law.optimal_loss(compute)),
    }


def numerical_optimal_n(law: Law, compute: float) -> float:
    """N minimising L(N, C / 6N), found by a bounded scalar search in log N (no closed form
    used): the check that the closed form is right."""
    from scipy.optimize import minimize_scalar
    compute = float(_positive(compute, "compute"))
    guess = math.log(math.sqrt(compute / FLOPS_PER_PARAM_TOKEN))
    f = lambda log_n: float(law.loss(math.exp(log_n), compute / (FLOPS_PER_PARAM_TOKEN * math.exp(log_n))))
    res = minimize_scalar(f, bounds=(guess - 40.0, guess + 40.0), method="bounded",
                          options={"xatol": 1e-12, "maxiter": 2000})
    return math.exp(res.x)
