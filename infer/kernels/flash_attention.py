"""Causal self-attention for training in blocks (flash attention), forward and backward.

    out_BTHK = attention(q_BTHK, k_BTGK, v_BTGK, segment_ids_BT=None, dtype="float32")

q, k and v are already rotated (model.transformer.block); token t attends to tokens s <= t of
its own segment (packed SFT rows), with grouped-query heads (H a multiple of G). The result is
float32. `dtype` is the tile products' input dtype, as model.forward's compute dtype: float32
(exact) or bfloat16 (q, k, v, the probabilities and the output's cotangent rounded to bf16,
float32 accumulation and softmax). Where it runs:

- x86 CPUs: `kernels/flash_attention.cc` through XLA FFI, its backward a `jax.custom_vjp` that
  recomputes 64 x 64 tiles of probabilities from each row's log-sum-exp; nothing [T, T] is kept
  between the passes (XLA keeps the [B, H, T, T] probabilities for its backward). With
  dtype bfloat16 on a CPU with AVX512_BF16 (and a head size that is a multiple of 32),
  `kernels/flash_attention_bf16.cc` does the products in bf16: on AMX tiles where the CPU has
  them, with vdpbf16ps elsewhere (`bf16_engine()` says which); on other CPUs bf16 runs the
  float32 kernel on the float32 inputs (at least as accurate).
- GPUs (and elsewhere): `jax.nn.dot_product_attention`, which picks cuDNN's fused kernel where
  it can and XLA's expression otherwise.

`reference` is the same attention as plain XLA einsums over a dense mask: the tests' yardstick
(model.forward's own attention), and the fallback when the kernel cannot be built.

`model_ops()` plugs it into `model.forward` (model/ops.py) for a forward without a cache.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from infer.kernels import cpu_kernels

FORWARD = ("flash_attention.cc", "twofiles_flash_forward", "TwofilesFlashForward")
BACKWARD = ("flash_attention.cc", "twofiles_flash_backward", "TwofilesFlashBackward")
FORWARD_BF16 = ("flash_attention_bf16.cc", "twofiles_flash_forward_bf16",
                "TwofilesFlashForwardBf16")
BACKWARD_BF16 = ("flash_attention_bf16.cc", "twofiles_flash_backward_bf16",
                 "TwofilesFlashBackwardBf16")
BF16_ENGINES = {1: "avx512_bf16", 2: "amx"}  # TwofilesFlashBf16Engine()'s answers


def _segments(segment_ids_BT, q_BTHK) -> jax.Array:
    B, T = q_BTHK.shape[:2]
    if segment_ids_BT is None:
        return jnp.zeros((B, T), jnp.int32)
    return segment_ids_BT.astype(jnp.int32)


def _mask_BTS(seg_BT) -> jax.Array:
    T = seg_BT.shape[1]
    causal_TS = jnp.tril(jnp.ones((T, T), bool))
    return causal_TS[None] & (seg_BT[:, :, None] == seg_BT[:, None, :])


def reference(q_BTHK, k_BTGK, v_BTGK, segment_ids_BT=None) -> jax.Array:
    """The attention as dense float32 XLA einsums (what model.forward computes in float32)."""
    B, T, H, K = q_BTHK.shape
    G = k_BTGK.shape[2]
    q_BTGRK = q_BTHK.astype(jnp.float32).reshape(B, T, G, H // G, K) * K**-0.5
    scores = jnp.einsum("btgrk,bsgk->bgrts", q_BTGRK, k_BTGK.astype(jnp.float32))
    mask_BTS = _mask_BTS(_segments(segment_ids_BT, q_BTHK))
    scores = jnp.where(mask_BTS[:, None, None], scores, -1e30)
    out = jnp.einsum("bgrts,bsgk->btgrk", jax.nn.softmax(scores, axis=-1),
                     v_BTGK.astype(jnp.float32))
    return out.reshape(B, T, H, K)


# ---- the CPU kernel ------------------------------------------------------------------------

def _forward_call(q, k, v, seg):
    B, T, H, _ = q.shape
    return jax.ffi.ffi_call(FORWARD[1], (jax.ShapeDtypeStruct(q.shape, jnp.float32),
                                         jax.ShapeDtypeStruct((B, H, T), jnp.float32)))(
        q, k, v, seg)


@jax.custom_vjp
def _flash_cpu(q, k, v, seg):
    return _forward_call(q, k, v, seg)[0]


def _flash_cpu_fwd(q, k, v, seg):
    out, lse = _forward_call(q, k, v, seg)
    return out, (q, k, v, seg, out, lse)


def _flash_cpu_bwd(res, dout):
    q, k, v, seg, out, lse = res
    delta_BHT = jnp.einsum("bthk,bthk->bht", dout, out)  # rowsum(dout * out), FA-2's D
    shapes = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v))
    dq, dk, dv = jax.ffi.ffi_call(BACKWARD[1], shapes)(q, k, v, seg, lse, dout, delta_BHT)
    return dq, dk, dv, None


_flash_cpu.defvjp(_flash_cpu_fwd, _flash_cpu_bwd)


# The bf16 kernel: float32 in and out (so the gradients are never rounded to bf16), bf16 tiles
# inside; the residuals are the bf16 copies.
def _forward_bf16_call(q, k, v, seg):
    B, T, H, _ = q.shape
    return jax.ffi.ffi_call(FORWARD_BF16[1], (jax.ShapeDtypeStruct(q.shape, jnp.float32),
                                             jax.ShapeDtypeStruct((B, H, T), jnp.float32)))(
        q, k, v, seg)


def _bf16(*xs):
    return tuple(x.astype(jnp.bfloat16) for x in xs)


@jax.custom_vjp
def _flash_bf16(q, k, v, seg):
    return _forward_bf16_call(*_bf16(q, k, v), seg)[0]


def _flash_bf16_fwd(q, k, v, seg):
    q, k, v = _bf16(q, k, v)
    out, lse = _forward_bf16_call(q, k, v, seg)
    return out, (q, k, v, seg, out, lse)


def _flash_bf16_bwd(res, dout):
    q, k, v, seg, out, lse = res
    delta_BHT = jnp.einsum("bthk,bthk->bht", dout, out)
    shapes = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v))
    dq, dk, dv = jax.ffi.ffi_call(BACKWARD_BF16[1], shapes)(q, k, v, seg, lse,
                                                           dout.astype(jnp.bfloat16), delta_BHT)
    return dq, dk, dv, None


_flash_bf16.defvjp(_flash_bf16_fwd, _flash_bf16_bwd)


def _on_cpu(q, k, v, seg, bf16=False):
    K = q.shape[-1]
    return (_flash_bf16 if bf16 else _flash_cpu)(q * K**-0.5, k, v, seg)


def _elsewhere(q, k, v, seg):
    """jax.nn.dot_product_attention: cuDNN's fused attention on GPUs where it applies."""
    mask = None
    if seg is not None:
        mask = (seg[:, :, None] == seg[:, None, :])[:, None]  # [B, 1, T, S]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True).astype(jnp.float32)


