"""infer/kernels/swiglu: the MLP activation's backward in one pass gives the gradient autodiff
gives `jax.nn.silu(gate) * up` (float32), and exactly model.activations' own gradient in bf16
(the same float32 maths, one rounding), through the bf16 training step's kernels option too.
On a CPU without AVX-512 and BF16 it is the model's expression, and the same references hold."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infer.kernels import swiglu as kernel
from model import activations


def _cpu_runs_it() -> bool:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return all(f" {f}" in text for f in ("avx512f", "avx512dq", "avx512bw", "avx512_bf16"))


def test_the_kernel_runs_exactly_where_the_cpu_has_avx512_bf16():
    assert kernel.available() == _cpu_runs_it()


def _inputs(dtype, F=96, seed=0):
    # gates over [-12, 12]: the sigmoid's saturated tails as well as its middle
    gate_up = jax.random.uniform(jax.random.key(seed), (2, 40, 2 * F), minval=-12, maxval=12)
    g = jax.random.normal(jax.random.key(seed + 1), (2, 40, F))
    return gate_up.astype(dtype), g.astype(dtype)


def _grad(fn, gate_up, g):
    return jax.jit(lambda x, g: jax.vjp(fn, x)[1](g)[0])(gate_up, g)


def test_float32_gradient_matches_autodiff_of_silu_times_up():
    gate_up, g = _inputs(jnp.float32)
    F = g.shape[-1]
    want = _grad(lambda x: jax.nn.silu(x[..., :F]) * x[..., F:], gate_up, g)
    got = _grad(kernel.swiglu, gate_up, g)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * float(jnp.abs(want).max()))
    np.testing.assert_array_equal(kernel.swiglu(gate_up), activations.swiglu(gate_up))


def test_bf16_gradient_equals_the_models_own():
    gate_up, g = _inputs(jnp.bfloat16, seed=2)
    got = _grad(kernel.swiglu, gate_up, g)
    want = _grad(activations.swiglu, gate_up, g)
    assert got.dtype == jnp.bfloat16
    # the same float32 maths rounded once: equal but for the odd value a last-bit exp
    # difference carries across a rounding boundary
    mismatched = np.asarray(got != want)
    assert mismatched.mean() < 1e-3
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                               rtol=1e-2)


def test_a_width_the_kernel_does_not_take_falls_back_to_xla():
    gate_up, g = _inputs(jnp.float32, F=24)  # F not a multiple of 16
    np.testing.assert_array_equal(_grad(kernel.swiglu, gate_up, g),
                                  _grad(activations.swiglu, gate_up, g))


def test_the_step_with_the_fused_activation_matches_xlas():
    from tests.kernel_steps import loss_and_grads
    from train.config import KernelsConfig

    def grads(activation):
        return loss_and_grads(KernelsConfig(swiglu=activation))
    (loss_x, g_x), (loss_k, g_k) = grads("xla"), grads("fused")
    np.testing.assert_allclose(loss_k, loss_x, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_k), jax.tree.leaves(g_x)):
        np.testing.assert_allclose(a, b, rtol=2e-2, atol=1e-3 * float(jnp.abs(b).max()))


def test_an_unknown_activation_kernel_is_refused_by_name():
    from train.config import ConfigError, KernelsConfig

    with pytest.raises(ConfigError, match="kernels.swiglu must be xla or fused"):
        KernelsConfig(swiglu="cuda")
