"""The one sampler: empirical frequencies against the definitions, computed in NumPy."""

import jax
import numpy as np
import pytest

from infer.runtime.sampling import sample

LOGITS = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0], np.float32)
N = 40_000


def _draw(temperature=1.0, top_k=0, top_p=1.0, seed=0):
    logits_BV = np.broadcast_to(LOGITS, (N, LOGITS.size))
    # top_p is traced, as in the engine; None (off) compiles the sort out.
    ids = jax.jit(sample, static_argnums=3)(logits_BV, jax.random.key(seed), temperature, top_k,
                                            top_p if top_p < 1 else None)
    return np.bincount(np.asarray(ids), minlength=LOGITS.size) / N


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _expected(temperature, top_k=0, top_p=1.0):
    p = _softmax(LOGITS / temperature)
    order = np.argsort(-p)
    keep = np.zeros(p.size, bool)
    keep[order[:top_k or p.size]] = True
    p = np.where(keep, p, 0) / p[keep].sum()
    mass = 0.0
    nucleus = np.zeros(p.size, bool)
    for i in np.argsort(-p):  # smallest set of likeliest tokens whose mass reaches top_p
        if mass >= top_p:
            break
        nucleus[i] = True
        mass += p[i]
    p = np.where(nucleus, p, 0)
    return p / p.sum()


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (1.0, 0, 1.0), (0.5, 0, 1.0), (2.0, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.7), (1.5, 5, 0.8)])
def test_frequencies_match_the_definition(temperature, top_k, top_p):
    freq = _draw(temperature, top_k, top_p)
    expected = _expected(temperature, top_k, top_p)
    assert np.all(freq[expected == 0] == 0)  # never outside the top-k / nucleus
    sigma = np.sqrt(expected * (1 - expected) / N)
    assert np.all(np.abs(freq - expected) <= 5 * sigma + 1e-4), (freq, expected)


def test_temperature_zero_is_argmax_per_row():
    logits_BV = np.random.default_rng(0).normal(size=(6, 50)).astype(np.float32)
    temperature_B = np.array([0, 1, 0, 1, 0, 1], np.float32)
    ids = np.asarray(sample(logits_BV, jax.random.key(0), temperature_B))
    greedy = logits_BV.argmax(-1)
    assert np.all(ids[temperature_B == 0] == greedy[temperature_B == 0])


def test_same_seed_same_tokens_other_seed_other_tokens():
    a, b, c = _draw(seed=1), _draw(seed=1), _draw(seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
