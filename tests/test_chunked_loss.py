"""The chunked output projection + cross-entropy (train.losses.chunked_token_losses) and the
step's kernel options (train.config.KernelsConfig): the same losses and gradients as the whole
logits tensor with optax's cross-entropy, and the options leave the default path untouched."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import model
from train import losses
from train.config import KernelsConfig


def _plain(h_BTD, w_DV, t_BT):
    logits = jnp.einsum("btd,dv->btv", h_BTD, w_DV)
    return optax.softmax_cross_entropy_with_integer_labels(logits, t_BT)


def test_chunked_losses_and_grads_equal_whole_logits():
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(3, 37, 16)), jnp.float32)  # 111 tokens: chunks of 25 pad
    w = jnp.asarray(rng.normal(size=(16, 50)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 50, (3, 37)), jnp.int32)
    weights = jnp.asarray(rng.random((3, 37)), jnp.float32)
    chunked = jax.jit(lambda h, w: losses.chunked_token_losses(h, w, t, 25))
    np.testing.assert_allclose(chunked(h, w), _plain(h, w, t), rtol=1e-5, atol=1e-5)
    g_c = jax.grad(lambda h, w: jnp.sum(chunked(h, w) * weights), argnums=(0, 1))(h, w)
    g_p = jax.grad(lambda h, w: jnp.sum(_plain(h, w, t) * weights), argnums=(0, 1))(h, w)
    for a, b in zip(g_c, g_p):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_chunked_loss_sum_and_its_forward_gradients_equal_whole_logits():
    """The weighted sum with gradients computed in the forward: optax's value and autodiff's
    gradients, scaled by the cotangent (here 2.5), with a zero weight and padded chunks."""
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(3, 37, 16)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(16, 50)), jnp.float32)
    t = jnp.asarray(rng.integers(0, 50, (3, 37)), jnp.int32)
    weights = jnp.asarray(rng.random((3, 37)), jnp.float32).at[0, :5].set(0.0)
    value, grads = jax.jit(jax.value_and_grad(
        lambda h, w: 2.5 * losses.chunked_loss_sum(h, w, t, weights, 25), argnums=(0, 1)))(h, w)
    ref, ref_grads = jax.value_and_grad(
        lambda h, w: 2.5 * jnp.sum(_plain(h, w, t) * weights), argnums=(0, 1))(h, w)
    np.testing.assert_allclose(value, ref, rtol=1e-6)
    alone = jax.jit(lambda h, w: 2.5 * losses.chunked_loss_sum(h, w, t, weights, 25))(h, w)
    np.testing.assert_allclose(alone, ref, rtol=1e-6)  # undifferentiated: the value path
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_chunked_loss_sum_in_bf16_is_close_and_compiles_with_a_tied_embedding():
    """In bfloat16 the gradients stay within bf16 rounding of float32's, and a tied embedding
    (the unembedding is embed.T) compiles: XLA:CPU's bf16 dots refuse a folded transpose."""
    rng = np.random.default_rng(2)
    h = jnp.asarray(rng.normal(size=(2, 64, 32)), jnp.float32)
    embed = jnp.asarray(rng.normal(size=(96, 32)) * 0.2, jnp.float32)
    t = jnp.asarray(rng.integers(0, 96, (2, 64)), jnp.int32)
    weights = jnp.ones((2, 64), jnp.float32)

    def grads(dtype):
        return jax.jit(jax.grad(lambda h, e: losses.chunked_loss_sum(
            h, e.T, t, weights, 32, dtype), argnums=(0, 1)))(h, embed)

    for a, b in zip(grads("bfloat16"), grads("float32")):
        err = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
        assert err < 2e-2, err


def test_no_whole_logits_in_the_chunked_gradient():
    """No [tokens, V] buffer in the compiled loss-and-gradient: the largest float32 buffer is
    a chunk's logits, not the whole batch's."""
    h = jnp.ones((8, 128, 16), jnp.float32)
    w = jnp.ones((16, 512), jnp.float32)
    t = jnp.zeros((8, 128), jnp.int32)
    f = jax.jit(jax.grad(lambda h, w: losses.chunked_token_losses(h, w, t, 128).sum(),
                         argnums=(0, 1)))
    hlo = f.lower(h, w).compile().as_text()
    assert "f32[1024,512]" not in hlo and "f32[8,128,512]" not in hlo
    assert "f32[128,512]" in hlo
    weights = jnp.ones((8, 128), jnp.float32)
    f = jax.jit(jax.grad(lambda h, w: losses.chunked_loss_sum(h, w, t, weights, 128),
                         argnums=(0, 1)))
    hlo = f.lower(h, w).compile().as_text()
    assert "f32[1024,512]" not in hlo and "f32[8,128,512]" not in hlo
    assert "f32[128,512]" in hlo


def test_step_options_match_the_default_loss():
    """token_losses with flash attention and chunks gives the default's losses and gradients
    (packed segments, GQA, tied embedding)."""
    cfg = model.ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                            d_ff=64, max_seq_len=70, compute_dtype="float32")
    params = model.init(cfg, jax.random.key(0))
    x = jax.random.randint(jax.random.key(1), (2, 70), 0, 96)
    y = jax.random.randint(jax.random.key(2), (2, 70), 0, 96)
    seg = jnp.asarray(np.repeat([[0] * 20 + [1] * 50], 2, axis=0), jnp.int32)
    pos = jnp.asarray(np.repeat([list(range(20)) + list(range(50))], 2, axis=0), jnp.int32)

    def total(p, kernels):
        return losses.token_losses(p, x, y, cfg, positions_BT=pos, segment_ids_BT=seg,
                                   kernels=kernels).sum()

    base, g_base = jax.value_and_grad(total)(params, None)
    for kernels in (KernelsConfig(loss_chunk=48), KernelsConfig(attention="flash"),
                    KernelsConfig(attention="flash", loss_chunk=64)):
        value, grads = jax.jit(jax.value_and_grad(lambda p: total(p, kernels)))(params)
        np.testing.assert_allclose(value, base, rtol=1e-5, err_msg=str(kernels))
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(g_base)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=str(kernels))
    same = jax.jit(lambda p: total(p, KernelsConfig()))(params)
    assert float(same) == float(jax.jit(lambda p: total(p, None))(params))


def test_masked_loss_with_chunks_matches_the_default():
    """masked_next_token_loss with a loss chunk (the forward-gradient path) gives the default's
    loss sum and parameter gradients, with weighted and masked targets and a tied embedding."""
    cfg = model.ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                            d_ff=64, max_seq_len=70, compute_dtype="float32",
                            tie_embeddings=True)
    params = model.init(cfg, jax.random.key(3))
    rng = np.random.default_rng(3)
    batch = {"inputs": jnp.asarray(rng.integers(0, 96, (2, 70)), jnp.int32),
             "targets": jnp.asarray(rng.integers(0, 96, (2, 70)), jnp.int32),
             "loss_mask": jnp.asarray(rng.random((2, 70)) * (rng.random((2, 70)) > 0.3),
                                      jnp.float32)}

    def loss(p, kernels):
        total, count, _ = losses.masked_next_token_loss(p, batch, None, cfg, kernels)
        return total / count

    base, g_base = jax.value_and_grad(loss)(params, None)
    for kernels in (KernelsConfig(loss_chunk=48), KernelsConfig(attention="flash", loss_chunk=64)):
        value, grads = jax.jit(jax.value_and_grad(lambda p: loss(p, kernels)))(params)
        np.testing.assert_allclose(value, base, rtol=1e-5, err_msg=str(kernels))
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(g_base)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=str(kernels))
