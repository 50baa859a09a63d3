"""infer/kernels/xent: the chunk's cross-entropy and its gradient against numpy's float64
softmax, in float32 and in bf16, with weights, a zero weight and extreme logits; on a CPU with
AVX-512 and BF16 the C++ kernel computes them (asserted), elsewhere XLA's expression."""

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from infer.kernels import xent


def _numpy(logits, targets, weights):
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    p = np.exp(x - lse[:, None])
    p[np.arange(len(targets)), targets] -= 1.0
    return weights[:, None] * p, lse - x[np.arange(len(targets)), targets]


def test_the_kernel_runs_where_the_cpu_has_avx512_bf16():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert xent.available() == (" avx512bw" in flags and " avx512_bf16" in flags)


@pytest.mark.parametrize("g_dtype", [jnp.float32, jnp.bfloat16])
def test_gradient_and_nll_equal_numpy(g_dtype):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(40, 320)) * 4).astype(np.float32)
    logits[3, 7] = 80.0    # one dominant logit: softmax ~ one-hot
    logits[5] -= 60.0      # a shifted row: the max is subtracted first
    targets = rng.integers(0, 320, 40).astype(np.int32)
    targets[3] = 7
    weights = rng.uniform(size=40).astype(np.float32)
    weights[9] = 0.0       # a masked token: no gradient
    g, nll = jax.jit(lambda l, t, w: xent.grad_and_nll(l, t, w, g_dtype))(
        logits, targets, weights)
    assert g.dtype == g_dtype and nll.dtype == jnp.float32
    g_want, nll_want = _numpy(logits, targets, weights)
    np.testing.assert_allclose(np.asarray(nll), nll_want, rtol=1e-5, atol=1e-5)
    if g_dtype == jnp.bfloat16:  # the float64 gradient rounded once to bf16, give or take an ulp
        g_want = g_want.astype(ml_dtypes.bfloat16).astype(np.float64)
        np.testing.assert_allclose(np.asarray(g, np.float64), g_want, rtol=2 ** -7, atol=1e-7)
    else:
        np.testing.assert_allclose(np.asarray(g), g_want, rtol=1e-5, atol=1e-7)
    assert not np.asarray(g, np.float64)[9].any()


def test_a_vocabulary_the_kernel_does_not_take_goes_to_xla():
    logits = np.random.default_rng(1).normal(size=(8, 100)).astype(np.float32)  # 100 % 32 != 0
    targets, weights = np.arange(8, dtype=np.int32), np.ones(8, np.float32)
    g, nll = xent.grad_and_nll(logits, targets, weights)
    g_want, nll_want = _numpy(logits, targets, weights)
    np.testing.assert_allclose(np.asarray(g), g_want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(nll), nll_want, rtol=1e-5)


def test_the_chunked_loss_on_the_kernel_equals_whole_logits():
    """train.losses.chunked_loss_sum (its body calls grad_and_nll) against optax on the whole
    logits, values and both gradients, at a vocabulary the kernel takes."""
    import optax

    from train import losses

    rng = np.random.default_rng(2)
    h = jnp.asarray(rng.normal(size=(2, 40, 16)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(16, 64)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 64, (2, 40)), jnp.int32)
    weights = jnp.asarray(rng.uniform(size=(2, 40)), jnp.float32)

    def plain(h, w):
        nll = optax.softmax_cross_entropy_with_integer_labels(jnp.einsum("btd,dv->btv", h, w), t)
        return jnp.sum(weights * nll)
    got = jax.jit(jax.value_and_grad(
        lambda h, w: losses.chunked_loss_sum(h, w, t, weights, 32), (0, 1)))(h, w)
    want = jax.value_and_grad(plain, (0, 1))(h, w)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
