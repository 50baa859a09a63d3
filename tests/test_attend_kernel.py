"""One decode step's attention (infer/attend_kernel.py): the C++ kernel (x86 CPUs) and its
plain-XLA fallback against a float64 NumPy reference written from the definition."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infer import attend_kernel, cpu_kernels

# (B, G, R, K, S, length): SmolLM2's step (3 kv heads x 3 queries, 64 wide); one query per kv
# head (multi-head), eight (Llama 2 70B's ratio); widths that are not multiples of the kernel's
# 8- and 64-wide steps; slot counts that are not multiples of its 16-slot blocks; nothing
# written yet (length 0); every slot written.
SHAPES = [(1, 3, 3, 64, 640, 576), (2, 4, 1, 32, 37, 20), (3, 1, 8, 128, 100, 100),
          (2, 2, 2, 24, 16, 0), (1, 1, 3, 72, 50, 33)]


def _case(B, G, R, K, S, length, seed=0):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((B, G, R, K)) * 0.5).astype(np.float32)
    k = rng.standard_normal((B, G, K, S)).astype(np.float32)
    v = rng.standard_normal((B, G, S, K)).astype(np.float32)
    valid = rng.random((B, S)) < 0.7
    k_new = rng.standard_normal((B, G, K)).astype(np.float32)
    v_new = rng.standard_normal((B, G, K)).astype(np.float32)
    return q, k, v, valid, np.int32(length), k_new, v_new


def _reference(q, k, v, valid, length, k_new, v_new):
    """Softmax attention over the visible slots plus the new token, in float64."""
    B, G, R, K = q.shape
    out = np.zeros((B, G, R, K))
    for b in range(B):
        seen = [s for s in range(int(length)) if valid[b, s]]
        for g in range(G):
            keys = np.concatenate([k[b, g][:, seen].T, k_new[b, g][None]]).astype(np.float64)
            values = np.concatenate([v[b, g][seen], v_new[b, g][None]]).astype(np.float64)
            scores = q[b, g].astype(np.float64) @ keys.T
            p = np.exp(scores - scores.max(-1, keepdims=True))
            out[b, g] = (p / p.sum(-1, keepdims=True)) @ values
    return out


@pytest.mark.parametrize("fn", [attend_kernel.attend_step, attend_kernel.attend_step_xla],
                         ids=["kernel", "xla"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_reference(fn, shape):
    args = _case(*shape)
    got = np.asarray(jax.jit(fn)(*args))
    assert got.shape == shape[:4] and got.dtype == np.float32
    # float32 sums of up to 128 products against float64: a few 1e-6 (seen 3.9e-6 at K=128).
    np.testing.assert_allclose(got, _reference(*args), rtol=0, atol=1e-5)


def test_slots_past_length_and_invalid_slots_are_never_seen():
    """Garbage (huge, NaN) in slots the step may not see changes nothing."""
    q, k, v, valid, length, k_new, v_new = _case(2, 3, 3, 64, 64, 40, seed=1)
    clean = np.asarray(jax.jit(attend_kernel.attend_step)(q, k, v, valid, length, k_new, v_new))
    k2, v2 = k.copy(), v.copy()
    k2[..., 40:], v2[:, :, 40:] = 1e4, np.nan
    for b in range(2):
        hidden = ~valid[b, :40]
        k2[b][:, :, :40][..., hidden] = 1e4
    dirty = np.asarray(jax.jit(attend_kernel.attend_step)(q, k2, v2, valid, length, k_new, v_new))
    np.testing.assert_allclose(dirty, clean, rtol=0, atol=1e-6)


def test_kernel_builds_and_is_used_on_this_machine():
    """Where it can (x86 with AVX2/FMA and a C++ compiler) the kernel is really used."""
    if not (cpu_kernels._cpu_supported() and shutil.which("g++")):
        pytest.skip("no AVX2/FMA x86 CPU or no g++: decode steps use the XLA fallback")
    assert attend_kernel.kernel_available()
    args = _case(1, 1, 1, 8, 8, 4)
    hlo = jax.jit(attend_kernel.attend_step).lower(*args).as_text()
    assert attend_kernel.KERNEL[1] in hlo
    inside = jax.jit(lambda *a: jnp.tanh(attend_kernel.attend_step(*a)).sum())(*args)
    assert float(inside) == pytest.approx(np.tanh(_reference(*args)).sum(), abs=1e-5)
