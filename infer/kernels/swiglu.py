"""The MLP's gated activation with its backward in one pass (kernels/swiglu.cc).

    y_BTF = swiglu(gate_up_BT2F)      # silu(gate) * up, as model.activations.swiglu

The same values and gradient as `model.activations.swiglu` (its forward is that expression);
the backward runs in the C++ kernel on x86 CPUs with AVX-512 and BF16 for float32 or bf16
gate_up with F a multiple of 16, and is the model's own expression elsewhere and on other
backends.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from infer.kernels import cpu_kernels
from model import activations
from model import ops as model_ops_module

KERNEL = ("swiglu.cc", "twofiles_swiglu_backward", "TwofilesSwigluBackward")


@functools.cache
def available() -> bool:
    """Whether the kernel is built and this CPU runs it (AVX-512 with BF16)."""
    lib = cpu_kernels.library(*KERNEL)
    return lib is not None and bool(lib.TwofilesSwigluReady())


@jax.custom_vjp
def swiglu(gate_up: jax.Array) -> jax.Array:
    """silu(gate) * up for `gate_up` = [..., 2F] (gate first, then up): [..., F] in its dtype."""
    return activations.swiglu(gate_up)


def _fwd(gate_up):
    return activations.swiglu(gate_up), gate_up


def _bwd(gate_up, g):
    F = g.shape[-1]
    if gate_up.dtype not in (jnp.float32, jnp.bfloat16) or F % 16 or not available():
        return activations.swiglu_grad(gate_up, g)
    gu2, g2 = gate_up.reshape(-1, 2 * F), g.astype(gate_up.dtype).reshape(-1, F)

    def on_cpu(gu2, g2):
        return jax.ffi.ffi_call(KERNEL[1], jax.ShapeDtypeStruct(gu2.shape, gu2.dtype))(gu2, g2)

    def xla(gu2, g2):
        return activations.swiglu_grad(gu2, g2)[0]

    return (jax.lax.platform_dependent(gu2, g2, cpu=on_cpu, default=xla).reshape(gate_up.shape),)


swiglu.defvjp(_fwd, _bwd)


def model_ops(base=None):
    """`base` (model.Ops; default the model's own) with its activation's backward on the
    kernel."""
    return dataclasses.replace(base or model_ops_module.DEFAULT, swiglu=swiglu)
