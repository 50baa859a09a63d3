"""Softmax cross-entropy of a chunk of logits and its gradient, in one pass (kernels/xent.cc).

    g_NV, nll_N = grad_and_nll(logits_NV, targets_N, weights_N, jnp.bfloat16)

nll_N = logsumexp(logits) - logits[target]; g_NV = weights * (softmax(logits) - onehot(target)),
in `g_dtype` (float32, or bf16 for matmuls that take bf16). The chunked loss's body
(train/losses.py) calls it once per chunk. On x86 CPUs with AVX-512 and BF16 (and V a multiple of
32) the C++ kernel reads each row of logits once; elsewhere, and on other backends, it is the
same expression in XLA (`reference`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from infer.kernels import cpu_kernels

KERNEL = ("xent.cc", "twofiles_xent", "TwofilesXent")


@functools.cache
def available() -> bool:
    """Whether the kernel is built and this CPU runs it (AVX-512 with BF16)."""
    lib = cpu_kernels.library(*KERNEL)
    return lib is not None and bool(lib.TwofilesXentReady())


def reference(logits_NV, targets_N, weights_N, g_dtype):
    """The same (g, nll) as XLA's expression of it."""
    lse_N = jax.nn.logsumexp(logits_NV, axis=-1)
    target_logit_N = jnp.take_along_axis(logits_NV, targets_N[:, None], axis=-1)[:, 0]
    is_target_NV = jax.lax.broadcasted_iota(jnp.int32, logits_NV.shape, 1) == targets_N[:, None]
    p_NV = jnp.exp(logits_NV - lse_N[:, None])
    g_NV = weights_N[:, None] * jnp.where(is_target_NV, p_NV - 1.0, p_NV)
    return g_NV.astype(g_dtype), lse_N - target_logit_N


def grad_and_nll(logits_NV, targets_N, weights_N, g_dtype=jnp.float32):
    """(g [N, V] in `g_dtype`, nll [N] float32) of float32 logits; see the module docstring."""
    g_dtype = jnp.dtype(g_dtype)
    N, V = logits_NV.shape
    args = (logits_NV.astype(jnp.float32), targets_N.astype(jnp.int32),
            weights_N.astype(jnp.float32))
    if V % 32 or g_dtype not in (jnp.float32, jnp.bfloat16) or not available():
        return reference(*args, g_dtype)

    def on_cpu(logits, targets, weights):
        return jax.ffi.ffi_call(KERNEL[1], (jax.ShapeDtypeStruct((N, V), g_dtype),
                                            jax.ShapeDtypeStruct((N,), jnp.float32)))(
            logits, targets, weights)

    return jax.lax.platform_dependent(
        *args, cpu=on_cpu, default=lambda *a: reference(*a, g_dtype))
