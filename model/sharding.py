"""Where parameters and batches live on a device mesh.

The model names only logical axes; this table maps them onto the mesh axes
("data", "fsdp", "tensor"). Changing the parallelism means changing the rules or the mesh shape.
"""

from __future__ import annotations

from functools import partial
from typing import Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from model.config import ModelConfig
from model.params import init, param_axes

MESH_AXES = ("data", "fsdp", "tensor")

# Fully-sharded data parallel along the width, Megatron-style tensor parallel along heads, MLP
# width and vocabulary. Layers stay whole: the forward scans over them.
DEFAULT_RULES: Mapping[str, str | None] = {
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "layers": None,
}


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices; -1 takes what the other axes leave."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    known = int(np.prod([s for s in sizes if s != -1]))
    if sizes.count(-1) > 1 or len(devices) % known:
        raise ValueError(f"mesh (data={data}, fsdp={fsdp}, tensor={tensor}) does not fit "
                         f"{len(devices)} devices")
    sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} "
                         f"devices, have {len(devices)}")
    # Auto axes: XLA propagates shardings from the parameters and the batch (pjit-style), so the
    # model code carries no sharding annotations. (jax.make_mesh defaults to Explicit axes.)
    return jax.make_mesh(tuple(sizes), MESH_AXES, devices=devices,
                         axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_spec(axes: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh,
                    rules: Mapping[str, str | None] = DEFAULT_RULES) -> P:
    """The PartitionSpec for one array. A dimension the mesh axis does not divide is replicated
    (e.g. 3 kv heads on a tensor axis of 2), as is any mesh axis already used by the array."""
    used, spec = set(), []
    for name, size in zip(axes, shape):
        if name not in rules:
            raise KeyError(f"no sharding rule for logical axis {name!r}; rules: {dict(rules)}")
        mesh_axis = rules[name]
        if mesh_axis is None or mesh_axis in used or size % mesh.shape[mesh_axis]:
            spec.append(None)
        else:
            used.add(mesh_axis)
            spec.append(mesh_axis)
    return P(*spec)


def param_shardings(cfg: ModelConfig, mesh: Mesh,
                    rules: Mapping[str, str | None] = DEFAULT_RULES) -> dict:
    """A NamedSharding for every parameter, from its logical axes and the rules."""
    shapes = jax.eval_shape(partial(init, cfg), jax.random.key(0))
    return jax.tree.map(
        lambda axes, s: NamedSharding(mesh, logical_to_spec(axes, s.shape, mesh, rules)),
        param_axes(cfg), shapes, is_leaf=lambda x: isinstance(x, tuple))


def init_sharded(cfg: ModelConfig, key: jax.Array, mesh: Mesh,
                 rules: Mapping[str, str | None] = DEFAULT_RULES) -> dict:
    """Parameters created in place on the mesh: no device ever holds the whole tree."""
    return jax.jit(partial(init, cfg), out_shardings=param_shardings(cfg, mesh, rules))(key)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """[B, T] token batches: rows split over every data-parallel axis."""
    return NamedSharding(mesh, P(("data", "fsdp"), None))
