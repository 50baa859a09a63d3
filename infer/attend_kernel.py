"""Causal attention over a KV cache that already holds the new tokens: a C++ kernel on x86 CPUs,
XLA elsewhere. Serves prefill (T = the prompt) and decode steps (T = 1) alike.

    out_BTGRK = attend(q_BTGRK, k_BGKS, v_BGSK, valid_BS, start)

q (already scaled by 1/sqrt(K)) holds each kv head's R query heads; token t sits in slot
start + t and attends to the valid slots up to its own. XLA:CPU runs attention's small batched
products as separate library calls per layer (measured on SmolLM2: 3.7 ms of an 11.9 ms decode
step at batch 1, 26 of 50 ms at batch 8); `kernels/attend_cache.cc` does a (batch row, kv head,
block of 8 tokens) per task and reads only the slots up to the block's last token. `attend_xla`
computes the same in plain XLA: the reference, and the fallback on other platforms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from infer import cpu_kernels

KERNEL = ("attend_cache.cc", "twofiles_attend_cache", "TwofilesAttendCache")


def attend_xla(q_BTGRK, k_BGKS, v_BGSK, valid_BS, start):
    """The attention in plain XLA over the whole cache (the reference and the fallback)."""
    T, S = q_BTGRK.shape[1], k_BGKS.shape[-1]
    visible_BTS = (jnp.arange(S)[None, :] <= start + jnp.arange(T)[:, None])[None] & (
        valid_BS[:, None, :])
    scores = jnp.einsum("btgrk,bgks->btgrs", q_BTGRK, k_BGKS, preferred_element_type=jnp.float32)
    scores = jnp.where(visible_BTS[:, :, None, None], scores, -1e30)
    return jnp.einsum("btgrs,bgsk->btgrk", jax.nn.softmax(scores, axis=-1), v_BGSK,
                      preferred_element_type=jnp.float32)


def attend(q_BTGRK, k_BGKS, v_BGSK, valid_BS, start):
    """`attend_xla`, through the C++ kernel where it is available."""
    args = (q_BTGRK.astype(jnp.float32), k_BGKS, v_BGSK, valid_BS, jnp.asarray(start, jnp.int32))
    if not kernel_available():
        return attend_xla(*args)
    return jax.lax.platform_dependent(*args, cpu=_ffi, default=attend_xla)


def _ffi(*args):
    out = jax.ShapeDtypeStruct(args[0].shape, jnp.float32)
    return jax.ffi.ffi_call(KERNEL[1], out)(*args)


def kernel_available() -> bool:
    """Whether the C++ kernel is built and registered (building it on the first call)."""
    return cpu_kernels.available(*KERNEL)
