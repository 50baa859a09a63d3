"""Behaviour of the forward pass that training and decoding rely on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model

CFG = model.preset("tiny")


@pytest.fixture(scope="module")
def params():
    return model.init(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def fwd():
    return jax.jit(lambda p, t: model.forward(p, t, CFG)[0])


def test_init_is_pure_and_keyed(params):
    again = model.init(CFG, jax.random.key(0))
    other = model.init(CFG, jax.random.key(1))
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, again)
    assert all(jax.tree.leaves(same))
    assert not jnp.array_equal(params["layers"]["wq"], other["layers"]["wq"])


def test_logits_shape_and_dtype(params, fwd):
    logits = fwd(params, jnp.zeros((3, 17), jnp.int32))
    assert logits.shape == (3, 17, CFG.vocab_size) and logits.dtype == jnp.float32


def test_changing_a_later_token_never_changes_earlier_logits(params, fwd):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, CFG.vocab_size, (2, 32))
    base = fwd(params, jnp.asarray(tokens))
    for t in (5, 17, 31):
        changed = tokens.copy()
        changed[:, t] = (changed[:, t] + 1) % CFG.vocab_size
        out = fwd(params, jnp.asarray(changed))
        np.testing.assert_array_equal(np.asarray(out[:, :t]), np.asarray(base[:, :t]))
        assert not np.allclose(out[:, t], base[:, t])


def test_cached_decoding_equals_the_full_forward(params, fwd):
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, CFG.vocab_size, (2, 24)))
    full = fwd(params, tokens)
    step = jax.jit(lambda p, t, c: model.forward(p, t, CFG, cache=c))
    cache = model.init_cache(CFG, batch=2, max_len=32)
    logits, cache = step(params, tokens[:, :16], cache)  # prefill
    pieces = [logits]
    for t in range(16, 24):  # one token at a time
        logits, cache = step(params, tokens[:, t:t + 1], cache)
        pieces.append(logits)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5, rtol=1e-5)
    assert int(cache["index"]) == 24


def test_left_padding_with_valid_mask_matches_unpadded_row(params, fwd):
    row = jnp.asarray(np.random.default_rng(2).integers(0, CFG.vocab_size, (1, 10)))
    padded = jnp.concatenate([jnp.zeros((1, 6), row.dtype), row], axis=1)
    valid = jnp.arange(16)[None] >= 6
    positions = jnp.maximum(jnp.arange(16) - 6, 0)[None]
    cache = model.init_cache(CFG, batch=1, max_len=16)
    logits, _ = model.forward(params, padded, CFG, cache=cache, positions_BT=positions,
                              valid_BT=valid)
    np.testing.assert_allclose(logits[:, 6:], fwd(params, row), atol=1e-5, rtol=1e-5)


def test_bfloat16_compute_stays_close_to_float32(params, fwd):
    cfg16 = model.apply_overrides(CFG, ["compute_dtype=bfloat16"])
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, CFG.vocab_size, (2, 32)))
    ref = fwd(params, tokens)
    out, _ = model.forward(params, tokens, cfg16)
    assert out.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(out - ref))) < 0.05 * float(jnp.max(jnp.abs(ref)))


def test_remat_gives_the_same_gradients(params):
    cfg_r = model.apply_overrides(CFG, ["remat=true"])
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, CFG.vocab_size, (2, 16)))

    def loss(p, cfg):
        logits, _ = model.forward(p, tokens, cfg)
        return jnp.mean(jax.nn.logsumexp(logits, -1))

    g = jax.grad(loss)(params, CFG)
    g_r = jax.grad(loss)(params, cfg_r)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g, g_r)


def test_unrolled_layers_give_the_scans_logits_and_gradients(params):
    # scan_layers=false (the bench config's CPU setting) must be the same model, not a variant.
    cfg_u = model.apply_overrides(CFG, ["scan_layers=false"])
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, CFG.vocab_size, (2, 16)))

    def loss(p, cfg):
        logits, _ = model.forward(p, tokens, cfg)
        return jnp.mean(jax.nn.logsumexp(logits, -1)), logits

    (l_s, logits_s), g_s = jax.value_and_grad(loss, has_aux=True)(params, CFG)
    (l_u, logits_u), g_u = jax.value_and_grad(loss, has_aux=True)(params, cfg_u)
    np.testing.assert_allclose(logits_u, logits_s, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g_u, g_s)
