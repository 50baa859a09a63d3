"""Vectorised L-BFGS in float64: many starting points, over many (re-weighted) data sets, at once.

Why not a loop over `scipy.optimize.minimize`, or `optax.lbfgs` under `jax.vmap`: the Chinchilla
fit starts L-BFGS from a grid of 4,500 points and the bootstrap refits hundreds of resamples.
scipy runs them one after another in Python. optax's L-BFGS nests its line search's while loop
inside the iteration loop; vmapped over starts, every iteration waits for the slowest line
search of the batch: on this 2-core CPU, 162 starts x 200 iterations took 22 s that way, and
0.23 s here. Here the whole batch [B, P] is one state of a single `lax.while_loop`: the
two-loop recursion is batched array algebra, and the line search evaluates a fixed ladder of
step sizes for every problem at once and keeps the best one that satisfies Armijo's condition
(an exact-on-a-ladder line search), so an iteration costs one batched gradient and one batched
ladder of objective values. Resamples are weight vectors (how often each run was drawn), so
every resample has the same shapes and reuses one compilation. Compilation is the expensive
part on CPU (several seconds per program; XLA's float64 exp/log kernels), so problem counts and
run counts are padded to buckets and tolerances are traced values.

float64 is scoped with `x64()` instead of flipped globally: other packages in the same process
(the training loop) keep JAX's float32 defaults.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

MEMORY = 10                                   # L-BFGS correction pairs kept per problem
STEPS = 2.0 ** np.array([1, 0, -1, -3, -6, -10, -16])  # line-search ladder
ARMIJO = 1e-4
PAD = 64                                      # runs axis padded to a multiple of this


def x64():
    """Context manager enabling float64 in JAX for the enclosed code only."""
    return jax.enable_x64(True)


class Solution(NamedTuple):
    x: np.ndarray          # [R, S, P] final points
    value: np.ndarray      # [R, S] objective there (inf where it went non-finite)
    converged: np.ndarray  # [R, S] gradient small, or objective stalled at float64 precision
    steps: np.ndarray      # [R, S] iterations taken


def huber_objective(predict: Callable, x, log_n, log_d, log_loss, weight, delta):
    """sum_i w_i Huber_delta(predicted log loss_i - observed log loss_i), over the last axis.
    `predict(x [..., P], log_n [..., n], log_d) -> [..., n]` broadcasts its batch axes."""
    pred = predict(x, log_n, log_d)
    return jnp.sum(weight * optax.losses.huber_loss(pred, log_loss, delta=delta), axis=-1)


def _direction(g, s_hist, y_hist, rho, count):
    """-H g by the two-loop recursion, batched: g [B,P]; histories [B,M,P] newest first.
    Written with `lax.scan` (not unrolled) to keep the compiled program small."""
    valid = jnp.arange(MEMORY)[None, :] < jnp.minimum(count, MEMORY)[:, None]   # [B,M]
    hist = (jnp.swapaxes(s_hist, 0, 1), jnp.swapaxes(y_hist, 0, 1), rho.T, valid.T)

    def newest_first(q, h):
        s, y, r, v = h
        a = jnp.where(v, r * jnp.sum(s * q, -1), 0.0)
        return q - a[:, None] * y, a

    q, alphas = jax.lax.scan(newest_first, g, hist)
    sy = jnp.sum(s_hist[:, 0] * y_hist[:, 0], -1)
    yy = jnp.sum(y_hist[:, 0] ** 2, -1)
    # Without history, a first step of length ~1 in the steepest direction.
    gamma = jnp.where(valid[:, 0], sy / jnp.where(yy > 0, yy, 1.0),
                      1.0 / jnp.maximum(jnp.linalg.norm(g, axis=-1), 1e-300))

    def oldest_first(r, h):
        (s, y, rh, v), a = h
        b = jnp.where(v, rh * jnp.sum(y * r, -1), 0.0)
        return r + (a - b)[:, None] * s, None

    r, _ = jax.lax.scan(oldest_first, gamma[:, None] * q, (hist, alphas), reverse=True)
    return -r


def _lbfgs(fun_B, x0, active, max_iter, gtol, ftol, stuck_gtol):
    """Minimise B independent problems. fun_B(x [B,P] or [B,J,P]) -> [B] or [B,J] values (row b
    is problem b; the extra axis J evaluates several points of the same problem).

    Each iteration first takes the value and gradient at the current point (the only place the
    gradient is compiled: XLA's float64 exp/log kernels are slow to compile, so every copy of
    the objective costs seconds), folds the previous step into the memory, then runs the ladder.
    """
    def value_grad(x):
        f, pull = jax.vjp(fun_B, x)
        (g,) = pull(jnp.ones_like(f))
        return jnp.where(jnp.isfinite(f), f, jnp.inf), g

    def values(x):
        v = fun_B(x)
        return jnp.where(jnp.isfinite(v), v, jnp.inf)

    steps = jnp.asarray(STEPS)
    nb, p = x0.shape
    zeros = lambda *shape, dtype=x0.dtype: jnp.zeros(shape, dtype)
    state = dict(x=x0, f=zeros(nb), g_prev=zeros(nb, p), step=zeros(nb, p),
                 pending=zeros(nb, dtype=bool), s=zeros(nb, MEMORY, p), y=zeros(nb, MEMORY, p),
                 rho=zeros(nb, MEMORY), count=zeros(nb, dtype=jnp.int32),
                 done=~active, converged=zeros(nb, dtype=bool),
                 k=zeros(nb, dtype=jnp.int32))

    def body(st):
        x, done = st["x"], st["done"]
        f, g = value_grad(x)
        # Fold the previous step into the memory (skipped when the curvature s.y is not
        # positive, which keeps the inverse-Hessian estimate positive definite).
        s_k, y_k = st["step"], g - st["g_prev"]
        sy = jnp.sum(s_k * y_k, -1)
        keep = st["pending"] & (sy > 1e-12 * jnp.linalg.norm(s_k, axis=-1)
                                * jnp.linalg.norm(y_k, axis=-1))
        push = lambda h, v: jnp.where(keep[:, None, None],
                                      jnp.concatenate([v[:, None], h[:, :-1]], 1), h)
        s_hist, y_hist = push(st["s"], s_k), push(st["y"], y_k)
        rho = jnp.where(keep[:, None], jnp.concatenate(
            [(1.0 / jnp.where(keep, sy, 1.0))[:, None], st["rho"][:, :-1]], 1), st["rho"])
        count = jnp.where(keep, st["count"] + 1, st["count"])

        small_g = jnp.max(jnp.abs(g), -1) <= gtol
        converged = st["converged"] | (~done & small_g)
        done = done | small_g | ~jnp.isfinite(f) | (st["k"] >= max_iter)

        d = _direction(g, s_hist, y_hist, rho, count)
        slope = jnp.sum(g * d, -1)
        restart = ~(slope < 0)                  # not a descent direction: steepest descent
        unit_g = g / jnp.maximum(jnp.linalg.norm(g, axis=-1), 1e-300)[:, None]
        d = jnp.where(restart[:, None], -unit_g, d)
        slope = jnp.sum(g * d, -1)
        cand = x[:, None, :] + steps[None, :, None] * d[:, None, :]          # [B,J,P]
        fc = values(cand)                                                    # [B,J]
        ok = fc <= f[:, None] + ARMIJO * steps[None, :] * slope[:, None]
        j = jnp.argmin(jnp.where(ok, fc, jnp.inf), axis=1)
        moved = jnp.any(ok, axis=1) & ~done
        x_new = jnp.where(moved[:, None], jnp.take_along_axis(cand, j[:, None, None], 1)[:, 0], x)
        f_new = jnp.where(moved, jnp.take_along_axis(fc, j[:, None], 1)[:, 0], f)

        # Stalled: the objective no longer falls at float64 precision (scipy's `ftol` test,
        # with no floor of 1: a noise-free fit drives the objective to ~0 and must go on).
        stalled = moved & ((f - f_new) <= ftol * jnp.maximum(jnp.abs(f), jnp.abs(f_new)))
        # Stuck: no step of the ladder lowers the objective even along -g; converged only when
        # the gradient is already tiny (the rest is rounding), else reported as not converged.
        stuck = ~moved & ~done & (restart | (count == 0))
        tiny_g = jnp.max(jnp.abs(g), -1) <= stuck_gtol
        converged = converged | stalled | (stuck & tiny_g)
        # After a failed search with memory, drop the memory: the next try is along -g.
        count = jnp.where(~moved & ~done, 0, count)
        return dict(x=x_new, f=f_new, g_prev=g, step=x_new - x, pending=moved, s=s_hist,
                    y=y_hist, rho=rho, count=count, done=done | stalled | stuck,
                    converged=converged, k=st["k"] + moved)

    st = jax.lax.while_loop(lambda st: jnp.any(~st["done"]), body, state)
    return st["x"], st["f"], st["converged"], st["k"]


@functools.partial(jax.jit, static_argnames=("predict",))
def _solve(x0_BP, log_n_Bn, log_d_Bn, log_loss_Bn, weight_Bn, active_B, settings, *, predict):
    """One compiled program per (predict, B, n): the tolerances are traced values, not
    constants, so changing them reuses the compilation."""
    delta, max_iter, gtol, ftol, stuck_gtol = settings

    def fun_B(x):  # [B,P] -> [B]; [B,J,P] -> [B,J] (data broadcast over the J axis)
        data = (log_n_Bn, log_d_Bn, log_loss_Bn, weight_Bn)
        if x.ndim == 3:
            data = tuple(a[:, None] for a in data)
        return huber_objective(predict, x, *data, delta=delta)

    return _lbfgs(fun_B, x0_BP, active_B, max_iter, gtol, ftol, stuck_gtol)


def _bucket(k: int) -> int:
    """Problems are padded to a power of two (at least 16): fits of nearby sizes share one
    compilation, which on CPU costs more than the padding."""
    return max(16, 1 << (k - 1).bit_length())


def minimise(predict: Callable, starts_RSP, log_n_Rn, log_d_Rn, log_loss_Rn, weight_Rn, *,
             delta: float = 1e-3, max_iter: int = 1000, gtol: float = 1e-11,
             ftol: float = 1e-14, stuck_gtol: float = 1e-6) -> Solution:
    """Minimise the Huber objective of `predict(x, log N, log D) -> log loss` from S starts for
    each of R data sets (rows of the [R, n] arrays). `predict` must be a module-level function
    (it is a static argument of the compiled program)."""
    starts_RSP = np.asarray(starts_RSP, np.float64)
    r, s, p = starts_RSP.shape
    n = np.shape(log_n_Rn)[-1]
    b = r * s
    # Each (data set, start) pair is one problem with its own row of data. Rows are padded to
    # a multiple of PAD runs (zero weight) and problems to a bucket (inactive from the start).
    rows = lambda a: np.repeat(np.asarray(a, np.float64), s, axis=0)
    extra_n, extra_b = -n % PAD, _bucket(b) - b
    def pad(a, fill_runs=None):
        a = np.concatenate([a, np.repeat(a[:, -1:], extra_n, 1) if fill_runs is None
                            else np.full((a.shape[0], extra_n), fill_runs)], 1)
        return np.concatenate([a, np.repeat(a[-1:], extra_b, 0)], 0)
    data = [pad(rows(a)) for a in (log_n_Rn, log_d_Rn, log_loss_Rn)] + [pad(rows(weight_Rn), 0.0)]
    x0 = np.concatenate([starts_RSP.reshape(b, p), np.repeat(starts_RSP.reshape(b, p)[-1:],
                                                             extra_b, 0)])
    active = np.arange(b + extra_b) < b
    settings = (float(delta), int(max_iter), float(gtol), float(ftol), float(stuck_gtol))
    with x64():
        out = _solve(jnp.asarray(x0), *(jnp.asarray(a) for a in data), jnp.asarray(active),
                     tuple(jnp.asarray(v) for v in settings), predict=predict)
        x, f, conv, k = (np.asarray(o)[:b] for o in out)
    return Solution(x.reshape(r, s, p), f.reshape(r, s), conv.reshape(r, s), k.reshape(r, s))


def best_of(sol: Solution):
    """Per data set, the start with the lowest objective: (x [R,P], value [R], converged [R],
    index of the start [R], starts within 1e-9 relative of the best [R])."""
    i = np.argmin(sol.value, axis=1)
    r = np.arange(sol.value.shape[0])
    best = sol.value[r, i]
    near = np.sum(sol.value <= best[:, None] + 1e-9 * np.abs(best[:, None]) + 1e-300, axis=1)
    return sol.x[r, i], best, sol.converged[r, i], i, near


class GridFit(NamedTuple):
    x: np.ndarray            # [P] best point
    value: float             # objective there
    converged: bool
    steps: int               # iterations of the winning start, both phases
    start: np.ndarray        # [P] the grid point it came from
    n_near_best: int         # polished starts that reached the best objective
    optima: np.ndarray       # [polish, P] polished points, best first


def fit_from_grid(predict: Callable, starts_SP, log_n, log_d, log_loss, *, delta=1e-3,
                  polish=8, grid_iter=200, max_iter=2000) -> GridFit:
    """Two phases, so the slow tail of hopeless starts does not set the cost (a vmapped loop
    runs until its slowest member stops): every start for `grid_iter` iterations, then the best
    `polish` of them to convergence."""
    one = lambda a: np.asarray(a, np.float64)[None]
    data = (one(log_n), one(log_d), one(log_loss), one(np.ones_like(log_n)))
    rough = minimise(predict, one(starts_SP), *data, delta=delta, max_iter=grid_iter)
    order = np.argsort(rough.value[0])[:polish]
    fine = minimise(predict, rough.x[:, order], *data, delta=delta, max_iter=max_iter)
    x, value, converged, i, near = (v[0] for v in best_of(fine))
    ranked = np.argsort(fine.value[0])
    return GridFit(x=x, value=float(value), converged=bool(converged),
                   steps=int(rough.steps[0, order[i]] + fine.steps[0, i]),
                   start=np.asarray(starts_SP)[order[i]], n_near_best=int(near),
                   optima=fine.x[0, ranked])


def refit_weighted(predict: Callable, seeds_SP, log_n, log_d, log_loss, weights_Rn, *,
                   delta=1e-3, max_iter=2000):
    """Refit R re-weighted copies of one data set (bootstrap resamples), each from the same S
    seeds; returns the best point per copy [R, P] and whether it converged [R]."""
    r = len(weights_Rn)
    rep = lambda a: np.broadcast_to(np.asarray(a, np.float64), (r,) + np.shape(a))
    sol = minimise(predict, rep(seeds_SP), rep(log_n), rep(log_d), rep(log_loss), weights_Rn,
                   delta=delta, max_iter=max_iter)
    x, _, conv, _, _ = best_of(sol)
    return x, conv
