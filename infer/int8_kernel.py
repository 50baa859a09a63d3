"""int8-weight matrix products: small C++ kernels on x86 CPUs, XLA elsewhere.

    y_MO = matmul(x_MI, w_OI, scale_O)          # (x @ w.T) * scale, float32, w int8 [out, in]
    y_MO = matmul_dynamic(x_MI, w_OI, scale_O)  # the same with x quantised per row to int8

XLA:CPU converts an int8 dot operand to float32 in a separate pass before the dot, which makes
int8 decoding slower than float32 (measured: 30 [3072, 576] matrix-vector products take 10.7 ms
in float32 and ~100 ms with int8 weights). `kernels/int8_matmul.cc` converts each weight in
registers (AVX2 + FMA) and splits rows over XLA's intra-op threads. infer/cpu_kernels.py builds
and registers it; where it is unavailable (other platforms, CPUs without AVX2/FMA, no compiler,
TWOFILES_CPU_KERNELS=0 or TWOFILES_INT8_KERNEL=0) `matmul` lowers to the plain XLA expression
(`matmul_xla`), which computes the same thing.

`matmul_dynamic` is for prefill, which is bound by arithmetic rather than memory: it quantises
each row of x to int8 (symmetric, scale max|x[m, :]| / 127, "W8A8 dynamic" as in llama.cpp's
Q8 activations and torch's dynamic quantisation) and multiplies in integers, exact in int32,
through `kernels/int8_gemm.cc` (AVX2 vpmaddwd, twice float32's multiply-adds per instruction:
measured ~1.6x XLA's float32 dot at prefill sizes; activation_bits=7 rounds x to half as many
levels for a shorter instruction sequence, ~2x). `matmul_dynamic_xla` computes the same
integers in plain XLA; it is the fallback and the reference. Each kernel is its own library,
so one failing to build never disables the other.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from infer import cpu_kernels

TARGET = "twofiles_int8_matmul"
# activation bits: (FFI target, handler symbol in kernels/int8_gemm.cc)
GEMM_TARGETS = {8: ("twofiles_int8_gemm_dynamic", "TwofilesInt8GemmDynamic"),
                7: ("twofiles_int8_gemm_dynamic7", "TwofilesInt8GemmDynamic7")}


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


def quantize_rows_dynamic(x_MI: jax.Array, bits: int = 8) -> tuple[jax.Array, jax.Array]:
    """int8 rows in [-Q, Q], Q = 2**(bits-1) - 1, and their float32 scales (max|x[m, :]| / Q; 0
    for an all-zero row).

    Multiplies by Q / max and rounds half to even: the very float operations of the C++
    kernel, so both give the same integers.
    """
    qmax = 2.0 ** (bits - 1) - 1
    amax_M1 = jnp.max(jnp.abs(x_MI), axis=1, keepdims=True)
    inv_M1 = jnp.where(amax_M1 > 0, qmax / jnp.where(amax_M1 > 0, amax_M1, 1.0), 0.0)
    q_MI = jnp.clip(jnp.round(x_MI * inv_M1), -qmax, qmax).astype(jnp.int8)
    return q_MI, (amax_M1 / qmax)[:, 0]


def matmul_dynamic_xla(x_MI: jax.Array, w_OI: jax.Array, scale_O: jax.Array,
                       activation_bits: int = 8) -> jax.Array:
    """`matmul_dynamic` in plain XLA (the reference and the fallback): int32 dot, then scales."""
    q_MI, scale_M = quantize_rows_dynamic(x_MI.astype(jnp.float32), activation_bits)
    acc_MO = jnp.einsum("mi,oi->mo", q_MI, w_OI, preferred_element_type=jnp.int32)
    return acc_MO.astype(jnp.float32) * scale_M[:, None] * scale_O


def matmul_dynamic(x_MI: jax.Array, w_OI: jax.Array, scale_O: jax.Array,
                   activation_bits: int = 8) -> jax.Array:
    """x @ (w * scale).T with x quantised per row: float32 x [M, I], int8 w [O, I], scale [O].

    activation_bits=8 rounds x to 255 levels per row; 7 to 127 levels, which doubles the
    rounding error and is ~1.15x faster on AVX2 CPUs without VNNI (see kernels/int8_gemm.cc).
    """
    if activation_bits not in GEMM_TARGETS:
        raise ValueError(f"activation_bits must be 8 or 7, got {activation_bits}")
    reference = functools.partial(matmul_dynamic_xla, activation_bits=activation_bits)
    if not gemm_kernel_available(activation_bits):
        return reference(x_MI, w_OI, scale_O)
    x_MI = x_MI.astype(jnp.float32)
    ffi = functools.partial(_matmul_dynamic_ffi, GEMM_TARGETS[activation_bits][0])
    return jax.lax.platform_dependent(x_MI, w_OI, scale_O, cpu=ffi, default=reference)


def _matmul_dynamic_ffi(target, x_MI, w_OI, scale_O):
    out = jax.ShapeDtypeStruct((x_MI.shape[0], w_OI.shape[0]), jnp.float32)
    return jax.ffi.ffi_call(target, out)(x_MI, w_OI, scale_O)


def kernel_available() -> bool:
    """Whether the C++ kernel of `matmul` is built and registered (building it on first call)."""
    return _enabled() and cpu_kernels.available("int8_matmul.cc", TARGET, "TwofilesInt8Matmul")


def gemm_kernel_available(activation_bits: int = 8) -> bool:
    """Whether the C++ kernel of `matmul_dynamic` is built and registered."""
    return _enabled() and cpu_kernels.available("int8_gemm.cc", *GEMM_TARGETS[activation_bits])


def _enabled() -> bool:
    return os.environ.get("TWOFILES_INT8_KERNEL", "1") != "0"


_cpu_supported = cpu_kernels._cpu_supported
