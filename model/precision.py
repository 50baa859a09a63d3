"""The model's one matmul: inputs in the compute dtype, float32 accumulation and result, and a
backward pass whose matmuls run in the compute dtype too.

    y = dot("btd,dv->btv", x_BTD, w_DV, "bfloat16")   # float32 [B, T, V]

In float32 this is `jnp.einsum(..., preferred_element_type=float32)`, bit for bit. In a
narrower dtype (bfloat16) the gradient is defined by hand (`jax.custom_vjp`): JAX's own
transpose of a bf16 x bf16 -> f32 dot multiplies the float32 cotangent by the other bf16
operand, which XLA runs as a float32 x float32 matmul (it upcasts the bf16 side), then rounds
the result to bf16. On the bench step that made the backward's matmuls, two thirds of the
FLOPs, run at float32 speed (profiled: f32[4096,2048] x f32[384,2048] dots inside the bf16
step). Here the cotangent is rounded to the compute dtype once and both gradients are bf16 x
bf16 matmuls with float32 results, the mixed-precision recipe of torch's autocast (whose
backward receives bf16 gradients) with float32 gradients out: dW is no longer rounded to bf16.
The forward keeps the compute-dtype copies of x and w for the backward, half the bytes of
float32 ones (for a product that rounds its own operands, below, the unrounded ones).

`product(spec, a, b, out_dtype=float32)` is the two-operand matmul the narrow dtype's three
matmuls (forward, dx, dW) run on, summing in float32 and rounding the result to `out_dtype`
once: `einsum_f32` (XLA's) by default, or a kernel's with the same
meaning (infer/kernels/bf16_gemm.product on CPUs with AMX or AVX512_BF16). A product whose
`rounds_to` attribute names the compute dtype rounds float32 operands itself (while packing
them, with the same round-to-nearest-even as XLA's convert): it is handed them unrounded,
which saves XLA a convert pass over every activation and cotangent (`operand`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def einsum_f32(spec: str, a: jax.Array, b: jax.Array, out_dtype=jnp.float32) -> jax.Array:
    """XLA's product of two operands, summed in float32, its result in `out_dtype` (the default
    `product`)."""
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(out_dtype)


def operand(x: jax.Array, dtype, product) -> jax.Array:
    """`x` as `product` takes it in `dtype`: unrounded if the product rounds to `dtype` itself,
    else cast."""
    if getattr(product, "rounds_to", None) == jnp.dtype(dtype).name:
        return x
    return x.astype(dtype)


def dot(spec: str, x: jax.Array, w: jax.Array, compute_dtype, product=None,
        out_dtype=jnp.float32) -> jax.Array:
    """`jnp.einsum(spec, x, w)` with both inputs in `compute_dtype`, summed in float32, the
    result in `out_dtype` (float32 unless its consumer rounds it anyway); in a dtype other than
    float32 its backward matmuls take compute-dtype inputs as well, and all three run on
    `product` (default `einsum_f32`), each gradient written in its input's dtype. float32 is
    always XLA's, the exact path."""
    cd = jnp.dtype(compute_dtype)
    if cd == jnp.float32:
        return jnp.einsum(spec, x.astype(cd), w.astype(cd), preferred_element_type=jnp.float32)
    return _narrow_dot(spec, cd.name, product or einsum_f32, jnp.dtype(out_dtype).name, x, w)


def _transposed_specs(spec: str) -> tuple[str, str]:
    """The einsum specs of the two gradients of `spec` ("ab,bc->ac": "ac,bc->ab", "ab,ac->bc"),
    or a ValueError for a spec whose inputs have an index that is summed away on its own."""
    inputs, out = spec.replace(" ", "").split("->")
    lhs, rhs = inputs.split(",")
    if not set(lhs) <= set(out) | set(rhs) or not set(rhs) <= set(out) | set(lhs):
        raise ValueError(f"precision.dot: spec {spec!r} sums an index of one input alone; "
                         "only products of two operands (every index in the other input or "
                         "the output) are supported")
    return f"{out},{rhs}->{lhs}", f"{lhs},{out}->{rhs}"


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _narrow_dot(spec, dtype, product, out_dtype, x, w):
    return product(spec, operand(x, dtype, product), operand(w, dtype, product), out_dtype)


def _narrow_dot_fwd(spec, dtype, product, out_dtype, x, w):
    x_c, w_c = operand(x, dtype, product), operand(w, dtype, product)
    y = product(spec, x_c, w_c, out_dtype)
    # The input dtypes travel as zero-size arrays: residuals must be JAX types.
    return y, (x_c, w_c, jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))


def _narrow_dot_bwd(spec, dtype, product, out_dtype, res, g):
    x_c, w_c, x_kind, w_kind = res
    dx_spec, dw_spec = _transposed_specs(spec)
    g_c = operand(g, dtype, product)
    dx = product(dx_spec, g_c, w_c, x_kind.dtype)
    # The barrier keeps XLA from folding a transpose that follows (a tied unembedding's
    # embed.T) into this dot: the folded bf16 x bf16 -> f32 dot is one XLA:CPU's YNNPACK
    # fusion declines, and its fallback (DotThunk) refuses bf16 ("Unsupported element type").
    dw = jax.lax.optimization_barrier(product(dw_spec, x_c, g_c, w_kind.dtype))
    return dx, dw


_narrow_dot.defvjp(_narrow_dot_fwd, _narrow_dot_bwd)
