"""LoRA: low-rank adapters on a model's matrices, as a pure transformation of the parameters.

An adapted matrix is W + (alpha / rank) * A @ B, with A [in, rank] drawn at random and B
[rank, out] zero, so an adapted model starts equal to its base (Hu et al. 2021). Adapters are a
tree of their own ({"layers": {"wq": {"a", "b"}, ...}}): a trainer optimises only them and
passes the base as a frozen input, and `merge` folds them into ordinary parameters for
inference and export, so nothing downstream knows LoRA exists.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from model.config import ConfigError, ModelConfig

# Each adaptable matrix: how many of its dimensions after the layer axis are inputs.
ADAPTABLE = {"wq": 1, "wk": 1, "wv": 1, "wo": 2, "w_gate": 1, "w_up": 1, "w_down": 1}


def check_targets(targets) -> tuple[str, ...]:
    targets = tuple(targets)
    unknown = [t for t in targets if t not in ADAPTABLE]
    if unknown or not targets:
        raise ConfigError(f"lora.targets {list(targets)}: choose among {list(ADAPTABLE)}")
    return targets


def _in_out(shape: tuple[int, ...], n_in: int) -> tuple[int, int]:
    return math.prod(shape[1:1 + n_in]), math.prod(shape[1 + n_in:])


def init(cfg: ModelConfig, rank: int, targets, key: jax.Array) -> dict:
    """Fresh adapters: A ~ normal(0, 1/in) so A's outputs keep unit scale, B = 0."""
    from model.params import param_specs

    specs = param_specs(cfg)["layers"]
    targets = check_targets(targets)
    keys = jax.random.split(key, len(targets))
    adapters = {}
    for name, k in zip(targets, keys):
        shape = specs[name].shape
        n_in, n_out = _in_out(shape, ADAPTABLE[name])
        adapters[name] = {
            "a": jax.random.normal(k, (shape[0], n_in, rank), jnp.float32) / math.sqrt(n_in),
            "b": jnp.zeros((shape[0], rank, n_out), jnp.float32)}
    return {"layers": adapters}


def merge(params: dict, adapters: dict, alpha: float) -> dict:
    """`params` with every adapted matrix replaced by W + (alpha / rank) * A @ B."""
    layers = dict(params["layers"])
    for name, ab in adapters["layers"].items():
        w = layers[name]
        rank = ab["a"].shape[-1]
        delta = jnp.einsum("lir,lro->lio", ab["a"], ab["b"]) * (alpha / rank)
        layers[name] = w + delta.reshape(w.shape).astype(w.dtype)
    return {**params, "layers": layers}


def count(adapters: dict) -> int:
    return sum(x.size for x in jax.tree.leaves(adapters))
