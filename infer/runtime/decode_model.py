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

`forward` is `model`'s block (`model.transformer.block`, the one definition of a layer) with
this layout's operations plugged in (`OPS`, see model/ops.py): `_matmul` over the fused or int8
matrices, `_attention` over this layout's cache. It has `model.forward`'s signature plus
`last_only` (project only the last position to the vocabulary, all that generation needs) and
`int8` (use the int8 copies). Its cache (`init_cache`) keeps per-layer k [B, G, K, S] and v
[B, G, S, K], float32 or float16 (`cache_dtype`: float16 with int8 weights, as llama.cpp's
default), so attention reads them without a copy; its `index` is one slot for all rows or one
per row (a cache of slots, `infer.runtime.slots`). On CPUs attention is one C++ kernel call per
layer (`attend_kernel`: it reads only the slots written so far); elsewhere `attend_xla`.

Profiled on a 512-token SmolLM2 prefill (2 cores): float32's four matmuls per layer run at
~172 GFLOP/s, XLA's float32 ceiling here; the int8 ones took them from ~620 to ~420 ms.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from infer.kernels import attend_kernel
from infer.kernels import int8_kernel
from model import ops as model_ops
from model import transformer as tfm
from model.config import ModelConfig

DTYPES = ("float32", "int8")
MATRICES = ("qkv", "wo", "gate_up", "down")
DYNAMIC_MIN_ROWS = 32  # int8 matrices take int8 activations from this many rows (`_linear`)
USE_ATTEND_KERNEL = True  # False: attention through `attend_xla` on the CPU too (tests)


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
    float32 x for rows of few tokens (decode steps, bound by reading the weights), with x
    rounded to int8 in blocks of 32 for rows of many (prefill, bound by arithmetic, where
    integer multiply-adds run ~1.4-1.6x float32's here).

    The choice depends on the tokens per row T, never on the batch B: a row's numbers must not
    change with the rows beside it (chosen by B * T, a decode step took the int8 path from 32
    rows on, and a greedy reply changed when the batch grew)."""
    if isinstance(w, dict):
        B, T, I = x_BTI.shape
        product = int8_kernel.matmul_dynamic if T >= DYNAMIC_MIN_ROWS else int8_kernel.matmul
        y_MO = product(x_BTI.reshape(B * T, I), w["w"], w["scale"])
        return y_MO.reshape(B, T, -1)
    return jnp.einsum("bti,io->bto", x_BTI, w, preferred_element_type=jnp.float32)


def _matmul(name: str, x, layer: dict, cfg: ModelConfig) -> jax.Array:
    """`model.ops.Ops.matmul` over the prepared layer: its fused float32 or int8 matrices."""
    B, T = x.shape[:2]
    return _linear(x.reshape(B, T, -1), layer[name])


@dataclasses.dataclass(frozen=True)
class _CacheContext:
    """What `_attention` needs: the cache's valid slots after this call's writes, the slot of
    token 0 (the kernel's `start`), and where each row writes: the scalar `start` (all rows
    together) or a [B] slot per row (decode steps of a cache of slots, T = 1)."""

    valid_BS: jax.Array
    start: jax.Array
    write_B: jax.Array | None = None
    span: int | None = None  # static: every row's slots so far lie below it (`forward`)


def _attention(q_BTHK, k_BTGK, v_BTGK, kv, ctx: _CacheContext, cfg: ModelConfig):
    """`model.ops.Ops.attention` over this layout's cache: writes the new k [B, G, K, S] and
    v [B, G, S, K], then attends over the cache (the C++ kernel on CPUs, `attend_xla`
    elsewhere). Written first, then read: the kernel reads only the slots up to each query."""
    B, T, H, K = q_BTHK.shape
    G = cfg.n_kv_heads
    k_BGKT = k_BTGK.transpose(0, 2, 3, 1).astype(kv[0].dtype)
    v_BGTK = v_BTGK.transpose(0, 2, 1, 3).astype(kv[1].dtype)
    if ctx.write_B is None:
        k_BGKS = jax.lax.dynamic_update_slice_in_dim(kv[0], k_BGKT, ctx.start, axis=3)
        v_BGSK = jax.lax.dynamic_update_slice_in_dim(kv[1], v_BGTK, ctx.start, axis=2)
    else:  # one token per row, each at its own slot
        rows_B = jnp.arange(B)
        k_BGKS = kv[0].at[rows_B, :, :, ctx.write_B].set(k_BGKT[..., 0])
        v_BGSK = kv[1].at[rows_B, :, ctx.write_B].set(v_BGTK[:, :, 0])
    q_BTGRK = q_BTHK.reshape(B, T, G, H // G, K) * K**-0.5
    if _use_attend_kernel():  # it reads only q's rows, up to each one's last token
        attn_BTGRK = attend_kernel.attend(q_BTGRK, k_BGKS, v_BGSK, ctx.valid_BS, ctx.start)
    else:  # XLA reads every slot it is given: only the first `span`
        S = ctx.span or k_BGKS.shape[-1]
        attn_BTGRK = attend_kernel.attend_xla(q_BTGRK, k_BGKS[..., :S], v_BGSK[:, :, :S],
                                              ctx.valid_BS[:, :S], ctx.start)
    return attn_BTGRK.reshape(B, T, H, K), (k_BGKS, v_BGSK)


OPS = model_ops.Ops(matmul=_matmul, attention=_attention)


def _use_attend_kernel() -> bool:
    """The C++ attention kernel where XLA runs on the CPU and the kernel builds; `attend_xla`
    on accelerators (and as the reference)."""
    return (jax.default_backend() == "cpu" and USE_ATTEND_KERNEL
            and attend_kernel.kernel_available())


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
            last_only: bool = False, int8: bool | None = None, empty_cache: bool = False,
            span: int | None = None):
    """`model.forward` with a cache, over `prepare`d parameters (float32 logits): `model`'s
    block with this layout's operations (`OPS`). `int8` uses the int8 copies of the matrices
    (by default, whenever `params` were prepared with them).

    `cache["index"]` is the slot of the first new token, a scalar for every row, or a [B]
    array of one slot per row for a step of one token per row (a cache of slots whose rows are
    at different lengths; positions then default to those slots). The cache may have more
    rows than `tokens_BT`: the tokens go to its first B rows and the others are left as they
    are (a step of only the busy rows of a cache of slots). `span` (static) promises that
    every row's tokens, new ones included, lie in the first `span` slots: XLA's attention then
    reads no further (the CPU kernel stops at the last token by itself). `empty_cache` is
    accepted for the engine's prefill and changes nothing: the kernel reads only the slots
    written."""
    del empty_cache
    if int8 is None:
        int8 = has_int8(params)
    if int8 and not has_int8(params):
        raise ValueError("decode_model.forward(int8=True) needs parameters from "
                         "prepare(..., 'int8')")
    B, T = tokens_BT.shape
    x_BTD = params["embed"][tokens_BT]
    index = cache["index"]
    valid = jnp.ones((B, T), bool) if valid_BT is None else valid_BT
    if jnp.ndim(index) == 1:  # a slot per row
        if T != 1:
            raise ValueError(f"a cache with a slot per row takes one token per row, got {T}")
        write_B, start = index, jnp.max(index)
        valid_BS = cache["valid"].at[jnp.arange(B), write_B].set(valid[:, 0])
        default_positions_BT = write_B[:, None]
    else:
        write_B, start = None, index
        valid_BS = jax.lax.dynamic_update_slice_in_dim(cache["valid"], valid, start, axis=1)
        default_positions_BT = jnp.broadcast_to(start + jnp.arange(T), (B, T))
    if positions_BT is None:
        positions_BT = default_positions_BT
    rope_BTk = params["rope"]["cos"][positions_BT], params["rope"]["sin"][positions_BT]
    ctx = _CacheContext(valid_BS, start, write_B, span)
    mats = params["int8"]["layers"] if int8 else params["layers"]
    ks, vs = [], []
    for norms, layer_mats, k, v in zip(params["layers"], mats, cache["k"], cache["v"]):
        layer = {"attn_norm": norms["attn_norm"], "mlp_norm": norms["mlp_norm"], **{
            name: layer_mats[name] for name in MATRICES}}
        x_BTD, (k, v) = tfm.block(x_BTD, layer, (k, v), rope_BTk, ctx, cfg, OPS)
        ks.append(k)
        vs.append(v)
    if last_only:
        x_BTD = x_BTD[:, -1:]
    x_BTD = tfm.rms_norm(x_BTD, params["final_norm"], cfg.norm_eps)
    logits_BTV = _linear(x_BTD, params["int8"]["unembed"] if int8 else params["unembed"])
    return logits_BTV, {"k": ks, "v": vs, "valid": valid_BS, "index": index + T}


def is_prepared(params) -> bool:
    """Whether `params` came from `prepare` (rather than `model.init` or a loader)."""
    layers = params.get("layers") if isinstance(params, dict) else None
    return isinstance(layers, list) and bool(layers) and "qkv" in layers[0]
