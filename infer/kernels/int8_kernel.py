"""int8-weight matrix products: small C++ kernels on x86 CPUs, XLA elsewhere.

    y_MO = matmul(x_MI, w_OI, scale_O)          # (x @ w.T) * scale, float32, w int8 [out, in]
    y_MO = matmul_dynamic(x_MI, w_OI, scale_O)  # the same with x quantised to int8 in blocks

XLA:CPU converts an int8 dot operand to float32 in a separate pass before the dot, which makes
int8 decoding slower than float32 (measured: 30 [3072, 576] matrix-vector products take 10.7 ms
in float32 and ~100 ms with int8 weights). `kernels/int8_matmul.cc` converts each weight in
registers (AVX2 + FMA) and splits rows over XLA's intra-op threads. infer/kernels/cpu_kernels.py builds
and registers it; where it is unavailable (other platforms, CPUs without AVX2/FMA, no compiler,
TWOFILES_CPU_KERNELS=0) `matmul` lowers to the plain XLA expression
(`matmul_xla`), which computes the same thing.

`matmul_dynamic` is for prefill, which is bound by arithmetic rather than memory: it quantises x
to int8 in blocks of 32 consecutive inputs per row (symmetric, scale max|x[m, block]| / 127,
"W8A8 dynamic" with llama.cpp's Q8_0 blocks), multiplies each block in integers, exact in int32,
and adds the blocks in float32, through `kernels/int8_gemm.cc` (AVX2 vpmaddwd, twice float32's
multiply-adds per instruction). One scale per row instead would let an outlier channel (SmolLM2
has them) coarsen the whole row: measured on SmolLM2-135M over 200 positions, top-1 agreement
with float32 activations 184/200 per row, 194/200 with blocks of 32. `matmul_dynamic_xla`
computes the same integers in plain XLA; it is the fallback and the reference. Each kernel is
its own library, so one failing to build never disables the other.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from infer.kernels import cpu_kernels

TARGET = "twofiles_int8_matmul"
GEMM_TARGET = "twofiles_int8_gemm_dynamic"


def matmul_xla(x_MI: jax.Array, w_OI: jax.Array, scale_O: jax.Array) -> jax.Array:
    """(x @ w.T) * scale in plain XLA (the reference and the fallback)."""
    y_MO = jnp.einsum("mi,oi->mo", x_MI, w_OI.astype(jnp.float32),
                      preferred_element_type=jnp.float32)
    return y_MO * scale_O


def matmul(x_MI: jax.Array, w_OI: jax.Array, scale_O: jax.Array) -> jax.Array:
    """(x @ w.T) * scale for float32 x [M, I], int8 w [O, I], float32 scale [O]."""
    if not kernel_available():
        return matmul_xla(x_MI, w_OI, scale_O)
    x_MI = x_MI.astype(jnp.float32)
    return jax.lax.platform_dependent(x_MI, w_OI, scale_O, cpu=_matmul_ffi, default=matmul_xla)


def _matmul_ffi(x_MI, w_OI, scale_O):
    out = jax.ShapeDtypeStruct((x_MI.shape[0], w_OI.shape[0]), jnp.float32)
    return jax.ffi.ffi_call(TARGET, out)(x_MI, w_OI, scale_O)


def quantize_blocks_dynamic(x_MI: jax.Array, block: int = 32) -> tuple[jax.Array, jax.Array]:
    """x in blocks of `block` consecutive inputs (the last one partial when block does not divide
    I) as int8 [M, n_blocks, block] in [-127, 127], zero past I, and float32 scales
    [M, n_blocks] (max|x[m, block]| / 127; 0 for an all-zero block).

    Multiplies by 127 / max and rounds half to even: the very float operations of the C++
    kernel, so both give the same integers.
    """
    M, I = x_MI.shape
    n_blocks = -(-I // block)
    x_MJB = jnp.pad(x_MI, ((0, 0), (0, n_blocks * block - I))).reshape(M, n_blocks, block)
    amax_MJ1 = jnp.max(jnp.abs(x_MJB), axis=2, keepdims=True)
    inv_MJ1 = jnp.where(amax_MJ1 > 0, 127.0 / jnp.where(amax_MJ1 > 0, amax_MJ1, 1.0), 0.0)
    q_MJB = jnp.clip(jnp.round(x_MJB * inv_MJ1), -127, 127).astype(jnp.int8)
    return q_MJB, (amax_MJ1 / 127.0)[:, :, 0]


def matmul_dynamic_xla(x_MI: jax.Array, w_OI: jax.Array, scale_O: jax.Array,
                       block: int = 32) -> jax.Array:
    """`matmul_dynamic` in plain XLA (the reference and the fallback): one int32 dot per block,
    each times its activation scale, summed in float32, times the weight scale."""
    _check_block(block)
    q_MJB, scale_MJ = quantize_blocks_dynamic(x_MI.astype(jnp.float32), block)
    O, I = w_OI.shape
    n_blocks = q_MJB.shape[1]
    w_OJB = jnp.pad(w_OI, ((0, 0), (0, n_blocks * block - I))).reshape(O, n_blocks, block)
    acc_MJO = jnp.einsum("mjb,ojb->mjo", q_MJB, w_OJB, preferred_element_type=jnp.int32)
    y_MO = jnp.sum(acc_MJO.astype(jnp.float32) * scale_MJ[:, :, None], axis=1)
    return y_MO * scale_O


def matmul_dynamic(x_MI: jax.Array, w_OI: jax.Array, scale_O: jax.Array,
                   block: int = 32) -> jax.Array:
    """x @ (w * scale).T with x quantised to int8 in blocks: float32 x [M, I], int8 w [O, I],
    scale [O].

    Each run of `block` consecutive inputs of a row (positive and even; the last run of a row may
    be shorter) gets its own scale max|x| / 127, so an outlier channel coarsens only its own
    block. 32 (llama.cpp's Q8_0) is the default; 64 is a few % faster, slightly less accurate.
    """
    _check_block(block)
    reference = functools.partial(matmul_dynamic_xla, block=block)
    if not gemm_kernel_available():
        return reference(x_MI, w_OI, scale_O)
    x_MI = x_MI.astype(jnp.float32)
    ffi = functools.partial(_matmul_dynamic_ffi, block)
    return jax.lax.platform_dependent(x_MI, w_OI, scale_O, cpu=ffi, default=reference)


def _check_block(block: int) -> None:
    # The kernel's units of k are pairs of inputs, which must not straddle two blocks.
    if block <= 0 or block % 2:
        raise ValueError(f"block must be positive and even (e.g. 32 or 64), got {block}")


def _matmul_dynamic_ffi(block, x_MI, w_OI, scale_O):
    out = jax.ShapeDtypeStruct((x_MI.shape[0], w_OI.shape[0]), jnp.float32)
    return jax.ffi.ffi_call(GEMM_TARGET, out)(x_MI, w_OI, scale_O, block=np.int64(block))


def kernel_available() -> bool:
    """Whether the C++ kernel of `matmul` is built and registered (building it on first call)."""
    return cpu_kernels.available("int8_matmul.cc", TARGET, "TwofilesInt8Matmul")


def gemm_kernel_available() -> bool:
    """Whether the C++ kernel of `matmul_dynamic` is built and registered."""
    return cpu_kernels.available("int8_gemm.cc", GEMM_TARGET, "TwofilesInt8GemmDynamic")
