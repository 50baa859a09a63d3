"""The model's forward pass laid out for fast inference on CPUs: fused projections, int8.

Decoding one token reads every weight once, so its speed is memory bandwidth over bytes per
weight; prefill multiplies many tokens by each weight, so it is bound by arithmetic instead.
`prepare` re-lays the parameters once, on the host:

- q/k/v fused into one matrix and gate/up into another, so a block is four matmuls, each layer's
  matrices in their own buffers (a list, unrolled in `forward`): scanning over stacked [L, ...]
  weights makes XLA copy each layer's slice before its matmul (seen in the optimised HLO);
- float32 matrices [in, out] (and an own [D, V] copy of a tied output projection): the same
  function as `model.forward` (tested to 1e-5), the reference for everything below;
- with "int8", a second copy of every matrix: int8 [out, in] with one float32 scale per output
  row (symmetric absmax). Few rows (decode steps) multiply float32 activations by them
  (`int8_kernel.matmul`: a quarter of float32's bytes read); 32 rows or more (prefill) round
  the activations to int8 in blocks of 32 and multiply in integers (`int8_kernel.matmul_dynamic`,
  ~1.6x float32's arithmetic rate here). XLA:CPU itself converts int8 operands in a slow
  separate pass, and its bfloat16 dots are slower than float32 on CPUs without bf16 units.
- the rotary cos/sin of every position, looked up by `forward` (`_rope_table`).

`forward` has `model.forward`'s signature plus `last_only` (project only the last position to
the vocabulary, all that generation needs), `int8` (use the int8 copies) and `empty_cache` (a
prefill into a fresh cache). Its cache (`init_cache`) keeps per-layer k [B, G, K, S] and v
[B, G, S, K], float32 or float16 (`cache_dtype`: float16 with int8 weights, as llama.cpp's
default), so attention reads them without a copy. On CPUs attention is one C++ kernel call per
layer (`attend_kernel`: it reads only the slots written so far); elsewhere `_attend` in XLA.

Profiled on a 512-token SmolLM2 prefill (2 cores): float32's four matmuls per layer run at
~172 GFLOP/s, XLA's float32 ceiling here; the int8 ones took them from ~620 to ~420 ms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from infer.kernels import attend_kernel
from infer.kernels import int8_kernel
from model import transformer as tfm
from model.config import ModelConfig

DTYPES = ("float32", "int8")
MATRICES = ("qkv", "wo", "gate_up", "down")
QUERY_BLOCK = 128  # queries per attention block (see `_attend`)
DYNAMIC_MIN_ROWS = 32  # int8 matrices take int8 activations from this many rows (`_linear`)
USE_ATTEND_KERNEL = True  # False: attention through `_attend` in XLA on the CPU too (tests)


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
        "rope": _rope_table(cfg),
    }
    if dtype == "int8":
        out["int8"] = {
            "layers": [{k: quantize_rows(layer[k].T) for k in MATRICES} for layer in layers],
            "unembed": quantize_rows(unembed_DV.T),
        }
    return jax.tree.map(jnp.asarray, out)


def _rope_table(cfg: ModelConfig) -> dict:
    """cos and sin of the rotary angles at every position [max_seq_len, K/2], looked up by
    `forward`: computed in the graph, XLA:CPU fused them into every layer's q and k and
    evaluated them once per head and layer (~36 ms of a 512-token SmolLM2 prefill)."""
    positions = jnp.arange(cfg.max_seq_len)[None]
    cos, sin = jax.jit(tfm.rope_tables, static_argnums=(1, 2))(positions, cfg.head_dim,
                                                                cfg.rope_theta)
    return {"cos": np.asarray(cos[0]), "sin": np.asarray(sin[0])}


def cache_dtype(params: dict):
    """The KV cache's dtype for these parameters: float16 with int8 weights (llama.cpp's default
    cache type; each decode step reads half the bytes), float32 otherwise (the exact path)."""
    return jnp.float16 if has_int8(params) else jnp.float32


def has_int8(params: dict) -> bool:
    """Whether `params` (from `prepare`) carry int8 copies of the matrices."""
    return "int8" in params


def _linear(x_BTI: jax.Array, w) -> jax.Array:
    """x @ W for a float32 [in, out] W, or (x @ q.T) * scale for an int8 {"w": [out, in]}: with
    float32 x for a few rows (decode steps, bound by reading the weights), with x rounded to
    int8 in blocks of 32 for many (prefill, bound by arithmetic, where integer multiply-adds
    run ~1.4-1.6x float32's here)."""
    if isinstance(w, dict):
        B, T, I = x_BTI.shape
        product = int8_kernel.matmul_dynamic if B * T >= DYNAMIC_MIN_ROWS else int8_kernel.matmul
        y_MO = product(x_BTI.reshape(B * T, I), w["w"], w["scale"])
        return y_MO.reshape(B, T, -1)
    return jnp.einsum("bti,io->bto", x_BTI, w, preferred_element_type=jnp.float32)


def _block(x_BTD, norms, mats, kv, rope_BTk, masks, new_valid_BT, write_at,
           cfg: ModelConfig, read_cache: bool):
    """One layer. The T new tokens attend to the cache's valid slots before this call (unless
    `read_cache` is off: an empty cache) and causally to each other; their k and v are written
    at `write_at`. `masks`: the cache's visible slots before the call and valid slots after."""
    B, T, _ = x_BTD.shape
    H, G, K = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    h_BTD = tfm.rms_norm(x_BTD, norms["attn_norm"], cfg.norm_eps)
    qkv_BTO = _linear(h_BTD, mats["qkv"])
    q_BTHK = tfm.apply_rope(qkv_BTO[..., :H * K].reshape(B, T, H, K), *rope_BTk)
    k_BTGK = tfm.apply_rope(qkv_BTO[..., H * K:(H + G) * K].reshape(B, T, G, K), *rope_BTk)
    v_BTGK = qkv_BTO[..., (H + G) * K:].reshape(B, T, G, K)
    new_kv = (k_BTGK.transpose(0, 2, 3, 1).astype(kv[0].dtype),
              v_BTGK.transpose(0, 2, 1, 3).astype(kv[1].dtype))
    attn_BTHK, kv = _attend_and_write(q_BTHK, kv, new_kv, masks, new_valid_BT, write_at, cfg,
                                      read_cache)
    x_BTD = x_BTD + _linear(attn_BTHK.reshape(B, T, H * K), mats["wo"])
    h_BTD = tfm.rms_norm(x_BTD, norms["mlp_norm"], cfg.norm_eps)
    gate_BTF, up_BTF = jnp.split(_linear(h_BTD, mats["gate_up"]), 2, axis=-1)
    x_BTD = x_BTD + _linear(jax.nn.silu(gate_BTF) * up_BTF, mats["down"])
    return x_BTD, kv


def _attend_and_write(q_BTHK, kv, new_kv, masks, new_valid_BT, write_at, cfg: ModelConfig,
                      read_cache: bool):
    """The new tokens' attention and the cache with their k and v written at `write_at`."""
    B, T, H, K = q_BTHK.shape
    G = cfg.n_kv_heads
    k_BGKT, v_BGTK = new_kv
    if _use_attend_kernel():  # write, then attend over the cache in one kernel call
        k_BGKS = jax.lax.dynamic_update_slice_in_dim(kv[0], k_BGKT, write_at, axis=3)
        v_BGSK = jax.lax.dynamic_update_slice_in_dim(kv[1], v_BGTK, write_at, axis=2)
        q_BTGRK = q_BTHK.reshape(B, T, G, H // G, K) * K**-0.5
        attn_BTGRK = attend_kernel.attend(q_BTGRK, k_BGKS, v_BGSK, masks[1], write_at)
        return attn_BTGRK.reshape(B, T, H, K), (k_BGKS, v_BGSK)
    attn_BTHK = _attend(q_BTHK, kv if read_cache else None, masks[0], new_kv, new_valid_BT, cfg)
    if read_cache:
        # The writes below must follow the reads above, or XLA cannot prove their order and
        # copies every layer's cache twice per step (seen in the optimised HLO of the decode
        # loop: 42 -> 52 tok/s int8 at 640 slots). A data dependency orders them; an
        # optimization_barrier does not survive XLA:CPU's passes. 0 * a finite sum adds 0.
        after = (0.0 * jnp.sum(attn_BTHK)).astype(k_BGKT.dtype)
        k_BGKT, v_BGTK = k_BGKT + after, v_BGTK + after
    k_BGKS = jax.lax.dynamic_update_slice_in_dim(kv[0], k_BGKT, write_at, axis=3)
    v_BGSK = jax.lax.dynamic_update_slice_in_dim(kv[1], v_BGTK, write_at, axis=2)
    return attn_BTHK, (k_BGKS, v_BGSK)


def _use_attend_kernel() -> bool:
    """The C++ attention kernel where XLA runs on the CPU and the kernel builds; `_attend` on
    accelerators (and as the reference)."""
    return (jax.default_backend() == "cpu" and USE_ATTEND_KERNEL
            and attend_kernel.kernel_available())


def _attend(q_BTHK, old_kv, old_mask_BS, new_kv, new_valid_BT, cfg: ModelConfig) -> jax.Array:
    """`model`'s attention, split in two key ranges under one softmax: the cache's slots before
    this call (`old_kv`: k [B, G, K, S], v [B, G, S, K], every valid one visible; None for an
    empty cache) and the T new tokens (`new_kv`, same layouts; causal).

    Queries go in blocks of `QUERY_BLOCK`, each against the new keys up to its own end: a
    512-token prefill then computes 5/8 of the full T x T scores, not T x S (profiled: attention
    was a quarter of prefill). Never reading the buffers that the layer then updates lets XLA
    update the decode loop's cache in place. The cache layouts are those whose matmuls read it
    without a transpose (others make XLA transpose every layer's cache at every step)."""
    B, T, H, K = q_BTHK.shape
    G = cfg.n_kv_heads
    q_BGRTK = q_BTHK.reshape(B, T, G, H // G, K).transpose(0, 2, 3, 1, 4) * K**-0.5
    # A float16 cache is read as float32 (the kernel converts in registers; XLA in a pass).
    k_new_BGKT, v_new_BGTK = (x.astype(jnp.float32) for x in new_kv)
    if old_kv is not None:
        old_kv = tuple(x.astype(jnp.float32) for x in old_kv)
    valid_BT = jnp.ones((B, T), bool) if new_valid_BT is None else new_valid_BT
    outs = []
    for t0 in range(0, T, QUERY_BLOCK):
        t1 = min(T, t0 + QUERY_BLOCK)
        q_BGRQK = q_BGRTK[:, :, :, t0:t1]
        causal_QN = jnp.arange(t0, t1)[:, None] >= jnp.arange(t1)[None, :]
        mask_BQN = causal_QN[None] & valid_BT[:, None, :t1]
        scores = [jnp.einsum("bgrqk,bgkn->bgrqn", q_BGRQK, k_new_BGKT[..., :t1],
                             preferred_element_type=jnp.float32)]
        scores[0] = jnp.where(mask_BQN[:, None, None], scores[0], -1e30)
        if old_kv is not None:
            old_BGRQS = jnp.einsum("bgrqk,bgks->bgrqs", q_BGRQK, old_kv[0],
                                   preferred_element_type=jnp.float32)
            scores.insert(0, jnp.where(old_mask_BS[:, None, None, None], old_BGRQS, -1e30))
        probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1)
        out_BGRQK = jnp.einsum("bgrqn,bgnk->bgrqk", probs[..., -t1:], v_new_BGTK[:, :, :t1],
                               preferred_element_type=jnp.float32)
        if old_kv is not None:
            out_BGRQK += jnp.einsum("bgrqs,bgsk->bgrqk", probs[..., :-t1], old_kv[1],
                                    preferred_element_type=jnp.float32)
        outs.append(out_BGRQK)
    out_BGRTK = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=3)
    return out_BGRTK.transpose(0, 3, 1, 2, 4).reshape(B, T, H, K)


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
    """`model.init_cache` for `forward`: per-layer lists of k [B, G, K, S] and v [B, G, S, K]
    (see `_attend`), float32 or float16 (half the bytes every decode step reads)."""
    if jnp.dtype(dtype) not in (jnp.float32, jnp.float16):
        raise ValueError(f"decode cache dtype must be float32 or float16, got {dtype}")
    B, G, S, K = batch, cfg.n_kv_heads, max_len, cfg.head_dim
    return {"k": [jnp.zeros((B, G, K, S), dtype) for _ in range(cfg.n_layers)],
            "v": [jnp.zeros((B, G, S, K), dtype) for _ in range(cfg.n_layers)],
            "valid": jnp.zeros((batch, max_len), bool), "index": jnp.zeros((), jnp.int32)}


def forward(params: dict, tokens_BT: jax.Array, cfg: ModelConfig, cache: dict,
            positions_BT: jax.Array | None = None, valid_BT: jax.Array | None = None,
            last_only: bool = False, int8: bool | None = None, empty_cache: bool = False):
    """`model.forward` with a cache, over `prepare`d parameters (float32 logits); `int8` uses
    the int8 copies of the matrices (by default, whenever `params` were prepared with them).
    `empty_cache` promises that nothing was written to the cache yet (a prefill): attention
    then skips reading it."""
    if int8 is None:
        int8 = has_int8(params)
    if int8 and not has_int8(params):
        raise ValueError("decode_model.forward(int8=True) needs parameters from "
                         "prepare(..., 'int8')")
    B, T = tokens_BT.shape
    x_BTD = params["embed"][tokens_BT]
    start = cache["index"]
    S = cache["valid"].shape[1]
    old_mask_BS = cache["valid"] & (jnp.arange(S) < start)
    valid = jnp.ones((B, T), bool) if valid_BT is None else valid_BT
    valid_BS = jax.lax.dynamic_update_slice_in_dim(cache["valid"], valid, start, axis=1)
    if positions_BT is None:
        positions_BT = jnp.broadcast_to(start + jnp.arange(T), (B, T))
    rope_BTk = params["rope"]["cos"][positions_BT], params["rope"]["sin"][positions_BT]
    mats = params["int8"]["layers"] if int8 else params["layers"]
    ks, vs = [], []
    for norms, layer_mats, k, v in zip(params["layers"], mats, cache["k"], cache["v"]):
        x_BTD, (k, v) = _block(x_BTD, norms, layer_mats, (k, v), rope_BTk,
                               (old_mask_BS, valid_BS), valid_BT, start, cfg,
                               read_cache=not empty_cache)
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
