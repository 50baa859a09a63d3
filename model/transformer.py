"""The forward pass of a Llama-family decoder, as pure functions over the parameter tree.

Shape suffixes: B batch, T new tokens, S cache slots, D width, H query heads, G kv heads,
R = H/G queries per kv head, N = H + 2G fused q/k/v heads, K head dim, F MLP width,
E = 2F fused gate/up width, V vocabulary, L layers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from model import precision
from model.activations import swiglu
from model.config import ModelConfig
from model.ops import DEFAULT as DEFAULT_OPS, AttentionContext, Ops


def _dot(spec: str, x: jax.Array, w: jax.Array, cfg: ModelConfig, product=None,
         out_dtype=jnp.float32) -> jax.Array:
    """A matmul with inputs in the compute dtype, summed in float32, the result in `out_dtype`.

    Accumulating in float32 keeps bfloat16 compute accurate, and on CPUs with bf16 dot units it
    is also the fast path. The backward's matmuls run in the compute dtype too (model/
    precision.py says why that needs its own gradient).
    """
    return precision.dot(spec, x, w, cfg.compute_dtype, product, out_dtype)


def rms_norm(x: jax.Array, gain: jax.Array, eps: float) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * gain.astype(
        jnp.float32)


def rope(x_BTNK: jax.Array, positions_BT: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding in the rotate-half layout (the Hugging Face Llama convention)."""
    return apply_rope(x_BTNK, *rope_tables(positions_BT, x_BTNK.shape[-1], theta))


def rope_tables(positions_BT, head_dim: int, theta: float):
    """cos and sin [B, T, K/2] of the rotary angles: computed once and shared by every layer
    (computed inside each layer's fusion, XLA:CPU evaluated them per head: ~40 ms of a 512-token
    SmolLM2 prefill). Positions given as a numpy array give numpy tables: constants of the
    traced program."""
    xp = np if isinstance(positions_BT, np.ndarray) else jnp
    inv_freq = 1.0 / theta ** (xp.arange(0, head_dim, 2, dtype=xp.float32) / head_dim)
    angles_BTk = positions_BT.astype(xp.float32)[..., None] * inv_freq
    return xp.cos(angles_BTk), xp.sin(angles_BTk)


