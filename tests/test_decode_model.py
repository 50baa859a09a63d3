"""The decode layout's forward (infer/runtime/decode_model.py) against `model.forward` without a cache:
long prompts span several attention query blocks, prefills come in chunks, rows are padded.
Each test runs twice: attention through the C++ kernel (CPUs) and through XLA (accelerators)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from infer.runtime import decode_model

T = 300  # a long prompt: several of the attention kernel's blocks of 16 queries, one partial


@pytest.fixture(autouse=True, params=["kernel", "xla"])
def attention(request, monkeypatch):
    if request.param == "xla":
        monkeypatch.setattr(decode_model, "USE_ATTEND_KERNEL", False)
    return request.param


@pytest.fixture(scope="module")
def setup():
    cfg = dataclasses.replace(model.preset("tiny"), max_seq_len=512, tie_embeddings=False)
    params = model.init(cfg, jax.random.key(1))
    tokens_BT = jax.random.randint(jax.random.key(2), (2, T), 0, cfg.vocab_size)
    exact_BTV, _ = jax.jit(model.forward, static_argnums=2)(params, tokens_BT, cfg)
    return cfg, params, decode_model.prepare(params, cfg, "float32"), tokens_BT, exact_BTV


def _forward(prepared, tokens_BT, cfg, cache, **kw):
    # A new function per call: a cached trace would keep the other attention path.
    return jax.jit(lambda p, t, c: decode_model.forward(p, t, cfg, c, **kw))(
        prepared, tokens_BT, cache)


@pytest.mark.parametrize("empty_cache", [True, False])
def test_prefill_over_several_query_blocks_matches_model(setup, empty_cache):
    cfg, _, prepared, tokens_BT, exact_BTV = setup
    cache = decode_model.init_cache(cfg, 2, T + 8)
    logits_BTV, cache = _forward(prepared, tokens_BT, cfg, cache, empty_cache=empty_cache)
    np.testing.assert_allclose(logits_BTV, exact_BTV, rtol=0, atol=2e-5)
    assert int(cache["index"]) == T and bool(cache["valid"][:, :T].all())


def test_chunked_prefill_then_steps_match_model(setup):
    """A prompt fed as two chunks (the second reads the first's cache) and then token by token
    gives the logits of one uncached pass over the whole sequence."""
    cfg, _, prepared, tokens_BT, exact_BTV = setup
    cache = decode_model.init_cache(cfg, 2, T)
    cut, steps = 150, 3
    first, cache = _forward(prepared, tokens_BT[:, :cut], cfg, cache, empty_cache=True)
    second, cache = _forward(prepared, tokens_BT[:, cut:T - steps], cfg, cache)
    outs = [first, second]
    for t in range(T - steps, T):
        step, cache = _forward(prepared, tokens_BT[:, t:t + 1], cfg, cache)
        outs.append(step)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), exact_BTV, rtol=0, atol=2e-5)


def test_left_padded_row_matches_its_unpadded_forward(setup):
    """Padding slots are invisible: a row padded on the left by 70 slots gives the logits of
    its tokens alone, at the positions the engine gives it (counted from its first token)."""
    cfg, params, prepared, tokens_BT, _ = setup
    pad = 70
    tokens = tokens_BT[:1]
    valid_BT = jnp.arange(T)[None] >= pad
    positions_BT = jnp.maximum(jnp.arange(T) - pad, 0)[None]
    cache = decode_model.init_cache(cfg, 1, T)
    logits_BTV, _ = _forward(prepared, tokens, cfg, cache, positions_BT=positions_BT,
                             valid_BT=valid_BT, empty_cache=True)
    alone_BTV, _ = jax.jit(model.forward, static_argnums=2)(params, tokens[:, pad:], cfg)
    np.testing.assert_allclose(logits_BTV[:, pad:], alone_BTV, rtol=0, atol=2e-5)


def test_float16_cache_stays_within_its_rounding(setup):
    """A float16 cache (int8 decoding's) rounds k and v to 11 significant bits: the logits stay
    within that of the exact ones, and the new tokens' attention still sees every slot."""
    cfg, _, prepared, tokens_BT, exact_BTV = setup
    cache = decode_model.init_cache(cfg, 2, T, jnp.float16)
    prefill, cache = _forward(prepared, tokens_BT[:, :T - 2], cfg, cache, empty_cache=True)
    steps = []
    for t in (T - 2, T - 1):
        step, cache = _forward(prepared, tokens_BT[:, t:t + 1], cfg, cache)
        steps.append(step)
    assert cache["k"][0].dtype == jnp.float16
    got_BTV = np.asarray(jnp.concatenate([prefill, *steps], axis=1))
    err = np.abs(got_BTV - np.asarray(exact_BTV)).max()
    assert 0 < err < 2e-3 * np.abs(np.asarray(exact_BTV)).max(), err
