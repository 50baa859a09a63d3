"""The model's forward pass laid out for fast decoding on CPUs: fused projections, int8 steps.

Decoding one token reads every weight once, so its speed is memory bandwidth over bytes per
weight; prefill multiplies many tokens by each weight, so it is bound by arithmetic instead.
`prepare` re-lays the parameters once, on the host:

- q/k/v fused into one matrix and gate/up into another, so a block is four matmuls, each layer's
  matrices in their own buffers (a list, unrolled in `forward`): scanning over stacked [L, ...]
  weights makes XLA copy each layer's slice before its matmul (seen in the optimised HLO);
- float32 matrices [in, out] (and an own [D, V] copy of a tied output projection), used by
  prefill and by float32 decoding: the same function as `model.forward` (tested to 1e-5);
- with "int8", a second copy of every matrix for the one-token decode steps: int8 [out, in]
  with one float32 scale per output row (symmetric absmax), applied after the dot by
  `int8_kernel.matmul`. On AVX2 CPUs without bf16 units XLA's bfloat16 dots are slower than
  float32, and XLA converts an int8 dot operand to float32 in a separate pass; the kernel
  converts in registers and reads a quarter of float32's bytes. Prefill keeps float32: it is
  compute-bound, where int8 gains nothing and only adds rounding.

`forward` has `model.forward`'s signature plus `last_only` (project only the last position to
the vocabulary, all that generation needs) and `int8` (use the int8 copies). Its cache
(`init_cache`) keeps per-layer k [B, G, K, S] and v [B, G, S, K] so attention reads them
without a copy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from infer import int8_kernel
from model import transformer as tfm
from model.config import ModelConfig

DTYPES = ("float32", "int8")
MATRICES = ("qkv", "wo", "gate_up", "down")


def quantize_rows(w_OI: np.ndarray) -> dict:
    """[out, in] float matrix -> {"w": int8 [out, in], "scale": float32 [out]}, w ~ q * scale.

    Symmetric absmax per output row: each weight is rounded by at most half a step, 1/254 of its
    row's largest magnitude."""
    w_OI = np.asarray(w_OI, np.float32)
    scale = np.abs(w_OI).max(axis=-1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(w_OI / scale[:, None]), -127, 127).astype(np.int8)
    return {"w": q, "scale": scale}


def _float_layers(params: dict) -> list[dict]:
    lay = {k: np.asarray(v, np.float32) for k, v in params["layers"].items()}
    L, D = lay["wq"].shape[:2]
    qkv_LDO = np.concatenate([lay["wq"].reshape(L, D, -1), lay["wk"].reshape(L, D, -1),
                              lay["wv"].reshape(L, D, -1)], axis=-1)
    gate_up_LDF = np.concatenate([lay["w_gate"], lay["w_up"]], axis=-1)
    return [{"attn_norm": lay["attn_norm"][i], "mlp_norm": lay["mlp_norm"][i],
             "qkv": qkv_LDO[i], "wo": lay["wo"][i].reshape(-1, D),
             "gate_up": gate_up_LDF[i], "down": lay["w_down"][i]} for i in range(L)]


def prepare(params: dict, cfg: ModelConfig, dtype: str = "float32") -> dict:
    """Parameters for `forward`, from `model`'s tree (float arrays); done once, on the host.

    "float32": the float32 layout only; "int8": plus int8 copies for decode steps."""
    if dtype not in DTYPES:
        raise ValueError(f"decode weights dtype must be one of {DTYPES}, got {dtype!r}")
    embed_VD = np.asarray(params["embed"], np.float32)
    unembed_DV = embed_VD.T if cfg.tie_embeddings else np.asarray(params["unembed"], np.float32)
    layers = _float_layers(params)
    out = {
        # The lookup table stays as is (only B*T rows are read per step); the output projection
        # gets its own contiguous [D, V] copy for the float32 dot.
        "embed": embed_VD,
        "unembed": np.ascontiguousarray(unembed_DV),
        "final_norm": np.asarray(params["final_norm"], np.float32),
        "layers": layers,
    }
    if dtype == "int8":
        out["int8"] = {
            "layers": [{k: quantize_rows(layer[k].T) for k in MATRICES} for layer in layers],
            "unembed": quantize_rows(unembed_DV.T),
        }
    return jax.tree.map(jnp.asarray, out)


def has_int8(params: dict) -> bool:
    """Whether `params` (from `prepare`) carry int8 copies for decode steps."""
    return "int8" in params


