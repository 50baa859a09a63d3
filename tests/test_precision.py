"""model.precision.dot: float32 is plain einsum bit for bit; in bfloat16 the backward's matmuls
take bf16 inputs (the bf16 step's speed) and give the gradients numpy computes from the
bf16-rounded operands, in float32."""

import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from model import precision

SPECS = [("btd,dv->btv", (2, 3, 8), (8, 5)),
         ("btgrk,bsgk->bgrts", (2, 4, 1, 2, 8), (2, 4, 1, 8))]  # attention's scores


def _operands(x_shape, w_shape, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=x_shape), jnp.float32),
            jnp.asarray(rng.normal(size=w_shape), jnp.float32))


@pytest.mark.parametrize("spec,x_shape,w_shape", SPECS)
def test_float32_is_plain_einsum_bit_for_bit(spec, x_shape, w_shape):
    x, w = _operands(x_shape, w_shape)
    g = jnp.asarray(np.random.default_rng(1).normal(size=jnp.einsum(spec, x, w).shape),
                    jnp.float32)

    def loss(f):
        return lambda x, w: jnp.sum(f(x, w) * g)
    ours = jax.jit(jax.grad(loss(lambda x, w: precision.dot(spec, x, w, "float32")), (0, 1)))
    plain = jax.jit(jax.grad(loss(lambda x, w: jnp.einsum(
        spec, x, w, preferred_element_type=jnp.float32)), (0, 1)))
    for a, b in zip(ours(x, w), plain(x, w)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("spec,x_shape,w_shape", SPECS)
def test_bfloat16_gradients_are_bf16_products_in_float32(spec, x_shape, w_shape):
    x, w = _operands(x_shape, w_shape)
    y = precision.dot(spec, x, w, "bfloat16")
    g = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), jnp.float32)
    dx, dw = jax.grad(lambda x, w: jnp.sum(precision.dot(spec, x, w, "bfloat16") * g),
                      (0, 1))(x, w)
    assert y.dtype == dx.dtype == dw.dtype == jnp.float32

    def bf16(a):  # numpy's own rounding to bfloat16, back in float64
        return np.asarray(a).astype(ml_dtypes.bfloat16).astype(np.float64)
    xr, wr, gr = bf16(x), bf16(w), bf16(g)
    dx_spec, dw_spec = precision._transposed_specs(spec)
    np.testing.assert_allclose(y, np.einsum(spec, xr, wr), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, np.einsum(dx_spec, gr, wr), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, np.einsum(dw_spec, xr, gr), rtol=1e-5, atol=1e-5)


def test_bfloat16_backward_has_no_float32_matmul():
    """Every dot of the bf16 loss-and-gradient multiplies bf16 operands (JAX's own transpose
    multiplies the float32 cotangent, which XLA runs in float32)."""
    x, w = _operands((4, 16, 32), (32, 64))
    f = jax.grad(lambda x, w: jnp.sum(jnp.tanh(precision.dot("btd,dv->btv", x, w,
                                                             "bfloat16"))), (0, 1))
    text = jax.jit(f).lower(x, w).as_text()
    dots = re.findall(r"dot_general.*?: \((tensor<[^)]*)\)", text)
    assert len(dots) == 3
    for operands in dots:
        assert operands.count("bf16") == 2 and "f32" not in operands, operands


def test_a_spec_summing_an_index_alone_is_refused():
    with pytest.raises(ValueError, match="sums an index"):
        precision._transposed_specs("abz,bc->ac")



def test_bfloat16_gradient_of_a_tied_model_runs_on_the_cpu():
    """The whole-logits loss of a tied model (the bench's shapes) compiles and runs in bf16,
    close to its float32 gradient: XLA:CPU folded embed.T into the unembedding's dW dot and
    then refused that bf16 dot at run time ("Unsupported element type for DotThunk")."""
    import model

    cfg = model.ModelConfig(vocab_size=8192, d_model=384, n_layers=1, n_heads=6, n_kv_heads=6,
                            d_ff=1024, max_seq_len=256, tie_embeddings=True)
    params = model.init(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (16, 256), 0, 8192)

    def grad_embed(dtype):
        c = model.apply_overrides(cfg, [f"compute_dtype={dtype}"])
        def loss(p):
            logits, _ = model.forward(p, tokens, c)
            return jnp.mean(jax.nn.logsumexp(logits, -1))
        return jax.jit(jax.grad(loss))(params)["embed"]
    g16, g32 = grad_embed("bfloat16"), grad_embed("float32")
    assert float(jnp.max(jnp.abs(g16 - g32))) < 0.05 * float(jnp.max(jnp.abs(g32)))
