"""model.activations.swiglu: silu(gate) * up and its hand-written gradient against autodiff of
the plain expression (jax.nn.silu), in float32 and from bfloat16 inputs."""

import jax
import jax.numpy as jnp
import numpy as np

from model.activations import swiglu


def _plain(gate_up):
    gate, up = jnp.split(gate_up.astype(jnp.float32), 2, axis=-1)
    return jax.nn.silu(gate) * up


def test_values_and_gradient_match_autodiff():
    rng = np.random.default_rng(0)
    gate_up = jnp.asarray(rng.normal(size=(3, 5, 2 * 24)) * 4, jnp.float32)  # saturated tails too
    cot = jnp.asarray(rng.normal(size=(3, 5, 24)), jnp.float32)
    np.testing.assert_allclose(swiglu(gate_up), _plain(gate_up), rtol=1e-6, atol=1e-6)
    got = jax.jit(jax.grad(lambda x: jnp.sum(swiglu(x) * cot)))(gate_up)
    want = jax.grad(lambda x: jnp.sum(_plain(x) * cot))(gate_up)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bf16_input_gives_a_bf16_gradient_of_the_same_values():
    rng = np.random.default_rng(1)
    gate_up = jnp.asarray(rng.normal(size=(4, 2 * 16)), jnp.bfloat16)
    got = jax.grad(lambda x: jnp.sum(swiglu(x)))(gate_up)
    want = jax.grad(lambda x: jnp.sum(_plain(x)))(gate_up)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-2)
