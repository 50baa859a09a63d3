"""Causal attention over a KV cache (infer/kernels/attend_kernel.py): the C++ kernel (x86 CPUs) and its
plain-XLA fallback against a float64 NumPy reference written from the definition."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infer.kernels import attend_kernel
from infer.kernels import cpu_kernels

# (B, T, G, R, K, S, start): a SmolLM2 decode step (3 kv heads x 3 queries, 64 wide, 640
# slots) and a prefill; one query per kv head (multi-head), eight (Llama 2 70B's ratio); token
# counts that are not multiples of the kernel's 16-token blocks, widths not multiples of its 8-,
# 16- and 32-wide steps, slot counts not multiples of its 16- and 128-slot blocks; a chunk after
# a prefix; a chunk whose tokens cross 128-slot blocks (the online softmax's rescaling) with a
# partial last token block.
SHAPES = [(1, 1, 3, 3, 64, 640, 576), (1, 40, 3, 3, 64, 64, 0), (2, 5, 4, 1, 32, 37, 20),
          (1, 11, 1, 8, 128, 100, 50), (2, 16, 2, 2, 24, 16, 0), (1, 3, 1, 3, 72, 50, 33),
          (1, 70, 2, 3, 40, 300, 100)]


def _case(B, T, G, R, K, S, start, seed=0, cache=np.float32):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((B, T, G, R, K)) * 0.5).astype(np.float32)
    k = rng.standard_normal((B, G, K, S)).astype(cache)
    v = rng.standard_normal((B, G, S, K)).astype(cache)
    valid = rng.random((B, S)) < 0.7
    valid[:, start:start + T] = True  # the new tokens themselves (padding is tested apart)
    return q, k, v, valid, np.int32(start)


def _reference(q, k, v, valid, start):
    """Softmax attention of token t over the valid slots <= start + t, in float64."""
    B, T, G, R, K = q.shape
    out = np.zeros(q.shape)
    for b in range(B):
        for t in range(T):
            seen = [s for s in range(int(start) + t + 1) if valid[b, s]]
            if not seen:  # a padding token that sees nothing: left at zero (tests skip it)
                continue
            for g in range(G):
                scores = q[b, t, g].astype(np.float64) @ k[b, g][:, seen].astype(np.float64)
                p = np.exp(scores - scores.max(-1, keepdims=True))
                out[b, t, g] = (p / p.sum(-1, keepdims=True)) @ v[b, g][seen].astype(np.float64)
    return out


@pytest.mark.parametrize("cache", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("fn", [attend_kernel.attend, attend_kernel.attend_xla],
                         ids=["kernel", "xla"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_reference(fn, shape, cache):
    """Against the exact attention over the cache's stored values (float16 ones included)."""
    args = _case(*shape, cache=cache)
    got = np.asarray(jax.jit(fn)(*args))
    assert got.shape == shape[:5] and got.dtype == np.float32
    # float32 sums of up to 128 products against float64: a few 1e-6 (seen 3.9e-6 at K=128).
    np.testing.assert_allclose(got, _reference(*args), rtol=0, atol=1e-5)


@pytest.mark.skipif(not cpu_kernels.enabled(), reason="a property of the kernel: the XLA "
                    "fallback multiplies every slot, NaN ones too, by its weight")
def test_slots_a_token_may_not_see_change_nothing():
    """Garbage in invalid slots (huge) and after the last token (NaN: never read) changes
    nothing."""
    q, k, v, valid, start = _case(2, 9, 3, 3, 64, 64, 30, seed=1)
    clean = np.asarray(jax.jit(attend_kernel.attend)(q, k, v, valid, start))
    k2, v2 = k.copy(), v.copy()
    k2[..., 39:], v2[:, :, 39:] = 1e4, np.nan  # after the last token
    for b in range(2):
        hidden = np.flatnonzero(~valid[b])
        k2[b][..., hidden], v2[b][:, hidden] = 1e4, -1e4
    dirty = np.asarray(jax.jit(attend_kernel.attend)(q, k2, v2, valid, start))
    np.testing.assert_allclose(dirty, clean, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fn", [attend_kernel.attend, attend_kernel.attend_xla],
                         ids=["kernel", "xla"])
def test_left_padded_row_sees_only_its_tokens(fn):
    """A row padded on the left by 140 slots (more than a 128-slot block of only padding):
    its tokens attend to their own slots only, and the padding tokens, which see no slot at
    all, get finite values (a NaN there would reach later layers through the cache)."""
    q, k, v, valid, start = _case(2, 160, 1, 3, 32, 192, 0, seed=2)
    valid[0, :140] = False
    got = np.asarray(jax.jit(fn)(q, k, v, valid, start))
    np.testing.assert_allclose(got[0, 140:], _reference(q, k, v, valid, start)[0, 140:], rtol=0,
                               atol=1e-5)
    np.testing.assert_allclose(got[1], _reference(q, k, v, valid, start)[1], rtol=0, atol=1e-5)
    assert np.isfinite(got[0, :140]).all()


def test_kernel_builds_and_is_used_on_this_machine():
    """Where it can (x86 with AVX2/FMA and a C++ compiler) the kernel is really used."""
    if not (cpu_kernels.enabled() and shutil.which("g++")):
        pytest.skip("no AVX2/FMA x86 CPU, no g++ or kernels switched off: XLA fallback")
    assert attend_kernel.kernel_available()
    for cache, kernel in ((np.float32, attend_kernel.KERNEL),
                          (np.float16, attend_kernel.KERNEL_F16)):
        args = _case(1, 2, 1, 1, 8, 8, 4, cache=cache)
        assert f"@{kernel[1]}(" in jax.jit(attend_kernel.attend).lower(*args).as_text()
    args = _case(1, 2, 1, 1, 8, 8, 4)
    inside = jax.jit(lambda *a: jnp.tanh(attend_kernel.attend(*a)).sum())(*args)
    assert float(inside) == pytest.approx(np.tanh(_reference(*args)).sum(), abs=1e-5)
