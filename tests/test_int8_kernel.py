"""The int8-weight matrix product used by int8 decoding: the C++ kernel (x86 CPUs) and its
plain-XLA fallback against a float64 NumPy reference, and the row quantisation."""

import shutil

import jax
import numpy as np
import pytest

from infer.kernels import cpu_kernels
from infer.runtime import decode_model
from infer.kernels import int8_kernel

# (M, I, O): decode batches 1..9 (the kernel works in blocks of 4 rows), a contraction length
# that is not a multiple of its 8- and 32-wide steps, fewer output rows than one thread block.
SHAPES = [(1, 576, 960), (2, 64, 130), (3, 37, 70), (5, 1536, 576), (8, 576, 1000),
          (9, 100, 3), (1, 7, 1)]


def _case(M, I, O, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, I)).astype(np.float32)
    w = rng.integers(-127, 128, (O, I)).astype(np.int8)
    scale = rng.random(O).astype(np.float32) + 0.01
    expected = (x.astype(np.float64) @ w.T.astype(np.float64)) * scale
    return x, w, scale, expected


@pytest.mark.parametrize("fn", [int8_kernel.matmul, int8_kernel.matmul_xla],
                         ids=["kernel", "xla"])
@pytest.mark.parametrize("M,I,O", SHAPES)
def test_matches_float64_reference(fn, M, I, O):
    x, w, scale, expected = _case(M, I, O)
    got = np.asarray(jax.jit(fn)(x, w, scale))
    assert got.shape == (M, O) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_kernel_builds_on_this_machine():
    """Where it can (x86 with AVX2/FMA and a C++ compiler) the kernel is really used."""
    if not (cpu_kernels.enabled() and shutil.which("g++")):
        pytest.skip("no AVX2/FMA x86 CPU, no g++ or kernels switched off: XLA fallback")
    assert int8_kernel.kernel_available()
    x, w, scale, _ = _case(1, 64, 8)
    hlo = jax.jit(int8_kernel.matmul).lower(x, w, scale).as_text()
    assert int8_kernel.TARGET in hlo


def test_quantize_rows_rounds_within_half_a_step():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 50)).astype(np.float32) * np.arange(1, 7)[:, None]
    w[2] = 0.0  # an all-zero row must not divide by zero
    q = decode_model.quantize_rows(w)
    assert q["w"].dtype == np.int8 and np.abs(q["w"]).max() == 127
    err = np.abs(q["w"] * q["scale"][:, None] - w)
    assert (err <= q["scale"][:, None] / 2 + 1e-7).all()
    assert (q["w"][2] == 0).all()
