"""Flash attention for training (infer/kernels/flash_attention.py): values and gradients equal
model.forward's own attention (dense float32 XLA einsums, `_attention` of model.transformer) to
float32 tolerance, causal, within packed segments, with grouped-query heads, at lengths that are
not a multiple of the kernel's 64-token blocks; and the bf16 kernel on AMX tiles within the
error of model.forward's own bf16 attention."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from infer.kernels import flash_attention as fa
from model import transformer
from model.ops import AttentionContext

pytestmark = pytest.mark.skipif(not fa.kernel_available(), reason="needs the C++ kernel (x86)")


def _model_attention(q, k, v, seg, cfg):
    """model.forward's default attention on the same q, k, v (its dense mask)."""
    B, T = q.shape[:2]
    mask = jnp.tril(jnp.ones((T, T), bool))[None] & (seg[:, :, None] == seg[:, None, :])
    out, _ = transformer._attention(q, k, v, None, AttentionContext(mask, 0), cfg)
    return out


def _inputs(B, T, H, G, K, seed=0, segments=False):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=(B, T, n, K)), jnp.float32) for n in (H, G, G))
    if segments:  # documents of random lengths packed in each row, ids increasing
        seg = np.cumsum(rng.random((B, T)) < 0.03, axis=1).astype(np.int32)
    else:
        seg = np.zeros((B, T), np.int32)
    return q, k, v, jnp.asarray(seg)


@pytest.mark.parametrize("B,T,H,G,K,segments", [
    (2, 150, 4, 2, 16, False),   # GQA, T not a multiple of 64
    (2, 130, 3, 3, 8, True),     # packed segments
    (1, 64, 4, 1, 32, True),     # one kv head, exactly one block
    (1, 130, 2, 1, 64, True),    # the bench's head size: 64-float register blocks
])
def test_values_and_grads_match_model_attention(B, T, H, G, K, segments):
    cfg = model.ModelConfig(n_heads=H, n_kv_heads=G, d_model=H * K, compute_dtype="float32")
    q, k, v, seg = _inputs(B, T, H, G, K, segments=segments)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(B, T, H, K)), jnp.float32)

    def loss(f):
        return lambda q, k, v: jnp.sum(f(q, k, v) * w)

    ours = lambda q, k, v: fa.attention(q, k, v, seg if segments else None)
    theirs = lambda q, k, v: _model_attention(q, k, v, seg, cfg)
    np.testing.assert_allclose(jax.jit(ours)(q, k, v), theirs(q, k, v), rtol=1e-5, atol=1e-5)
    g_ours = jax.jit(jax.grad(loss(ours), argnums=(0, 1, 2)))(q, k, v)
    g_theirs = jax.grad(loss(theirs), argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", g_ours, g_theirs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=f"d{name}")


def _rel_err(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.skipif(not fa.amx_available(), reason="needs a CPU with AMX-BF16 tiles")
@pytest.mark.parametrize("B,T,H,G,K,segments", [
    (2, 150, 4, 2, 64, True),    # GQA, packed segments, T not a multiple of 64
    (1, 130, 2, 1, 32, False),   # the smallest head size the AMX tiles take
])
def test_bf16_kernel_is_as_accurate_as_xla_bf16(B, T, H, G, K, segments):
    """Values and gradients of the AMX kernel are as close to the float32 attention as
    model.forward's bf16 attention (XLA, the same bf16 rounding of q, k, v, probabilities and
    cotangent) is: within 1.5x its error, and both near bf16's epsilon (2^-8)."""
    cfg32 = model.ModelConfig(n_heads=H, n_kv_heads=G, d_model=H * K, compute_dtype="float32")
    cfg16 = model.ModelConfig(n_heads=H, n_kv_heads=G, d_model=H * K, compute_dtype="bfloat16")
    q, k, v, seg = _inputs(B, T, H, G, K, seed=5, segments=segments)
    w = jnp.asarray(np.random.default_rng(6).normal(size=(B, T, H, K)), jnp.float32)
    ours = lambda q, k, v: fa.attention(q, k, v, seg if segments else None, "bfloat16")
    exact = lambda q, k, v: _model_attention(q, k, v, seg, cfg32)
    xla16 = lambda q, k, v: _model_attention(q, k, v, seg, cfg16).astype(jnp.float32)
    grads = lambda f: jax.jit(jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) * w), (0, 1, 2)))(
        q, k, v)
    g_ours, g_exact, g_xla16 = grads(ours), grads(exact), grads(xla16)
    pairs = [("out", jax.jit(ours)(q, k, v), exact(q, k, v), xla16(q, k, v))]
    pairs += [(f"d{n}", a, b, c) for n, a, b, c in zip("qkv", g_ours, g_exact, g_xla16)]
    for name, a, b, c in pairs:
        err, err_xla = _rel_err(a, b), _rel_err(c, b)
        assert err <= 1.5 * err_xla + 1e-4 and err < 2**-7, (name, err, err_xla)


