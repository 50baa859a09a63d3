"""The KV-cache engine against the model's uncached forward pass (its correctness test)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from infer.runtime import decode_model
from infer.runtime import engine

PROMPTS = [[5, 17, 42, 9, 250, 3, 77], [1, 2], [200, 100, 50, 25, 12]]


@pytest.fixture(scope="module")
def tiny():
    cfg = dataclasses.replace(model.preset("tiny"), tie_embeddings=False)
    params = model.init(cfg, jax.random.key(0))
    # Sharpen the output so greedy choices are far from ties (a random init is near uniform).
    params = dict(params, unembed=params["unembed"] * 8.0)
    return cfg, params


@pytest.fixture(scope="module")
def greedy(tiny):
    cfg, params = tiny
    return engine.generate(params, cfg, PROMPTS, max_new_tokens=12, output_logits=True)


def _check_against_uncached_forward(cfg, params, generation):
    for prompt, out in zip(PROMPTS, generation):
        assert len(out.token_ids) == 12 and out.finish_reason == "length"
        sequence = prompt + out.token_ids
        full_TV, _ = jax.jit(model.forward, static_argnums=2)(
            params, jnp.asarray([sequence[:-1]]), cfg)
        expected_NV = np.asarray(full_TV[0, len(prompt) - 1:])
        np.testing.assert_allclose(out.logits, expected_NV, rtol=0, atol=1e-5)
        assert out.token_ids == list(np.argmax(expected_NV, axis=-1))


def test_cached_decode_matches_uncached_forward(tiny, greedy):
    """Every generated token's logits, from the cache with left padding in a batch of three,
    equal a full uncached forward over prompt + generated tokens (float32, 1e-5)."""
    cfg, params = tiny
    _check_against_uncached_forward(cfg, params, greedy)


def test_decode_layout_float32_matches_uncached_forward(tiny):
    """The decode-specialised layout (fused projections, [B,G,S,K] cache, last-position
    prefill) computes the same function as model.forward."""
    cfg, params = tiny
    fast = decode_model.prepare(params, cfg, "float32")
    gen = engine.generate(fast, cfg, PROMPTS, max_new_tokens=12, output_logits=True)
    _check_against_uncached_forward(cfg, params, gen)


def test_int8_decode_steps_stay_close_to_float32(tiny):
    """With int8 weights (and int8 activations in prefill) every generated token's logits stay
    within int8 rounding of the exact model's (uncached forward over the same tokens), with the
    same argmax."""
    cfg, params = tiny
    q8 = decode_model.prepare(params, cfg, "int8")
    assert q8["int8"]["layers"][0]["gate_up"]["w"].dtype == jnp.int8
    gen = engine.generate(q8, cfg, PROMPTS, max_new_tokens=12, output_logits=True)
    for prompt, out in zip(PROMPTS, gen):
        sequence = prompt + out.token_ids
        full_TV, _ = jax.jit(model.forward, static_argnums=2)(
            params, jnp.asarray([sequence[:-1]]), cfg)
        exact_NV = np.asarray(full_TV[0, len(prompt) - 1:])
        err = np.abs(out.logits - exact_NV).max()
        # Per-row absmax int8 rounds each weight by <= 0.4% of its row's largest one.
        assert 0 < err < 0.02 * np.abs(exact_NV).max(), err
        assert out.token_ids == list(np.argmax(exact_NV, axis=-1))


def test_int8_decoding_compiles_once(tiny):
    cfg, params = tiny
    q8 = decode_model.prepare(params, cfg, "int8")
    engine.generate(q8, cfg, PROMPTS, max_new_tokens=12)
    before = engine.compilations()
    engine.generate(q8, cfg, [[4, 2], [1], [7, 7, 7]], max_new_tokens=15, temperature=0.5)
    events = []
    engine.generate(q8, cfg, PROMPTS, max_new_tokens=9, stream=events.append)
    assert len(events) == 3 * 9 and engine.compilations() == before


def test_no_recompilation_across_tokens_prompts_and_settings(tiny, greedy):
    cfg, params = tiny
    engine.generate(params, cfg, PROMPTS, max_new_tokens=12, temperature=0.8)  # warm
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: compiles.append(event) if "backend_compile" in event else None)
    before = engine.compilations()
    # Other prompt lengths (same bucket), budgets, temperatures, top_p and seeds; and streaming,
    # which runs the same decode loop one step per call.
    engine.generate(params, cfg, [[1] * 15, [2], [3, 4, 5]], max_new_tokens=16, temperature=0.3,
                    seed=7)
    engine.generate(params, cfg, [[9, 8], [7], [6]], max_new_tokens=5, temperature=0.0)
    events = []
    engine.generate(params, cfg, PROMPTS, max_new_tokens=14, temperature=1.5, seed=1,
                    stream=events.append)
    assert len(events) == 3 * 14
    assert engine.compilations() == before
    assert [e for e in compiles if "backend_compile" in e] == []


def test_each_row_stops_at_its_own_stop_id(tiny, greedy):
    cfg, params = tiny
    row0 = greedy[0].token_ids
    stop = next(t for t in row0[2:] if row0.index(t) >= 2)
    gen = engine.generate(params, cfg, PROMPTS, max_new_tokens=12, stop_ids=[stop])
    for full, out in zip(greedy, gen):
        if stop in full.token_ids:
            k = full.token_ids.index(stop)
            assert out.token_ids == full.token_ids[:k] and out.finish_reason == "stop"
        else:
            assert out.token_ids == full.token_ids and out.finish_reason == "length"
    assert gen[0].token_ids == row0[:row0.index(stop)]


def _decode(ids):
    return "".join(f"<{i}>" for i in ids)


def test_stop_string_cuts_text_and_streaming_matches(tiny, greedy):
    cfg, params = tiny
    row0 = greedy[0].token_ids
    full = _decode(row0)
    stop = f"{row0[4]}><{row0[5]}"  # spans a token boundary
    cut = full.index(stop)
    events = []
    gen = engine.generate(params, cfg, PROMPTS, max_new_tokens=12, decode_fn=_decode,
                          stop_strings=[stop], stream=events.append)
    assert gen[0].text == full[:cut] and gen[0].finish_reason == "stop"
    for row, out in enumerate(gen):  # streamed pieces add up to the final text, row by row
        assert "".join(e.text for e in events if e.row == row) == out.text
        assert [e.token_id for e in events if e.row == row and e.token_id >= 0] == out.token_ids
    # Without streaming the stop string is found between chunks of decode steps.
    quiet = engine.generate(params, cfg, PROMPTS, max_new_tokens=12, decode_fn=_decode,
                            stop_strings=[stop])
    assert [r.text for r in quiet] == [r.text for r in gen]


def test_seeded_sampling_is_reproducible_and_varies_with_seed(tiny):
    cfg, params = tiny
    kw = dict(max_new_tokens=10, temperature=1.0)
    a = engine.generate(params, cfg, PROMPTS, seed=3, **kw)
    b = engine.generate(params, cfg, PROMPTS, seed=3, **kw)
    c = engine.generate(params, cfg, PROMPTS, seed=4, **kw)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]


def test_bad_requests_get_clear_errors(tiny):
    cfg, params = tiny
    with pytest.raises(ValueError, match="context of 128"):
        engine.generate(params, cfg, [[1] * 120], max_new_tokens=20)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.generate(params, cfg, [[1, 999]], max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt 1 has no tokens"):
        engine.generate(params, cfg, [[1], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="top_p"):
        engine.generate(params, cfg, [[1]], max_new_tokens=2, top_p=0.0)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_decode_loop_updates_the_cache_in_place(tiny, dtype):
    """The compiled decode loop writes each step's k and v into the loop-carried cache without
    copying it: a copy of every layer's cache per step made decoding ~25% slower at 640 slots
    (the cost grows with the context)."""
    cfg, params = tiny
    fast = decode_model.prepare(params, cfg, dtype)
    engine.generate(fast, cfg, [[5, 17, 42]], max_new_tokens=12)
    B, G, K, S = 1, cfg.n_kv_heads, cfg.head_dim, 16 + 16  # prompt and new-token buckets
    t = "f16" if dtype == "int8" else "f32"  # int8 weights decode with a float16 cache
    shapes = [f"{t}[{B},{G},{K},{S}]", f"{t}[{B},{G},{S},{K}]"]
    decode_hlos = [exe.as_text() for key, exe in engine._EXECUTABLES.items()
                   if key[0] is engine._decode
                   and dict(key[1])["forward_fn"] is decode_model.forward]
    assert any(shape in hlo for hlo in decode_hlos for shape in shapes)
    for hlo in decode_hlos:
        copies = [line for line in hlo.splitlines()
                  if " copy(" in line and any(s in line for s in shapes)]
        assert not copies, f"{len(copies)} cache copies, e.g. {copies[0].strip()}"