def attention(q_BTHK, k_BTGK, v_BTGK, segment_ids_BT=None, dtype="float32") -> jax.Array:
    """Causal attention (within segments), float32 out, tile products in `dtype` (float32 or
    bfloat16); see the module docstring."""
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"flash attention: dtype must be float32 or bfloat16, got {dtype}")
    H, G = q_BTHK.shape[2], k_BTGK.shape[2]
    if q_BTHK.shape[-1] != k_BTGK.shape[-1] or k_BTGK.shape != v_BTGK.shape or H % G:
        raise ValueError(f"flash attention: expected q [B,T,H,K] and k, v [B,T,G,K] with H a "
                         f"multiple of G; got {q_BTHK.shape}, {k_BTGK.shape}, {v_BTGK.shape}")
    if not kernel_available():
        return _elsewhere(*(x.astype(dtype) for x in (q_BTHK, k_BTGK, v_BTGK)), segment_ids_BT)
    args = [x.astype(jnp.float32) for x in (q_BTHK, k_BTGK, v_BTGK)]
    seg = _segments(segment_ids_BT, q_BTHK)
    bf16 = dtype == jnp.bfloat16 and q_BTHK.shape[-1] % 32 == 0 and q_BTHK.shape[-1] <= 256 \
        and bf16_engine() is not None
    return jax.lax.platform_dependent(
        *args, seg, cpu=functools.partial(_on_cpu, bf16=bf16),
        default=lambda q, k, v, s: _elsewhere(*(x.astype(dtype) for x in (q, k, v)),
                                              None if segment_ids_BT is None else s))


def kernel_available() -> bool:
    """Whether the C++ kernel is built and registered (building it on the first call)."""
    return cpu_kernels.available(*FORWARD) and cpu_kernels.available(*BACKWARD)


@functools.cache
def bf16_engine() -> str | None:
    """What the bf16 kernel's tile products run on in this process: "amx" (AMX-BF16 tiles,
    granted by Linux), "avx512_bf16" (vdpbf16ps; also forced by TWOFILES_CPU_ISA=avx512), or
    None where it cannot run (no AVX512_BF16, TWOFILES_CPU_ISA=avx2, not built)."""
    lib = cpu_kernels.library(*FORWARD_BF16)
    if lib is None or not cpu_kernels.available(*BACKWARD_BF16):
        return None
    return BF16_ENGINES.get(lib.TwofilesFlashBf16Engine())


def model_attention(q_BTHK, k_BTGK, v_BTGK, kv, ctx, cfg):
    """`model.ops.Ops.attention` for a forward without a cache (training, evaluation)."""
    if kv is not None or ctx.valid_BT is not None:
        raise ValueError("flash attention is for training: a forward without a cache and "
                         "without padding (valid_BT); decode through infer's engine instead")
    return attention(q_BTHK, k_BTGK, v_BTGK, ctx.segment_ids_BT, cfg.compute_dtype), None


def model_ops():
    """`model.Ops` that run the blocks' attention through `attention`."""
    from model.ops import Ops

    return Ops(attention=model_attention)