def test_segments_do_not_see_each_other():
    """Changing the first document's values changes nothing in the second's output."""
    q, k, v, _ = _inputs(1, 100, 2, 2, 8)
    seg = jnp.asarray((np.arange(100) >= 40).astype(np.int32))[None]
    out = fa.attention(q, k, v, seg)
    v2 = v.at[:, :40].set(100.0)
    out2 = fa.attention(q, k, v2, seg)
    np.testing.assert_array_equal(out[:, 40:], out2[:, 40:])
    assert not np.allclose(out[:, :40], out2[:, :40])


def test_forward_with_flash_ops_equals_default_forward():
    """model.forward(ops=model_ops()) gives the default forward's logits and gradients."""
    cfg = model.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                            d_ff=64, max_seq_len=80, compute_dtype="float32")
    params = model.init(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 80), 0, 64)
    seg = jnp.asarray(np.repeat([[0] * 30 + [1] * 50], 2, axis=0), jnp.int32)

    def loss(p, ops):
        logits, _ = model.forward(p, tokens, cfg, segment_ids_BT=seg, ops=ops)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 3]), logits

    (l0, lg0), g0 = jax.value_and_grad(loss, has_aux=True)(params, model.ops.DEFAULT)
    (l1, lg1), g1 = jax.jit(jax.value_and_grad(lambda p: loss(p, fa.model_ops()),
                                               has_aux=True))(params)
    np.testing.assert_allclose(lg1, lg0, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_refuses_a_cache():
    q, k, v, _ = _inputs(1, 8, 2, 2, 8)
    ctx = AttentionContext(jnp.ones((1, 8, 8), bool), 0)
    with pytest.raises(ValueError, match="without a cache"):
        fa.model_attention(q, k, v, (k, v), ctx, None)


def test_accelerator_path_matches_model_attention():
    """The path GPUs take (jax.nn.dot_product_attention, here on the CPU) agrees too."""
    cfg = model.ModelConfig(n_heads=4, n_kv_heads=2, d_model=64, compute_dtype="float32")
    q, k, v, seg = _inputs(2, 70, 4, 2, 16, segments=True)
    np.testing.assert_allclose(fa._elsewhere(q, k, v, seg), _model_attention(q, k, v, seg, cfg),
                               rtol=1e-5, atol=1e-5)


_AVX2_RUN = """
import sys, jax, jax.numpy as jnp, numpy as np
from infer.kernels import flash_attention as fa
data = dict(np.load(sys.argv[1]))
q, k, v, seg, w = (jnp.asarray(data[n]) for n in ("q", "k", "v", "seg", "w"))
out = fa.attention(q, k, v, seg)
out_bf16 = fa.attention(q, k, v, seg, "bfloat16")  # no AMX on this path: the float32 kernel
grads = jax.grad(lambda q, k, v: jnp.sum(fa.attention(q, k, v, seg) * w), (0, 1, 2))(q, k, v)
np.savez(sys.argv[1], out=out, out_bf16=out_bf16, dq=grads[0], dk=grads[1], dv=grads[2])
"""


def test_avx2_path_matches_model_attention(tmp_path):
    """The kernel's AVX2 build (other register blocks), forced on this CPU by TWOFILES_CPU_ISA
    in a fresh process, gives model.forward's attention and gradients too."""
    B, T, H, G, K = 2, 150, 4, 2, 64
    cfg = model.ModelConfig(n_heads=H, n_kv_heads=G, d_model=H * K, compute_dtype="float32")
    q, k, v, seg = _inputs(B, T, H, G, K, seed=3, segments=True)
    w = jnp.asarray(np.random.default_rng(4).normal(size=(B, T, H, K)), jnp.float32)
    path = tmp_path / "io.npz"
    np.savez(path, q=q, k=k, v=v, seg=seg, w=w)
    env = {**os.environ, "TWOFILES_CPU_ISA": "avx2", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", _AVX2_RUN, str(path)], check=True, env=env,
                   cwd=Path(__file__).resolve().parent.parent)
    got = np.load(path)
    theirs = lambda q, k, v: _model_attention(q, k, v, seg, cfg)
    np.testing.assert_allclose(got["out"], theirs(q, k, v), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["out_bf16"], got["out"])
    g_theirs = jax.grad(lambda q, k, v: jnp.sum(theirs(q, k, v) * w), (0, 1, 2))(q, k, v)
    for name, b in zip("qkv", g_theirs):
        np.testing.assert_allclose(got[f"d{name}"], b, rtol=1e-4, atol=1e-4, err_msg=f"d{name}")
