"""The W8A8 product of int8 prefill (`int8_kernel.matmul_dynamic`, x quantised in blocks): the C++
kernel against the XLA expression of the same integer maths, and the quantisation error against
float64."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infer.kernels import cpu_kernels
from infer.kernels import int8_kernel

needs_kernel = pytest.mark.skipif(
    not (cpu_kernels.enabled() and shutil.which("g++")),
    reason="no AVX2/FMA x86 CPU, no g++ or kernels switched off: matmul_dynamic is the XLA "
           "fallback itself")

# (M, I, O): the SmolLM2 shapes at prefill and decode sizes, and remainders of every blocking
# (6-row tiles, 120-row tasks, 16-output panels, 4-panel blocks, int16 pairs, partial blocks of
# 32 and 64 inputs: 37 and 40 and 577).
SHAPES = [(512, 576, 960), (512, 1536, 576), (7, 576, 576), (3, 1536, 960), (1, 576, 960),
          (1, 37, 13), (7, 37, 576), (3, 40, 13), (512, 40, 13), (7, 1536, 13), (130, 37, 13),
          (13, 577, 29), (6, 2, 16), (5, 1, 1)]
BLOCKS = [32, 64]
kernel = jax.jit(int8_kernel.matmul_dynamic, static_argnames="block")
reference = jax.jit(int8_kernel.matmul_dynamic_xla, static_argnames="block")


def _case(M, I, O, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, I)).astype(np.float32)
    w = rng.integers(-128, 128, (O, I)).astype(np.int8)  # -128 too: the kernel takes any int8
    scale = (rng.random(O) * 0.02 + 1e-3).astype(np.float32)
    return x, w, scale


def _exact(x, w, scale):
    return x.astype(np.float64) @ (w.astype(np.float64) * scale[:, None]).T


def _magnitude(x, w, scale):
    """sum_i |x[m, i] * w[o, i]| * scale[o]: what float rounding errors are relative to."""
    return np.abs(x).astype(np.float64) @ (np.abs(w.astype(np.float64)) * scale[:, None]).T


def _block_bound(x, w, scale, block):
    """Rounding x[m, i] to a multiple of its block's s = max|x[m, block]| / 127 moves it by at
    most s / 2; a zero stays zero and the block's largest |x| becomes +-127 * s, itself up to
    float rounding (left to the callers' slack). So |error[m, o]| <= sum_i step[m, i] *
    |w[o, i]| * scale[o] with step s / 2 or 0."""
    abs_x = np.abs(x).astype(np.float64)
    step = np.zeros_like(abs_x)
    for i0 in range(0, x.shape[1], block):
        blk = abs_x[:, i0:i0 + block]
        amax_M1 = blk.max(1, keepdims=True)
        step[:, i0:i0 + block] = np.where((blk == 0) | (blk == amax_M1), 0.0, amax_M1 / 127 / 2)
    return step @ (np.abs(w.astype(np.float64)) * scale[:, None]).T


@needs_kernel
def test_kernel_is_used():
    assert int8_kernel.gemm_kernel_available()
    hlo = kernel.lower(*_case(2, 8, 4)).as_text()
    assert int8_kernel.GEMM_TARGET in hlo


@needs_kernel
@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("M,I,O", SHAPES)
def test_kernel_equals_xla_integer_maths(M, I, O, block):
    """Both paths compute the same int8 blocks and exact int32 block sums; only the float32 sum of
    the n_blocks scaled block sums may round differently (by <= 2^-24 of the magnitude per
    addition). One activation rounded to a neighbouring integer would move an output by ~1e-3 of
    a block's magnitude, far beyond that."""
    x, w, scale = _case(M, I, O)
    got = np.asarray(kernel(x, w, scale, block=block))
    assert got.shape == (M, O) and got.dtype == np.float32
    want = np.asarray(reference(x, w, scale, block=block))
    n_blocks = -(-I // block)
    tol = (n_blocks + 2) * 2.0 ** -23 * _magnitude(x, w, scale)
    assert (np.abs(got - want) <= tol).all()


@pytest.mark.parametrize("block", [0, -32, 33])
def test_bad_block_is_refused(block):
    with pytest.raises(ValueError, match="block must be positive and even"):
        int8_kernel.matmul_dynamic(*_case(2, 8, 4), block=block)


@pytest.mark.parametrize("fn", [kernel, reference], ids=["kernel", "xla"])
def test_all_zero_blocks_give_no_nan(fn):
    """An all-zero block has scale 0 (not 0 / 0): an all-zero row gives zeros, and a row with one
    zero block keeps the other blocks' products."""
    x, w, scale = _case(9, 100, 20)
    x[[0, 8]] = 0.0
    x[3, 32:64] = 0.0
    x[5, 96:] = 0.0  # the partial last block
    got = np.asarray(fn(x, w, scale, block=32))
    assert np.isfinite(got).all()
    assert (got[[0, 8]] == 0).all()
    err = np.abs(got - _exact(x, w, scale))
    assert (err <= _block_bound(x, w, scale, 32) * (1 + 1e-4) + 1e-6 * _magnitude(x, w, scale)).all()


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("fn", [kernel, reference], ids=["kernel", "xla"])
def test_an_outlier_channel_coarsens_only_its_block(fn, block):
    """Rows with one input channel 1000x the others (as SmolLM2's activations have; here alone in
    its block), and rows of very different magnitude: the error against float64
    x @ (w * scale).T stays within the block bound, where the blocks away from the outlier keep
    their fine step. One scale per row rounds every ordinary input of such a row to the
    outlier's coarse step (to zero, here) and breaks that bound."""
    x, w, scale = _case(24, 300, 50, seed=1)
    x *= np.logspace(-3, 3, 24, dtype=np.float32)[:, None]
    outlier_rows = [2, 11, 20]
    x[outlier_rows, :block] = 0.0
    x[outlier_rows, 5] = 1000.0 * np.abs(x[outlier_rows]).max(1)
    exact = _exact(x, w, scale)
    bound = _block_bound(x, w, scale, block)
    err = np.abs(np.asarray(fn(x, w, scale, block=block)) - exact)
    assert (err <= bound * (1 + 1e-4) + 1e-6 * _magnitude(x, w, scale)).all()

    s_row_M1 = np.abs(x).max(1, keepdims=True).astype(np.float64) / 127
    per_row = np.round(x / s_row_M1) * s_row_M1 @ (w.astype(np.float64) * scale[:, None]).T
    per_row_err = np.abs(per_row - exact)[outlier_rows]
    assert (per_row_err > bound[outlier_rows]).mean() > 0.8
    # Per row, the error is small next to that row's outputs (a scale shared by all rows would
    # drown the 1e-3 rows).
    assert (err.max(1) < 0.05 * np.abs(exact).max(1)).all()


def test_under_jit_inside_a_larger_function():
    x, w, scale = _case(33, 64, 40)

    def layer(fn, x, w, scale):
        h = jnp.tanh(x) * 3.0 + 1.0
        return jax.nn.silu(fn(h, w, scale)).sum(axis=1) + h.mean()

    got = jax.jit(lambda *a: layer(int8_kernel.matmul_dynamic, *a))(x, w, scale)
    want = jax.jit(lambda *a: layer(int8_kernel.matmul_dynamic_xla, *a))(x, w, scale)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
