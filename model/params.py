"""The parameter tree, declared once: shape, logical axes and initialiser of every parameter.

`init`, `param_axes` and the exact parameter count all derive from `param_specs`, so they can
never disagree about what the model holds.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    shape: tuple[int, ...]
    axes: tuple[str, ...]  # logical axis names, one per dimension
    init_std: float | None  # normal(0, std); None means ones (norm gains)


def param_specs(cfg: ModelConfig) -> dict:
    """The tree of ParamSpecs. Layers are stacked on a leading `layers` axis (scanned)."""
    D, L, H, G, K, F, V = (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                           cfg.d_ff, cfg.vocab_size)
    std = 0.02
    # Residual-branch outputs are scaled down so the residual stream's variance does not grow
    # with depth (GPT-2's 1/sqrt(2L)).
    out_std = std / math.sqrt(2 * L)
    specs = {
        "embed": ParamSpec((V, D), ("vocab", "embed"), std),
        "layers": {
            "attn_norm": ParamSpec((L, D), ("layers", "embed"), None),
            "wq": ParamSpec((L, D, H, K), ("layers", "embed", "heads", "head_dim"), std),
            "wk": ParamSpec((L, D, G, K), ("layers", "embed", "kv_heads", "head_dim"), std),
            "wv": ParamSpec((L, D, G, K), ("layers", "embed", "kv_heads", "head_dim"), std),
            "wo": ParamSpec((L, H, K, D), ("layers", "heads", "head_dim", "embed"), out_std),
            "mlp_norm": ParamSpec((L, D), ("layers", "embed"), None),
            "w_gate": ParamSpec((L, D, F), ("layers", "embed", "mlp"), std),
            "w_up": ParamSpec((L, D, F), ("layers", "embed", "mlp"), std),
            "w_down": ParamSpec((L, F, D), ("layers", "mlp", "embed"), out_std),
        },
        "final_norm": ParamSpec((D,), ("embed",), None),
    }
    if not cfg.tie_embeddings:
        specs["unembed"] = ParamSpec((D, V), ("embed", "vocab"), std)
    return specs


def _is_spec(x) -> bool:
    return isinstance(x, ParamSpec)


def param_axes(cfg: ModelConfig) -> dict:
    """The parameter tree with each leaf replaced by its tuple of logical axis names."""
    return jax.tree.map(lambda s: s.axes, param_specs(cfg), is_leaf=_is_spec)


def init(cfg: ModelConfig, key: jax.Array) -> dict:
    """Fresh parameters for `cfg`, in cfg.param_dtype. Pure: the same key gives the same tree."""
    specs = param_specs(cfg)
    leaves, treedef = jax.tree.flatten(specs, is_leaf=_is_spec)
    keys = jax.random.split(key, len(leaves))
    dtype = jnp.dtype(cfg.param_dtype)

    def make(spec: ParamSpec, k: jax.Array) -> jax.Array:
        if spec.init_std is None:
            return jnp.ones(spec.shape, dtype)
        return (spec.init_std * jax.random.normal(k, spec.shape, jnp.float32)).astype(dtype)

    return jax.tree.unflatten(treedef, [make(s, k) for s, k in zip(leaves, keys)])