def _linear(x_BTI: jax.Array, w) -> jax.Array:
    """x @ W for a float32 [in, out] W, or (x @ q.T) * scale for an int8 {"w": [out, in]}."""
    if isinstance(w, dict):
        B, T, I = x_BTI.shape
        y_MO = int8_kernel.matmul(x_BTI.reshape(B * T, I), w["w"], w["scale"])
        return y_MO.reshape(B, T, -1)
    return jnp.einsum("bti,io->bto", x_BTI, w, preferred_element_type=jnp.float32)


def _block(x_BTD, norms, mats, kv, positions_BT, mask_BTS, write_at, cfg: ModelConfig):
    """One layer. `mask_BTS` masks the cache slots attended to: after the write of the T new
    tokens, or, for a one-token step (T == 1), before it (the token attends to itself apart)."""
    B, T, _ = x_BTD.shape
    H, G, K = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    h_BTD = tfm.rms_norm(x_BTD, norms["attn_norm"], cfg.norm_eps)
    qkv_BTO = _linear(h_BTD, mats["qkv"])
    q_BTHK = tfm.rope(qkv_BTO[..., :H * K].reshape(B, T, H, K), positions_BT, cfg.rope_theta)
    k_BTGK = tfm.rope(qkv_BTO[..., H * K:(H + G) * K].reshape(B, T, G, K), positions_BT,
                      cfg.rope_theta)
    v_BTGK = qkv_BTO[..., (H + G) * K:].reshape(B, T, G, K)
    k_BGKT, v_BGTK = k_BTGK.transpose(0, 2, 3, 1), v_BTGK.transpose(0, 2, 1, 3)
    if T == 1:  # a decode step: attend to the cache as it was, and to the new token
        attn_BTHK = _attend_step(q_BTHK, kv, (k_BGKT, v_BGTK), mask_BTS, cfg)
        # The writes below must follow the reads above, or XLA cannot prove their order and
        # copies every layer's cache twice per step (seen in the optimised HLO of the decode
        # loop: 42 -> 52 tok/s int8 at 640 slots). A data dependency orders them; an
        # optimization_barrier does not survive XLA:CPU's passes. 0 * a finite sum adds 0.
        after = 0.0 * jnp.sum(attn_BTHK)
        k_BGKT, v_BGTK = k_BGKT + after, v_BGTK + after
    k_BGKS = jax.lax.dynamic_update_slice_in_dim(kv[0], k_BGKT, write_at, axis=3)
    v_BGSK = jax.lax.dynamic_update_slice_in_dim(kv[1], v_BGTK, write_at, axis=2)
    if T > 1:
        attn_BTHK = _attend(q_BTHK, k_BGKS, v_BGSK, mask_BTS, cfg)
    x_BTD = x_BTD + _linear(attn_BTHK.reshape(B, T, H * K), mats["wo"])
    h_BTD = tfm.rms_norm(x_BTD, norms["mlp_norm"], cfg.norm_eps)
    gate_BTF, up_BTF = jnp.split(_linear(h_BTD, mats["gate_up"]), 2, axis=-1)
    x_BTD = x_BTD + _linear(jax.nn.silu(gate_BTF) * up_BTF, mats["down"])
    return x_BTD, (k_BGKS, v_BGSK)