def apply_rope(x_BTNK: jax.Array, cos_BTk: jax.Array, sin_BTk: jax.Array) -> jax.Array:
    """Rotates x by the angles of `rope_tables` (rotate-half layout)."""
    cos, sin = cos_BTk[:, :, None, :], sin_BTk[:, :, None, :]
    x1, x2 = jnp.split(x_BTNK.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _attend(q_BTHK, k_BSGK, v_BSGK, mask_BTS, cfg: ModelConfig) -> jax.Array:
    B, T, H, K = q_BTHK.shape
    G = cfg.n_kv_heads
    q_BTGRK = q_BTHK.reshape(B, T, G, H // G, K)
    scores_BGRTS = _dot("btgrk,bsgk->bgrts", q_BTGRK, k_BSGK, cfg) * K**-0.5
    scores_BGRTS = jnp.where(mask_BTS[:, None, None], scores_BGRTS, -1e30)
    probs_BGRTS = jax.nn.softmax(scores_BGRTS, axis=-1)
    out_BTGRK = _dot("bgrts,bsgk->btgrk", probs_BGRTS, v_BSGK, cfg)
    return out_BTGRK.reshape(B, T, H, K)


def _matmul(name: str, x, layer: dict, cfg: ModelConfig, product=None) -> jax.Array:
    """The default `Ops.matmul`: `model`'s own parameters, in the compute dtype.

    One matmul for q, k and v (N = H + 2G heads), one for gate and up; the weights stay separate
    parameters. On XLA:CPU, separate projections made the backward pass transpose their
    activations in slow fused copies (about a fifth of the bench step, profiled)."""
    if name == "qkv":
        w_DNK = jnp.concatenate([layer["wq"], layer["wk"], layer["wv"]], axis=1)
        return _dot("btd,dnk->btnk", x, w_DNK, cfg, product)
    if name == "wo":
        return _dot("bthk,hkd->btd", x, layer["wo"], cfg, product)
    if name == "gate_up":
        # In the compute dtype, as torch's autocast writes it: its one consumer, the activation,
        # reads it once, and the down projection rounds the activation's output anyway; in
        # bf16 it halves the bytes of the step's largest activations and their gradients.
        return _dot("btd,de->bte", x, jnp.concatenate([layer["w_gate"], layer["w_up"]], axis=-1),
                    cfg, product, cfg.compute_dtype)
    if name == "down":
        return _dot("btf,fd->btd", x, layer["w_down"], cfg, product)
    raise ValueError(f"unknown projection {name!r}; expected qkv, wo, gate_up or down")


def _attention(q_BTHK, k_BTGK, v_BTGK, kv, ctx: AttentionContext, cfg: ModelConfig):
    """The default `Ops.attention`: writes k and v into the [B, S, G, K] cache (if any) at
    `ctx.write_at`, then attends over the dense mask."""
    if kv is None:
        k_BSGK, v_BSGK = k_BTGK, v_BTGK
        new_kv = None
    else:
        k_cache, v_cache = kv
        k_BSGK = jax.lax.dynamic_update_slice_in_dim(
            k_cache, k_BTGK.astype(k_cache.dtype), ctx.write_at, axis=1)
        v_BSGK = jax.lax.dynamic_update_slice_in_dim(
            v_cache, v_BTGK.astype(v_cache.dtype), ctx.write_at, axis=1)
        new_kv = (k_BSGK, v_BSGK)
    return _attend(q_BTHK, k_BSGK, v_BSGK, ctx.mask_BTS, cfg), new_kv


def block(x_BTD, layer, kv, rope_BTk, attn_ctx, cfg: ModelConfig, ops: Ops = DEFAULT_OPS):
    """One pre-norm block: the one definition of a layer, for training and inference alike.

    `layer` is this layer's weights in the layout `ops.matmul` reads; `kv` its cache (or None)
    in the layout `ops.attention` writes; `rope_BTk` the (cos, sin) of `rope_tables`; `attn_ctx`
    whatever `ops.attention` needs besides q, k, v (see model/ops.py)."""
    matmul = ops.matmul or functools.partial(_matmul, product=ops.product)
    attention = ops.attention or _attention
    activation = ops.swiglu or swiglu
    B, T, _ = x_BTD.shape
    H, G, K = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    h_BTD = rms_norm(x_BTD, layer["attn_norm"], cfg.norm_eps)
    qkv_BTNK = matmul("qkv", h_BTD, layer, cfg).reshape(B, T, H + 2 * G, K)
    q_BTHK = apply_rope(qkv_BTNK[:, :, :H], *rope_BTk)
    k_BTGK = apply_rope(qkv_BTNK[:, :, H:H + G], *rope_BTk)
    v_BTGK = qkv_BTNK[:, :, H + G:]
    attn_BTHK, new_kv = attention(q_BTHK, k_BTGK, v_BTGK, kv, attn_ctx, cfg)
    x_BTD = x_BTD + matmul("wo", attn_BTHK, layer, cfg)

    h_BTD = rms_norm(x_BTD, layer["mlp_norm"], cfg.norm_eps)
    x_BTD = x_BTD + matmul("down", activation(matmul("gate_up", h_BTD, layer, cfg)), layer, cfg)
    return x_BTD, new_kv


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype: str | None = None) -> dict:
    """An empty KV cache of `max_len` slots per row."""
    shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.head_dim)
    dtype = jnp.dtype(dtype or cfg.compute_dtype)
    return {
        "k": jnp.zeros(shape, dtype),
        "v": jnp.zeros(shape, dtype),
        "valid": jnp.zeros((batch, max_len), bool),
        "index": jnp.zeros((), jnp.int32),
    }


def cache_mask(cache: dict, T: int, valid_BT: jax.Array | None = None):
    """The cache's validity after writing T tokens at its index, and the attention mask of those
    tokens: each attends to the valid slots up to its own."""
    B, S = cache["valid"].shape
    start = cache["index"]
    valid = jnp.ones((B, T), bool) if valid_BT is None else valid_BT
    valid_BS = jax.lax.dynamic_update_slice_in_dim(cache["valid"], valid, start, axis=1)
    slot_T = start + jnp.arange(T)
    mask_BTS = (jnp.arange(S)[None, :] <= slot_T[:, None])[None] & valid_BS[:, None, :]
    return valid_BS, mask_BTS


