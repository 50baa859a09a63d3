"""The model's forward pass laid out for fast decoding on CPUs: int8 weights, fused projections.

Decoding one token reads every weight once, so its speed is memory bandwidth over bytes per
weight. On CPUs without bf16 units (AVX2), XLA's bfloat16 matmuls are slower than float32, while
an int8 weight converted inside the dot reads a quarter of the bytes. So `prepare` re-lays the
parameters once:

- q/k/v fused into one [in, out] matrix and gate/up into another, so a block is four matmuls;
  the tied output projection gets its own [D, V] copy (XLA's matrix-vector product is fastest
  when the vector contracts the major axis: measured 3x faster than [V, D] at batch 1);
- optionally int8 with one float32 scale per output column (symmetric, absmax); products
  accumulate in float32 and are scaled after the dot. With `dtype="float32"` the same code computes the
  same function as `model.forward` (the engine's tests check it to 1e-5).

`forward` has `model.forward`'s signature and reuses its pure functions (norm, rope); its cache
(`init_cache`) keeps per-layer [B, G, S, K] k and v so attention reads it without a copy; with
`last_only` only the last position is projected to the vocabulary (prefill).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from model import transformer as tfm
from model.config import ModelConfig

DTYPES = ("float32", "int8")


def _as_matrix(w_IO: np.ndarray, dtype: str) -> dict:
    """[in, out] float matrix (leading dims batched) -> {"w": [in, out], "scale": [out]}."""
    w_IO = np.asarray(w_IO, np.float32)
    if dtype == "float32":
        return {"w": w_IO, "scale": np.ones(w_IO.shape[:-2] + w_IO.shape[-1:], np.float32)}
    scale = np.abs(w_IO).max(axis=-2) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(w_IO / scale[..., None, :]), -127, 127).astype(np.int8)
    return {"w": q, "scale": scale}


def prepare(params: dict, cfg: ModelConfig, dtype: str = "int8") -> dict:
    """Parameters for `forward`, from `model`'s tree (float arrays); done once, on the host."""
    if dtype not in DTYPES:
        raise ValueError(f"decode weights dtype must be one of {DTYPES}, got {dtype!r}")
    lay = {k: np.asarray(v, np.float32) for k, v in params["layers"].items()}
    L, D = lay["wq"].shape[:2]
    qkv_LDO = np.concatenate([lay["wq"].reshape(L, D, -1), lay["wk"].reshape(L, D, -1),
                              lay["wv"].reshape(L, D, -1)], axis=-1)
    gate_up_LDO = np.concatenate([lay["w_gate"], lay["w_up"]], axis=-1)
    embed_VD = np.asarray(params["embed"], np.float32)
    unembed_DV = embed_VD.T if cfg.tie_embeddings else np.asarray(params["unembed"], np.float32)
    layers = {
        "attn_norm": lay["attn_norm"], "mlp_norm": lay["mlp_norm"],
        "qkv": _as_matrix(qkv_LDO, dtype),
        "wo": _as_matrix(lay["wo"].reshape(L, -1, D), dtype),
        "gate_up": _as_matrix(gate_up_LDO, dtype),
        "down": _as_matrix(lay["w_down"], dtype),
    }
    if dtype == "float32":
        # One buffer per layer (a list, unrolled in `forward`): XLA hands each straight to its
        # matmul, where scanning over stacked [L, ...] weights makes it copy each layer's slice
        # first (seen in the optimised HLO), tripling the bytes moved per token. int8 weights
        # stay stacked and scanned: XLA converts them to float32 in a separate pass either way,
        # and unrolled it converts every layer up front (measured ~10x slower).
        layers = [jax.tree.map(lambda a, i=i: a[i], layers) for i in range(L)]
    out = {
        # The lookup table stays float32 (only B*T rows are read per step); the output
        # projection gets its own [D, V] copy: a matrix-vector product reads it fastest.
        "embed": embed_VD,
        "unembed": _as_matrix(np.ascontiguousarray(unembed_DV), dtype),
        "final_norm": np.asarray(params["final_norm"], np.float32),
        "layers": layers,
    }
    return jax.tree.map(jnp.asarray, out)


def _linear(x_BTI: jax.Array, w: dict) -> jax.Array:
    """(x @ W) * scale, accumulated in float32."""
    w_IO = w["w"].astype(jnp.float32)
    y_BTO = jnp.einsum("bti,io->bto", x_BTI, w_IO, preferred_element_type=jnp.float32)
    return y_BTO * w["scale"]


