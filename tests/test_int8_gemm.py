"""The W8A8 product of int8 prefill (`int8_kernel.matmul_dynamic`, 8- and 7-bit activations): the
C++ kernel against the XLA expression of the same integer maths, and the quantisation error
against float64."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infer import cpu_kernels, int8_kernel

needs_kernel = pytest.mark.skipif(
    not (cpu_kernels.enabled() and int8_kernel._enabled() and shutil.which("g++")),
    reason="no AVX2/FMA x86 CPU, no g++ or kernels switched off: matmul_dynamic is the XLA "
           "fallback itself")

# (M, I, O): the SmolLM2 shapes at prefill and decode sizes, and remainders of every blocking
# (6-row tiles, 120-row tasks, 16-output panels, 4-panel blocks, k-units of 2 or 4 values,
# 8-unit packing).
SHAPES = [(512, 576, 960), (512, 1536, 576), (7, 576, 576), (3, 1536, 960), (1, 576, 960),
          (1, 37, 13), (7, 37, 576), (130, 37, 13), (13, 577, 29), (6, 2, 16), (5, 1, 1)]

BITS = [8, 7]
kernel = jax.jit(int8_kernel.matmul_dynamic, static_argnames="activation_bits")
reference = jax.jit(int8_kernel.matmul_dynamic_xla, static_argnames="activation_bits")


def _case(M, I, O, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, I)).astype(np.float32)
    w = rng.integers(-128, 128, (O, I)).astype(np.int8)  # -128 too: the kernel takes any int8
    scale = (rng.random(O) * 0.02 + 1e-3).astype(np.float32)
    return x, w, scale


@needs_kernel
@pytest.mark.parametrize("bits", BITS)
def test_kernel_is_used(bits):
    assert int8_kernel.gemm_kernel_available(bits)
    hlo = kernel.lower(*_case(2, 8, 4), activation_bits=bits).as_text()
    assert int8_kernel.GEMM_TARGETS[bits][0] in hlo


@needs_kernel
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("M,I,O", SHAPES)
def test_kernel_equals_xla_integer_maths(M, I, O, bits):
    """int32 sums are exact, so only the float dequantisation may round differently."""
    x, w, scale = _case(M, I, O)
    got = np.asarray(kernel(x, w, scale, activation_bits=bits))
    assert got.shape == (M, O) and got.dtype == np.float32
    want = np.asarray(reference(x, w, scale, activation_bits=bits))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def test_unsupported_bits_are_refused():
    with pytest.raises(ValueError, match="8 or 7"):
        int8_kernel.matmul_dynamic(*_case(2, 8, 4), activation_bits=4)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("fn", [kernel, reference], ids=["kernel", "xla"])
def test_all_zero_rows_give_zeros(fn, bits):
    x, w, scale = _case(9, 40, 20)
    x[[0, 4, 8]] = 0.0
    got = np.asarray(fn(x, w, scale, activation_bits=bits))
    assert np.isfinite(got).all()
    assert (got[[0, 4, 8]] == 0).all() and (got[[1, 2, 3]] != 0).any()


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("fn", [kernel, reference], ids=["kernel", "xla"])
def test_error_within_the_quantisation_bound(fn, bits):
    """Against float64 x @ (w * scale).T: rounding x[m, i] to a multiple of s_m = max|x[m]| / Q
    (Q = 2**(bits-1) - 1) moves it by at most s_m / 2, so |error[m, o]| <= s_m / 2 *
    sum_i |w[o, i]| * scale[o]. Rows of very different magnitude check that each row has its
    own scale."""
    x, w, scale = _case(24, 300, 50, seed=1)
    x *= np.logspace(-3, 3, 24, dtype=np.float32)[:, None]
    exact = x.astype(np.float64) @ (w.astype(np.float64) * scale[:, None]).T
    s_M1 = np.abs(x).max(1, keepdims=True) / (2 ** (bits - 1) - 1)
    bound = s_M1 / 2 * (np.abs(w).sum(1) * scale)
    err = np.abs(np.asarray(fn(x, w, scale, activation_bits=bits)) - exact)
    assert (err <= bound * (1 + 1e-4) + 1e-6 * np.abs(exact)).all()
    # Per row, the error is small next to that row's outputs (a shared scale would drown the
    # 1e-3 rows).
    assert (err.max(1) < 0.05 * np.abs(exact).max(1)).all()


@pytest.mark.parametrize("bits", BITS)
def test_under_jit_inside_a_larger_function(bits):
    x, w, scale = _case(33, 64, 40)

    def layer(fn, x, w, scale):
        h = jnp.tanh(x) * 3.0 + 1.0
        return jax.nn.silu(fn(h, w, scale, activation_bits=bits)).sum(axis=1) + h.mean()

    got = jax.jit(lambda *a: layer(int8_kernel.matmul_dynamic, *a))(x, w, scale)
    want = jax.jit(lambda *a: layer(int8_kernel.matmul_dynamic_xla, *a))(x, w, scale)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
