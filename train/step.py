"""The training step: one optimizer update from a loss function, jitted over sharded state.

    step = make_step(loss_fn, optimizer, shardings, mesh, grad_accum=4)
    state, metrics = step(state, batch, frozen)

`loss_fn(params, batch, frozen) -> (loss_sum, count, metrics)` is pure and returns sums (see
train.losses). The step divides the loss, its gradient and each metric by max(count, 1), so a
batch with nothing to count (an all-zero loss mask) gives loss 0 and a zero gradient, not NaN.

State is a dict {"params", "opt_state", "step"} (train.state builds it); its buffers are donated,
so an update reuses the memory of the state it replaces. With grad_accum = A the batch is split
into A microbatches whose sums are added before one update: the same update as one batch of
the full size (up to float summation order). With a `trainable` mask (a tree of bools shaped
like the params), only those leaves are updated; the others come out bit for bit unchanged.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from model import sharding
from train.config import TrainConfig

BATCH_AXES = ("data", "fsdp")


def make_mesh(cfg: TrainConfig):
    """The config's (data, fsdp, tensor) mesh over all devices (Auto axes: shardings are given at
    the jit boundary and XLA propagates them inside)."""
    return sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)


def batch_sharding(mesh) -> NamedSharding:
    """Any batch leaf [B, ...]: rows split over the data axes, other dimensions whole."""
    return NamedSharding(mesh, P(BATCH_AXES))


class OnMesh:
    """An iterator's batches put on the mesh's data axes (single process: each batch is the
    global batch); get_state/set_state pass through, so the loop checkpoints its position."""

    def __init__(self, batches, mesh):
        self.batches, self.sharding = batches, batch_sharding(mesh)

    def __iter__(self):
        return self

    def __next__(self):
        return jax.device_put(next(self.batches), self.sharding)

    def get_state(self) -> dict:
        return self.batches.get_state()

    def set_state(self, state: dict) -> None:
        self.batches.set_state(state)


def _split_microbatches(batch, accum: int, mesh):
    # Row r of microbatch a is global row r * accum + a: every device keeps its own rows.
    def split(x):
        B = x.shape[0]
        x_A = x.reshape(B // accum, accum, *x.shape[1:]).swapaxes(0, 1)
        return jax.lax.with_sharding_constraint(x_A, NamedSharding(mesh, P(None, BATCH_AXES)))
    return jax.tree.map(split, batch)


def summed_grads(loss_fn: Callable, params, batch, frozen, accum: int, mesh):
    """(loss_sum, count, metric sums, gradient of loss_sum) over the whole batch."""
    def value_and_grad(params, batch):
        def loss(params):
            loss_sum, count, metrics = loss_fn(params, batch, frozen)
            return loss_sum, (count, metrics)
        (loss_sum, (count, metrics)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return (loss_sum, jnp.asarray(count, jnp.float32), metrics), grads

    if accum == 1:
        return value_and_grad(params, batch)
    micro = _split_microbatches(batch, accum, mesh)

    def body(carry, mb):
        sums, grads = value_and_grad(params, mb)
        return jax.tree.map(jnp.add, carry, (sums, grads)), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         jax.eval_shape(value_and_grad, params, first))
    total, _ = jax.lax.scan(body, zeros, micro)
    return total


def _apply(params, updates, trainable):
    if trainable is None:
        return optax.apply_updates(params, updates)
    # A frozen leaf is returned as is (p + 0 would turn -0.0 into +0.0).
    return jax.tree.map(lambda t, p, u: (p + u).astype(p.dtype) if t else p,
                        trainable, params, updates)


def _trainable_norm(grads, trainable) -> jax.Array:
    if trainable is None:
        return optax.global_norm(grads)
    leaves = [g for g, t in zip(jax.tree.leaves(grads), jax.tree.leaves(trainable)) if t]
    return optax.global_norm(leaves)


def make_step(loss_fn: Callable, optimizer: optax.GradientTransformation, state_shardings,
              mesh, *, lr_at: Callable | None = None, grad_accum: int = 1, trainable=None,
              donate: bool = True) -> Callable:
    """Returns jitted `step(state, batch, frozen=None) -> (state, metrics)`.

    batch: a dict of arrays [B, ...] sharded over the data axes; frozen: any tree the loss reads
    but never trains (a reference model, LoRA's base), placed where it already is. metrics
    (float32 scalars): loss, count, grad_norm (over trainable leaves), lr when `lr_at` is given,
    and the loss function's metrics, each divided by max(count, 1).
    """
    def step(state, batch, frozen):
        params = state["params"]
        (loss_sum, count, metric_sums), grads = summed_grads(
            loss_fn, params, batch, frozen, grad_accum, mesh)
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_state = {"params": _apply(params, updates, trainable), "opt_state": opt_state,
                     "step": state["step"] + 1}
        metrics = {k: v / denom for k, v in metric_sums.items()}
        metrics.update(loss=loss_sum / denom, count=count,
                       grad_norm=_trainable_norm(grads, trainable))
        if lr_at is not None:
            metrics["lr"] = jnp.asarray(lr_at(state["step"]), jnp.float32)
        return new_state, metrics

    replicated = NamedSharding(mesh, P())
    jitted = jax.jit(step, in_shardings=(state_shardings, batch_sharding(mesh), None),
                     out_shardings=(state_shardings, replicated),
                     donate_argnums=(0,) if donate else ())
    return lambda state, batch, frozen=None: jitted(state, batch, frozen)


def make_eval_step(loss_fn: Callable, param_shardings, mesh) -> Callable:
    """Returns jitted `eval_step(params, batch, frozen=None) -> (loss_sum, count, metrics)`:
    the loss function's sums, for an evaluation to add up over its batches."""
    def eval_step(params, batch, frozen):
        loss_sum, count, metrics = loss_fn(params, batch, frozen)
        return loss_sum, jnp.asarray(count, jnp.float32), metrics

    jitted = jax.jit(eval_step, in_shardings=(param_shardings, batch_sharding(mesh), None),
                     out_shardings=NamedSharding(mesh, P()))
    return lambda params, batch, frozen=None: jitted(params, batch, frozen)


@jax.jit
def all_finite(tree) -> jax.Array:
    """True when every leaf of `tree` is finite (checked before a checkpoint is written)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
