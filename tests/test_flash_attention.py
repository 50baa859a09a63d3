"""Flash attention for training (infer/kernels/flash_attention.py): values and gradients equal
model.forward's own attention (dense float32 XLA einsums, `_attention` of model.transformer) to
float32 tolerance, causal, within packed segments, with grouped-query heads, at lengths that are
not a multiple of the kernel's 64-token blocks; and the bf16 kernel (AMX tiles or vdpbf16ps)
within the error of model.forward's own bf16 attention."""

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


def _bf16_errors(got, q, k, v, seg, w):
    """Relative errors of `got` (out, dq, dk, dv of the bf16 kernel) against the float32
    attention, next to those of model.forward's bf16 attention (XLA, the same bf16 rounding of
    q, k, v, probabilities and cotangent)."""
    B, T, H, K = q.shape
    G = k.shape[2]
    cfg32 = model.ModelConfig(n_heads=H, n_kv_heads=G, d_model=H * K, compute_dtype="float32")
    cfg16 = model.ModelConfig(n_heads=H, n_kv_heads=G, d_model=H * K, compute_dtype="bfloat16")
    exact = lambda q, k, v: _model_attention(q, k, v, seg, cfg32)
    xla16 = lambda q, k, v: _model_attention(q, k, v, seg, cfg16).astype(jnp.float32)
    grads = lambda f: jax.jit(jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) * w), (0, 1, 2)))(
        q, k, v)
    want = [exact(q, k, v), *grads(exact)]
    xla = [xla16(q, k, v), *grads(xla16)]
    return {name: (_rel_err(a, b), _rel_err(c, b))
            for name, a, b, c in zip(("out", "dq", "dk", "dv"), got, want, xla)}


def _assert_as_accurate_as_xla_bf16(errors):
    for name, (err, err_xla) in errors.items():
        assert err <= 1.5 * err_xla + 1e-4 and err < 2**-7, (name, err, err_xla)


@pytest.mark.skipif(fa.bf16_engine() is None, reason="needs a CPU with AVX512_BF16")
@pytest.mark.parametrize("B,T,H,G,K,segments", [
    (2, 150, 4, 2, 64, True),    # GQA, packed segments, T not a multiple of 64
    (1, 130, 2, 1, 32, False),   # the smallest head size the kernel takes
])
def test_bf16_kernel_is_as_accurate_as_xla_bf16(B, T, H, G, K, segments):
    """Values and gradients of the bf16 kernel (this CPU's engine) are as close to the float32
    attention as model.forward's bf16 attention is: within 1.5x its error, and both near bf16's
    epsilon (2^-8)."""
    q, k, v, seg = _inputs(B, T, H, G, K, seed=5, segments=segments)
    w = jnp.asarray(np.random.default_rng(6).normal(size=(B, T, H, K)), jnp.float32)
    ours = lambda q, k, v: fa.attention(q, k, v, seg if segments else None, "bfloat16")
    got = [jax.jit(ours)(q, k, v),
           *jax.jit(jax.grad(lambda q, k, v: jnp.sum(ours(q, k, v) * w), (0, 1, 2)))(q, k, v)]
    _assert_as_accurate_as_xla_bf16(_bf16_errors(got, q, k, v, seg, w))


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


_ISA_RUN = """
import sys, jax, jax.numpy as jnp, numpy as np
from infer.kernels import flash_attention as fa
data = dict(np.load(sys.argv[1]))
q, k, v, seg, w = (jnp.asarray(data[n]) for n in ("q", "k", "v", "seg", "w"))
res = {"engine": np.asarray(str(fa.bf16_engine()))}
for dtype in ("float32", "bfloat16"):
    f = lambda q, k, v: fa.attention(q, k, v, seg, dtype)
    grads = jax.grad(lambda q, k, v: jnp.sum(f(q, k, v) * w), (0, 1, 2))(q, k, v)
    res |= {f"{n}_{dtype}": x for n, x in zip(("out", "dq", "dk", "dv"), (f(q, k, v), *grads))}
np.savez(sys.argv[1], **res)
"""


def _run_with_isa(isa, tmp_path, **inputs):
    """_ISA_RUN's results in a fresh process under TWOFILES_CPU_ISA=isa."""
    path = tmp_path / "io.npz"
    np.savez(path, **inputs)
    env = {**os.environ, "TWOFILES_CPU_ISA": isa, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", _ISA_RUN, str(path)], check=True, env=env,
                   cwd=Path(__file__).resolve().parent.parent)
    return dict(np.load(path))


def test_avx2_path_matches_model_attention(tmp_path):
    """The kernel's AVX2 build (other register blocks), forced on this CPU by TWOFILES_CPU_ISA
    in a fresh process, gives model.forward's attention and gradients too."""
    B, T, H, G, K = 2, 150, 4, 2, 64
    cfg = model.ModelConfig(n_heads=H, n_kv_heads=G, d_model=H * K, compute_dtype="float32")
    q, k, v, seg = _inputs(B, T, H, G, K, seed=3, segments=True)
    w = jnp.asarray(np.random.default_rng(4).normal(size=(B, T, H, K)), jnp.float32)
    got = _run_with_isa("avx2", tmp_path, q=q, k=k, v=v, seg=seg, w=w)
    assert str(got["engine"]) == "None"  # bf16 compute runs the float32 kernel there
    theirs = lambda q, k, v: _model_attention(q, k, v, seg, cfg)
    np.testing.assert_allclose(got["out_float32"], theirs(q, k, v), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["out_bfloat16"], got["out_float32"])
    g_theirs = jax.grad(lambda q, k, v: jnp.sum(theirs(q, k, v) * w), (0, 1, 2))(q, k, v)
    for name, b in zip("qkv", g_theirs):
        np.testing.assert_allclose(got[f"d{name}_float32"], b, rtol=1e-4, atol=1e-4,
                                   err_msg=f"d{name}")


@pytest.mark.skipif(fa.bf16_engine() != "amx", reason="the vdpbf16ps engine runs in-process")
def test_bf16_dot_engine_on_an_amx_cpu(tmp_path):
    """On an AMX CPU, TWOFILES_CPU_ISA=avx512 runs the bf16 kernel's vdpbf16ps engine (what
    AMD's AVX512_BF16 CPUs run), and it is as accurate as model.forward's bf16 attention."""
    q, k, v, seg = _inputs(2, 150, 4, 2, 64, seed=5, segments=True)
    w = jnp.asarray(np.random.default_rng(6).normal(size=(2, 150, 4, 64)), jnp.float32)
    got = _run_with_isa("avx512", tmp_path, q=q, k=k, v=v, seg=seg, w=w)
    assert str(got["engine"]) == "avx512_bf16"
    outs = [got[f"{n}_bfloat16"] for n in ("out", "dq", "dk", "dv")]
    _assert_as_accurate_as_xla_bf16(_bf16_errors(outs, q, k, v, seg, w))