def _unrolled(body, x_BTD: jax.Array, layers: dict, n_layers: int) -> jax.Array:
    """The layers as a Python loop over slices of the stacked weights.

    Used without a cache when `cfg.scan_layers` is off. A scan's backward pass on XLA:CPU
    zero-fills stacked [L, ...] buffers for every saved activation, writes each layer's slice
    into them and slices them back out: ~0.7 s of a ~6 s bench step (profiled). Unrolled, each layer's
    activations are plain buffers; the bench step ran ~5% faster in an interleaved A/B. Decoding
    keeps the scan: its cache is already stacked, and it compiles once per shape. Deep models
    (SmolLM2's 30 layers, Llama 2's 80) keep the scan by default: one layer compiled, not L.
    """
    for i in range(n_layers):
        x_BTD, _ = body(x_BTD, (jax.tree.map(lambda w: w[i], layers), None))
    return x_BTD


def forward(params: dict, tokens_BT: jax.Array, cfg: ModelConfig, cache: dict | None = None,
            positions_BT: jax.Array | None = None, valid_BT: jax.Array | None = None,
            segment_ids_BT: jax.Array | None = None, return_hidden: bool = False,
            ops: Ops = DEFAULT_OPS):
    """Logits for every position of `tokens_BT`, and the updated cache (None without one).
    With `return_hidden`, the final-normed hidden states [B, T, D] in float32 instead of the
    logits (what a scalar head such as a reward model's reads).

    Without a cache the T tokens attend causally to each other at positions 0..T-1. With a
    cache they are written to slots index..index+T-1; each attends to the filled, valid slots
    up to its own. `valid_BT` marks real tokens (False for padding); `positions_BT` are the
    rotary positions (default: the slot numbers). `segment_ids_BT` (no cache) packs several
    documents in a row: a token attends only to earlier tokens of its own segment, and the
    caller gives each segment positions from 0 (MaxText's decoder_segment_ids/positions).
    `ops` plugs other matmuls or attention into every block (model/ops.py); the default is
    `model`'s own.
    """
    B, T = tokens_BT.shape
    x_BTD = params["embed"][tokens_BT].astype(jnp.float32)
    if cache is None:
        start = jnp.zeros((), jnp.int32)
        causal_TT = jnp.tril(jnp.ones((T, T), bool))
        mask_BTS = jnp.broadcast_to(causal_TT, (B, T, T))
        if valid_BT is not None:
            mask_BTS = mask_BTS & valid_BT[:, None, :]
        if segment_ids_BT is not None:
            mask_BTS = mask_BTS & (segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :])
        kvs = None
    else:
        if segment_ids_BT is not None:
            raise ValueError("segment_ids_BT packs documents for training; a cache holds one "
                             "sequence per row")
        start = cache["index"]
        valid_BS, mask_BTS = cache_mask(cache, T, valid_BT)
        kvs = (cache["k"], cache["v"])
    if positions_BT is None and cache is None:
        # Positions 0..T-1 known at trace time: the tables become constants. From traced
        # positions XLA:CPU folded the angles into every rope fusion, forward and backward, and
        # evaluated sin and cos there per head with scalar libm calls (2.7% of the bench step's
        # CPU samples under perf, 2-core Zen 4).
        rope_BTk = tuple(jnp.broadcast_to(t, (B, T, cfg.head_dim // 2)) for t in
                         rope_tables(np.arange(T)[None], cfg.head_dim, cfg.rope_theta))
    else:
        if positions_BT is None:
            positions_BT = jnp.broadcast_to(start + jnp.arange(T), (B, T))
        rope_BTk = rope_tables(positions_BT, cfg.head_dim, cfg.rope_theta)
    attn_ctx = AttentionContext(mask_BTS, start, valid_BT, segment_ids_BT)

    def body(x_BTD, layer_and_kv):
        layer, kv = layer_and_kv
        return block(x_BTD, layer, kv, rope_BTk, attn_ctx, cfg, ops)

    if cfg.remat:
        body = jax.checkpoint(body)
    if cache is None and not cfg.scan_layers:
        x_BTD, new_kvs = _unrolled(body, x_BTD, params["layers"], cfg.n_layers), None
    else:
        x_BTD, new_kvs = jax.lax.scan(body, x_BTD, (params["layers"], kvs))

    x_BTD = rms_norm(x_BTD, params["final_norm"], cfg.norm_eps)
    if return_hidden:
        out = x_BTD
    else:
        unembed_DV = params["embed"].T if cfg.tie_embeddings else params["unembed"]
        out = _dot("btd,dv->btv", x_BTD, unembed_DV, cfg, ops.product)  # logits_BTV
    if cache is None:
        return out, None
    new_cache = {"k": new_kvs[0], "v": new_kvs[1], "valid": valid_BS, "index": start + T}
    return out, new_cache