def _block(x_BTD, layer, kv, positions_BT, mask_BTS, write_at, cfg: ModelConfig):
    B, T, _ = x_BTD.shape
    H, G, K = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    h_BTD = tfm.rms_norm(x_BTD, layer["attn_norm"], cfg.norm_eps)
    qkv_BTO = _linear(h_BTD, layer["qkv"])
    q_BTHK = tfm.rope(qkv_BTO[..., :H * K].reshape(B, T, H, K), positions_BT, cfg.rope_theta)
    k_BTGK = tfm.rope(qkv_BTO[..., H * K:(H + G) * K].reshape(B, T, G, K), positions_BT,
                      cfg.rope_theta)
    v_BTGK = qkv_BTO[..., (H + G) * K:].reshape(B, T, G, K)
    k_BGSK, v_BGSK = (jax.lax.dynamic_update_slice_in_dim(
        c, new.transpose(0, 2, 1, 3).astype(c.dtype), write_at, axis=2)
        for c, new in zip(kv, (k_BTGK, v_BTGK)))
    attn_BTHK = _attend(q_BTHK, k_BGSK, v_BGSK, mask_BTS, cfg)
    x_BTD = x_BTD + _linear(attn_BTHK.reshape(B, T, H * K), layer["wo"])
    h_BTD = tfm.rms_norm(x_BTD, layer["mlp_norm"], cfg.norm_eps)
    gate_BTF, up_BTF = jnp.split(_linear(h_BTD, layer["gate_up"]), 2, axis=-1)
    x_BTD = x_BTD + _linear(jax.nn.silu(gate_BTF) * up_BTF, layer["down"])
    return x_BTD, (k_BGSK, v_BGSK)


def _attend(q_BTHK, k_BGSK, v_BGSK, mask_BTS, cfg: ModelConfig) -> jax.Array:
    """`model`'s attention over a [B, G, S, K] cache: the matmuls then read the cache in place
    (the [B, S, G, K] layout makes XLA transpose every layer's cache at every step)."""
    B, T, H, K = q_BTHK.shape
    G = cfg.n_kv_heads
    q_BGRTK = q_BTHK.reshape(B, T, G, H // G, K).transpose(0, 2, 3, 1, 4)
    scores_BGRTS = jnp.einsum("bgrtk,bgsk->bgrts", q_BGRTK, k_BGSK,
                              preferred_element_type=jnp.float32) * K**-0.5
    scores_BGRTS = jnp.where(mask_BTS[:, None, None], scores_BGRTS, -1e30)
    probs_BGRTS = jax.nn.softmax(scores_BGRTS, axis=-1)
    out_BGRTK = jnp.einsum("bgrts,bgsk->bgrtk", probs_BGRTS, v_BGSK,
                           preferred_element_type=jnp.float32)
    return out_BGRTK.transpose(0, 3, 1, 2, 4).reshape(B, T, H, K)


def init_cache(cfg: ModelConfig, batch: int, max_len: int, params: dict) -> dict:
    """`model.init_cache` for `forward` over `params`: k and v as [B, G, S, K] float32 per
    layer, in a list for unrolled (float32) parameters, stacked [L, ...] for scanned ones."""
    shape = (batch, cfg.n_kv_heads, max_len, cfg.head_dim)
    if isinstance(params["layers"], list):
        k = [jnp.zeros(shape, jnp.float32) for _ in range(cfg.n_layers)]
        v = [jnp.zeros(shape, jnp.float32) for _ in range(cfg.n_layers)]
    else:
        k, v = (jnp.zeros((cfg.n_layers,) + shape, jnp.float32) for _ in range(2))
    return {"k": k, "v": v, "valid": jnp.zeros((batch, max_len), bool),
            "index": jnp.zeros((), jnp.int32)}


def forward(params: dict, tokens_BT: jax.Array, cfg: ModelConfig, cache: dict,
            positions_BT: jax.Array | None = None, valid_BT: jax.Array | None = None,
            last_only: bool = False):
    """`model.forward` with a cache, over `prepare`d parameters (float32 logits)."""
    B, T = tokens_BT.shape
    x_BTD = params["embed"][tokens_BT]
    start = cache["index"]
    valid_BS, mask_BTS = tfm.cache_mask(cache, T, valid_BT)
    if positions_BT is None:
        positions_BT = jnp.broadcast_to(start + jnp.arange(T), (B, T))

    def block(x_BTD, layer_and_kv):
        layer, kv = layer_and_kv
        return _block(x_BTD, layer, kv, positions_BT, mask_BTS, start, cfg)

    if isinstance(params["layers"], list):
        ks, vs = [], []
        for layer, k, v in zip(params["layers"], cache["k"], cache["v"]):
            x_BTD, (k, v) = block(x_BTD, (layer, (k, v)))
            ks.append(k)
            vs.append(v)
    else:
        x_BTD, (ks, vs) = jax.lax.scan(block, x_BTD, (params["layers"], (cache["k"],
                                                                         cache["v"])))
    if last_only:
        x_BTD = x_BTD[:, -1:]
    x_BTD = tfm.rms_norm(x_BTD, params["final_norm"], cfg.norm_eps)
    logits_BTV = _linear(x_BTD, params["unembed"])
    return logits_BTV, {"k": ks, "v": vs, "valid": valid_BS, "index": start + T}


def is_prepared(params) -> bool:
    """Whether `params` came from `prepare` (rather than `model.init` or a loader)."""
    layers = params.get("layers") if isinstance(params, dict) else None
    first = layers[0] if isinstance(layers, list) and layers else layers
    return isinstance(first, dict) and "qkv" in first
