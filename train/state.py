"""The training state {"params", "opt_state", "step"}: where its parameters come from and where
every buffer lives.

Parameters start random (`random_params`) or from any source `infer.load` reads (`load_params`:
a twofiles run or checkpoint, a GGUF, a Hugging Face directory, the alias smollm2): only the
parameters are taken, never another run's Adam moments, and `fresh` gives them a new optimizer.
Every tree is described first as ShapeDtypeStructs carrying their shardings (`abstract_params`),
so random parameters are created already sharded, loaded ones are placed piece by piece, and a
checkpoint is restored straight into place: no device ever holds a whole large tree.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import model
from model import sharding
from model.config import ConfigError
from train.config import TrainConfig


def abstract_params(mcfg: model.ModelConfig, mesh) -> dict:
    """The model's parameters as ShapeDtypeStructs with their shardings on `mesh`."""
    shapes = jax.eval_shape(lambda: model.init(mcfg, jax.random.key(0)))
    return with_shardings(shapes, sharding.param_shardings(mcfg, mesh))


def with_shardings(shapes, shardings):
    """ShapeDtypeStructs carrying the target shardings (what is created or restored into)."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, shardings)


def shardings_of(abstract) -> object:
    return jax.tree.map(lambda s: s.sharding, abstract)


def random_params(mcfg: model.ModelConfig, mesh, key: jax.Array) -> dict:
    """Fresh random parameters, created in place on the mesh."""
    return jax.jit(lambda k: model.init(mcfg, k),
                   out_shardings=sharding.param_shardings(mcfg, mesh))(key)


def place(host_params, abstract, where: str) -> dict:
    """Host (numpy or single-device) arrays put on the mesh as `abstract` says; every process
    holds the whole host tree and places only its own pieces."""
    got = jax.tree.structure(host_params)
    want = jax.tree.structure(abstract)
    if got != want:
        raise ConfigError(f"{where}: its parameters do not have this model's layout "
                          f"({got.num_leaves} tensors, expected {want.num_leaves})")

    def put(x, spec):
        x = np.asarray(x)
        if x.shape != spec.shape:
            raise ConfigError(f"{where}: a parameter has shape {x.shape}, the model expects "
                              f"{spec.shape}")
        x = x.astype(spec.dtype)
        return jax.make_array_from_callback(spec.shape, spec.sharding, lambda idx: x[idx])

    return jax.tree.map(put, host_params, abstract)


def load_params(source, mesh) -> tuple:
    """(infer Model, its parameters placed on `mesh`) from anything `infer.load` reads. The
    Model carries the config, tokenizer and chat conventions the parameters belong to."""
    import infer

    loaded = infer.load(source)
    abstract = abstract_params(loaded.config, mesh)
    return loaded, place(loaded.params, abstract, str(source))


def masked_optimizer(optimizer: optax.GradientTransformation, trainable
                     ) -> optax.GradientTransformation:
    """`optimizer` for the leaves where `trainable` (a tree of bools shaped like the params) is
    True; the others get zero updates and no optimizer state (no Adam moments for a frozen base).
    The step (train.step, trainable=) also leaves them untouched bit for bit."""
    if trainable is None:
        return optimizer
    labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
    return optax.multi_transform({"train": optimizer, "freeze": optax.set_to_zero()}, labels)


def state_shardings(abstract, optimizer: optax.GradientTransformation, mesh) -> dict:
    """NamedShardings for the state: optimizer moments follow their parameters, counters are
    replicated."""
    replicated = NamedSharding(mesh, P())
    p_shard = shardings_of(abstract)
    opt_shape = jax.eval_shape(optimizer.init, abstract)
    # A masked optimizer (masked_optimizer) holds MaskedNode where a frozen leaf has no state.
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    opt_shard = optax.tree_map_params(
        optimizer, lambda x, s: x if masked(x) else s, opt_shape, p_shard,
        transform_non_params=lambda _: replicated, is_leaf=masked)
    return {"params": p_shard, "opt_state": opt_shard, "step": replicated}


def abstract_state(abstract, optimizer, mesh) -> dict:
    """The state as ShapeDtypeStructs with shardings (what a checkpoint restores into)."""
    shapes = jax.eval_shape(lambda p: {"params": p, "opt_state": optimizer.init(p),
                                       "step": jnp.zeros((), jnp.int32)}, abstract)
    return with_shardings(shapes, state_shardings(abstract, optimizer, mesh))


def fresh(params, optimizer: optax.GradientTransformation, abstract, mesh) -> dict:
    """A state at step 0 around `params` (already placed), with a new optimizer state."""
    shardings = state_shardings(abstract, optimizer, mesh)
    init = lambda p: {"params": p, "opt_state": optimizer.init(p),  # noqa: E731
                      "step": jnp.zeros((), jnp.int32)}
    return jax.jit(init, out_shardings=shardings)(params)


def check_fits(cfg: TrainConfig) -> None:
    """Refuses a config whose training state and activations clearly exceed device memory."""
    n = model.count_params(cfg.model)["params"]
    fsdp_ways = cfg.mesh.fsdp * cfg.mesh.tensor
    state_bytes = 16 * n / fsdp_ways  # params, grads, two Adam moments, float32
    micro = cfg.data.batch_size // cfg.data.grad_accum
    data_ways = max(1, jax.device_count() // fsdp_ways)
    m, T = cfg.model, cfg.seq_len
    per_layer = 4 * T * (12 * m.d_model + 3 * m.d_ff + 2 * m.n_heads * T)  # float32 activations
    layers = 2 if m.remat else m.n_layers
    act_bytes = micro / data_ways * (layers * per_layer + 3 * 4 * T * m.vocab_size)
    need = state_bytes + act_bytes
    stats = jax.local_devices()[0].memory_stats() or {}
    have = stats.get("bytes_limit")
    if have is None:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / jax.local_device_count()
    if need > have:
        raise ConfigError(
            f"config needs about {need / 2**30:.1f} GiB per device ({n / 1e6:.0f}M parameters, "
            f"microbatch {micro} x {T} tokens) but a device has {have / 2**30:.1f} GiB; lower "
            "data.batch_size, raise data.grad_accum, set model.remat=true or use more devices")
