"""Causal attention over a KV cache that already holds the new tokens: a C++ kernel on x86 CPUs,
XLA elsewhere. Serves prefill (T = the prompt) and decode steps (T = 1) alike.

    out_BTGRK = attend(q_BTGRK, k_BGKS, v_BGSK, valid_BS, start)

q (already scaled by 1/sqrt(K)) holds each kv head's R query heads; token t sits in slot
start + t and attends to the valid slots up to its own. The cache may have more rows than q:
q's B rows are its first B (a decode step of a cache of slots runs only the busy ones).

XLA:CPU runs attention's small batched products as separate library calls per layer (measured on
SmolLM2: 3.7 ms of an 11.9 ms decode step at batch 1, 26 of 50 ms at batch 8);
`kernels/attend_cache.cc` does a (batch row, kv head, block of 16 tokens) per task and reads only
the slots up to the block's last token. `attend_xla` computes the same in plain XLA: the reference,
and the fallback on other platforms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from infer.kernels import cpu_kernels

KERNEL = ("attend_cache.cc", "twofiles_attend_cache", "TwofilesAttendCache")
KERNEL_F16 = ("attend_cache.cc", "twofiles_attend_cache_f16", "TwofilesAttendCacheF16")
CACHE_DTYPES = (jnp.float32, jnp.float16)


def attend_xla(q_BTGRK, k_BGKS, v_BGSK, valid_BS, start):
    """The attention in plain XLA over the whole cache (the reference and the fallback)."""
    B, T, S = q_BTGRK.shape[0], q_BTGRK.shape[1], k_BGKS.shape[-1]
    k_BGKS, v_BGSK, valid_BS = k_BGKS[:B], v_BGSK[:B], valid_BS[:B]  # q's rows of the cache
    visible_BTS = (jnp.arange(S)[None, :] <= start + jnp.arange(T)[:, None])[None] & (
        valid_BS[:, None, :])
    scores = jnp.einsum("btgrk,bgks->btgrs", q_BTGRK, k_BGKS.astype(jnp.float32))
    scores = jnp.where(visible_BTS[:, :, None, None], scores, -1e30)
    return jnp.einsum("btgrs,bgsk->btgrk", jax.nn.softmax(scores, axis=-1),
                      v_BGSK.astype(jnp.float32))


def attend(q_BTGRK, k_BGKS, v_BGSK, valid_BS, start):
    """`attend_xla`, through the C++ kernel where it is available. The cache (k and v) may be
    float32 or float16; q and the result are float32."""
    if k_BGKS.dtype != v_BGSK.dtype or k_BGKS.dtype not in CACHE_DTYPES:
        raise TypeError(f"attend: the cache must be float32 or float16 (one dtype), got k "
                        f"{k_BGKS.dtype} and v {v_BGSK.dtype}")
    args = (q_BTGRK.astype(jnp.float32), k_BGKS, v_BGSK, valid_BS, jnp.asarray(start, jnp.int32))
    kernel = KERNEL if k_BGKS.dtype == jnp.float32 else KERNEL_F16
    if not cpu_kernels.available(*kernel):
        return attend_xla(*args)
    call = jax.ffi.ffi_call(kernel[1], jax.ShapeDtypeStruct(q_BTGRK.shape, jnp.float32))
    return jax.lax.platform_dependent(*args, cpu=call, default=attend_xla)


def kernel_available() -> bool:
    """Whether the C++ kernels are built and registered (building them on the first call)."""
    return cpu_kernels.available(*KERNEL) and cpu_kernels.available(*KERNEL_F16)