def _attend(q_BTHK, k_BGKS, v_BGSK, mask_BTS, cfg: ModelConfig) -> jax.Array:
    """`model`'s attention over a [B, G, K, S] k and [B, G, S, K] v cache: the layouts whose
    matmuls read the cache in place (others make XLA transpose every layer's cache at every
    step, seen in the optimised HLO)."""
    B, T, H, K = q_BTHK.shape
    G = cfg.n_kv_heads
    q_BGRTK = q_BTHK.reshape(B, T, G, H // G, K).transpose(0, 2, 3, 1, 4)
    scores_BGRTS = jnp.einsum("bgrtk,bgks->bgrts", q_BGRTK, k_BGKS,
                              preferred_element_type=jnp.float32) * K**-0.5
    scores_BGRTS = jnp.where(mask_BTS[:, None, None], scores_BGRTS, -1e30)
    probs_BGRTS = jax.nn.softmax(scores_BGRTS, axis=-1)
    out_BGRTK = jnp.einsum("bgrts,bgsk->bgrtk", probs_BGRTS, v_BGSK,
                           preferred_element_type=jnp.float32)
    return out_BGRTK.transpose(0, 3, 1, 2, 4).reshape(B, T, H, K)


def _attend_step(q_B1HK, old_kv, new_kv, old_mask_B1S, cfg: ModelConfig) -> jax.Array:
    """One token's attention over the cache before its write plus its own k and v: the same
    softmax as `_attend` over the updated cache, but the step never reads the buffer it
    updates, which lets XLA update the loop's cache in place instead of copying every layer's
    cache several times per step (seen in the optimised HLO of the decode loop)."""
    B, _, H, K = q_B1HK.shape
    G = cfg.n_kv_heads
    (k_BGKS, v_BGSK), (k_BGK1, v_BG1K) = old_kv, new_kv
    q_BGRK = q_B1HK.reshape(B, G, H // G, K)
    old_BGRS = jnp.einsum("bgrk,bgks->bgrs", q_BGRK, k_BGKS,
                          preferred_element_type=jnp.float32) * K**-0.5
    old_BGRS = jnp.where(old_mask_B1S[:, None], old_BGRS, -1e30)
    new_BGR1 = jnp.einsum("bgrk,bgks->bgrs", q_BGRK, k_BGK1) * K**-0.5
    probs_BGRS = jax.nn.softmax(jnp.concatenate([old_BGRS, new_BGR1], axis=-1), axis=-1)
    out_BGRK = (jnp.einsum("bgrs,bgsk->bgrk", probs_BGRS[..., :-1], v_BGSK,
                           preferred_element_type=jnp.float32)
                + probs_BGRS[..., -1:] * v_BG1K[:, :, 0][:, :, None])
    return out_BGRK.reshape(B, 1, H, K)


def init_cache(cfg: ModelConfig, batch: int, max_len: int) -> dict:
    """`model.init_cache` for `forward`: per-layer lists of float32 k [B, G, K, S] and v
    [B, G, S, K] (see `_attend`)."""
    B, G, S, K = batch, cfg.n_kv_heads, max_len, cfg.head_dim
    return {"k": [jnp.zeros((B, G, K, S), jnp.float32) for _ in range(cfg.n_layers)],
            "v": [jnp.zeros((B, G, S, K), jnp.float32) for _ in range(cfg.n_layers)],
            "valid": jnp.zeros((batch, max_len), bool), "index": jnp.zeros((), jnp.int32)}


def forward(params: dict, tokens_BT: jax.Array, cfg: ModelConfig, cache: dict,
            positions_BT: jax.Array | None = None, valid_BT: jax.Array | None = None,
            last_only: bool = False, int8: bool = False):
    """`model.forward` with a cache, over `prepare`d parameters (float32 logits); `int8` uses
    the int8 copies of the matrices (parameters prepared with "int8")."""
    if int8 and not has_int8(params):
        raise ValueError("decode_model.forward(int8=True) needs parameters from "
                         "prepare(..., 'int8')")
    B, T = tokens_BT.shape
    x_BTD = params["embed"][tokens_BT]
    start = cache["index"]
    valid_BS, mask_BTS = tfm.cache_mask(cache, T, valid_BT)
    if T == 1:  # a step attends to the cache before its write (`_attend_step`): its valid slots
        S = valid_BS.shape[1]
        mask_BTS = (cache["valid"] & (jnp.arange(S) < start))[:, None, :]
    if positions_BT is None:
        positions_BT = jnp.broadcast_to(start + jnp.arange(T), (B, T))
    mats = params["int8"]["layers"] if int8 else params["layers"]
    ks, vs = [], []
    for norms, layer_mats, k, v in zip(params["layers"], mats, cache["k"], cache["v"]):
        x_BTD, (k, v) = _block(x_BTD, norms, layer_mats, (k, v), positions_BT, mask_BTS, start,
                               cfg)
        ks.append(k)
        vs.append(v)
    if last_only:
        x_BTD = x_BTD[:, -1:]
    x_BTD = tfm.rms_norm(x_BTD, params["final_norm"], cfg.norm_eps)
    logits_BTV = _linear(x_BTD, params["int8"]["unembed"] if int8 else params["unembed"])
    return logits_BTV, {"k": ks, "v": vs, "valid": valid_BS, "index": start + T}


def is_prepared(params) -> bool:
    """Whether `params` came from `prepare` (rather than `model.init` or a loader)."""
    layers = params.get("layers") if isinstance(params, dict) else None
    return isinstance(layers, list) and bool(layers) and "qkv" in layers[0]
