"""The training step: one optimizer update over a global batch, jitted over sharded state.

State is a dict {"params", "opt_state", "step"}; its buffers are donated, so an update reuses the
memory of the state it replaces. A step with grad_accum = A splits the batch into A microbatches
and sums token losses and gradients over them before one update, so it computes the same update
as one batch of the full size (up to float summation order).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import model
from model import sharding
from train.config import TrainConfig
from train.optim import make_optimizer, schedule

BATCH_AXES = ("data", "fsdp")


def token_losses(params, inputs_BT, targets_BT, mcfg: model.ModelConfig):
    """Per-token negative log-likelihood in float32, [B, T]."""
    logits_BTV, _ = model.forward(params, inputs_BT, mcfg)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits_BTV.astype(jnp.float32), targets_BT)


def _mask(batch) -> jax.Array:
    # Optional per-token loss weights (later stages mask prompts); pretraining counts every token.
    if "mask" in batch:
        return batch["mask"].astype(jnp.float32)
    return jnp.ones(batch["targets"].shape, jnp.float32)


def _loss_sum(params, inputs_BT, targets_BT, mask_BT, mcfg):
    return (token_losses(params, inputs_BT, targets_BT, mcfg) * mask_BT).sum()


def make_mesh(cfg: TrainConfig):
    """The config's (data, fsdp, tensor) mesh over all devices (Auto axes: shardings are given at
    the jit boundary and XLA propagates them inside)."""
    return sharding.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)


def state_shardings(cfg: TrainConfig, optimizer: optax.GradientTransformation, mesh):
    """NamedShardings for the train state: optimizer moments follow their parameters."""
    p_shard = sharding.param_shardings(cfg.model, mesh)
    replicated = NamedSharding(mesh, P())
    p_shape = jax.eval_shape(lambda: model.init(cfg.model, jax.random.key(0)))
    opt_shape = jax.eval_shape(optimizer.init, p_shape)
    opt_shard = optax.tree_map_params(
        optimizer, lambda _, s: s, opt_shape, p_shard,
        transform_non_params=lambda _: replicated)
    return {"params": p_shard, "opt_state": opt_shard, "step": replicated}


def init_state(cfg: TrainConfig, optimizer, mesh, key: jax.Array):
    """A fresh train state, created already sharded (no full copy on one device)."""
    shardings = state_shardings(cfg, optimizer, mesh)

    def init(key):
        params = model.init(cfg.model, key)
        return {"params": params, "opt_state": optimizer.init(params),
                "step": jnp.zeros((), jnp.int32)}

    return jax.jit(init, out_shardings=shardings)(key)


def make_train_step(cfg: TrainConfig, mesh, optimizer: optax.GradientTransformation | None = None,
                    *, donate: bool = True) -> Callable:
    """Returns jitted `step(state, batch) -> (state, metrics)`; batch holds int32 [B, T] `inputs`
    and `targets` sharded over the data axes. metrics: loss, grad_norm, lr (float32 scalars)."""
    optimizer = optimizer or make_optimizer(cfg.optim, cfg.steps)
    lr_at = schedule(cfg.optim, cfg.steps)
    mcfg, accum = cfg.model, cfg.data.grad_accum
    grad_fn = jax.value_and_grad(_loss_sum)

    def accumulate(params, batch):
        mask_BT = _mask(batch)
        if accum == 1:
            loss_sum, grads = grad_fn(params, batch["inputs"], batch["targets"], mask_BT, mcfg)
            return loss_sum, grads, mask_BT.sum()

        # Row r of microbatch a is global row r * accum + a: every device keeps its own rows.
        def split(x_BT):
            B, T = x_BT.shape
            x_ABT = x_BT.reshape(B // accum, accum, T).swapaxes(0, 1)
            return jax.lax.with_sharding_constraint(x_ABT, NamedSharding(mesh, P(None, BATCH_AXES)))

        micro = (split(batch["inputs"]), split(batch["targets"]), split(mask_BT))

        def body(carry, xs):
            loss_acc, grads_acc = carry
            loss_sum, grads = grad_fn(params, *xs, mcfg)
            return (loss_acc + loss_sum, jax.tree.map(jnp.add, grads_acc, grads)), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (loss_sum, grads), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros), micro)
        return loss_sum, grads, mask_BT.sum()

    def step(state, batch):
        params = state["params"]
        loss_sum, grads, count = accumulate(params, batch)
        grads = jax.tree.map(lambda g: g / count, grads)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params)
        new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state,
                     "step": state["step"] + 1}
        metrics = {"loss": loss_sum / count, "grad_norm": optax.global_norm(grads),
                   "lr": jnp.asarray(lr_at(state["step"]), jnp.float32)}
        return new_state, metrics

    s_shard = state_shardings(cfg, optimizer, mesh)
    b_shard = sharding.batch_sharding(mesh)
    replicated = NamedSharding(mesh, P())
    return jax.jit(step, in_shardings=(s_shard, b_shard), out_shardings=(s_shard, replicated),
                   donate_argnums=(0,) if donate else ())


def make_eval_step(cfg: TrainConfig, mesh) -> Callable:
    """Returns jitted `eval_step(params, batch) -> (summed token loss, token count)`."""
    mcfg = cfg.model

    def eval_step(params, batch):
        mask_BT = _mask(batch)
        return _loss_sum(params, batch["inputs"], batch["targets"], mask_BT, mcfg), mask_BT.sum()

    p_shard = sharding.param_shardings(cfg.model, mesh)
    return jax.jit(eval_step, in_shardings=(p_shard, sharding.batch_sharding(mesh)),
                   out_shardings=NamedSharding(mesh, P()))


@jax.jit
def all_finite(tree) -> jax.Array:
    """True when every leaf of `tree` is finite (checked before a checkpoint is written)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
