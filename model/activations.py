"""The MLP's gated activation, silu(gate) * up, with a gradient written out in one expression.

Left to autodiff, XLA:CPU ran the bench step's activation as three passes over the [B, T, F]
float32 tensors forward (sigmoid, x * sigmoid, times up), each a fusion of its own because the
sigmoid is kept for the backward, and four more backward. Here the forward keeps only its
input (the gate/up matmul's output, which exists anyway) and both directions are single
elementwise expressions that XLA fuses whole; the backward recomputes the sigmoid.
Values match `jax.nn.silu(gate) * up` and its autodiff gradient to float32 rounding
(tests/test_activations.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def swiglu(gate_up: jax.Array) -> jax.Array:
    """silu(gate) * up for `gate_up` = [..., 2F] (gate first, then up): [..., F], computed in
    float32 and returned in gate_up's dtype (bf16 under bf16 compute: the down projection
    rounds it to that anyway)."""
    gate, up = jnp.split(gate_up.astype(jnp.float32), 2, axis=-1)
    return (gate * jax.nn.sigmoid(gate) * up).astype(gate_up.dtype)


def _swiglu_fwd(gate_up):
    return swiglu(gate_up), gate_up


def swiglu_grad(gate_up, g):
    """(d gate_up,) of `swiglu` at `gate_up` for the cotangent `g` of its output."""
    # The barrier keeps XLA from sharing this sigmoid with the forward's (common
    # subexpressions): shared, it is a [..., F] float32 buffer written and read back, and the
    # forward's product no longer fuses with it.
    gate, up = jnp.split(jax.lax.optimization_barrier(gate_up).astype(jnp.float32), 2, axis=-1)
    s = jax.nn.sigmoid(gate)
    silu = gate * s
    # d silu / d gate = s + gate * s * (1 - s) = s * (1 + gate - silu)
    d_gate = g * up * s * (1.0 + gate - silu)
    d_up = g * silu
    return (jnp.concatenate([d_gate, d_up], axis=-1).astype(gate_up.dtype),)


swiglu.defvjp(_swiglu_fwd, swiglu_grad)
