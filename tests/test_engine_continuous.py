"""Continuous batching (infer/runtime/slots.py): requests join and leave a running batch of
slots, prompts are prefilled in chunks between decode steps, and a request's reply does not
depend on the batch it joins, in float32 and int8.

The model is the tiny preset with its random weights scaled by 4, so greedy replies vary from
token to token (at scale 1 they repeat one token, and equality would prove little). The
float32 reference is an independent greedy loop over `model.forward` without a cache."""

import dataclasses
import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from infer.runtime import decode_model, engine, slots

NEW = 12


@pytest.fixture(scope="module")
def tiny():
    cfg = dataclasses.replace(model.preset("tiny"), max_seq_len=256)
    params = model.init(cfg, jax.random.key(0))
    params = jax.tree.map(lambda w: w * 4 if w.ndim >= 2 else w, params)
    return cfg, params


@pytest.fixture(scope="module", params=["float32", "int8"])
def eng(request, tiny):
    cfg, params = tiny
    prepared = decode_model.prepare(params, cfg, request.param)
    e = slots.SlotEngine(prepared, cfg, slots=4, max_len=128, chunk=16)
    e.warmup()  # every bucket compiled: requests coming and going compile nothing more
    e.weights = request.param
    return e


def _prompt(seed: int, n: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, 512, n)]


def _reference_greedy(cfg, params, prompt, n):
    ids = list(prompt)
    forward = jax.jit(lambda p, t: model.forward(p, t, cfg)[0])
    for _ in range(n):
        ids.append(int(jnp.argmax(forward(params, jnp.asarray([ids]))[0, -1])))
    return ids[len(prompt):]


def _busy(eng, n_steps):
    """Three sampled requests of different lengths (one spans several prefill chunks), run
    for `n_steps` steps."""
    others = [eng.submit(slots.Request(_prompt(10 + i, 5 + 21 * i), max_new_tokens=40,
                                       temperature=0.9, top_p=0.9, seed=i)) for i in range(3)]
    for _ in range(n_steps):
        eng.step()
    return others


def test_float32_greedy_alone_matches_model_forward(tiny):
    cfg, params = tiny
    e = slots.SlotEngine(decode_model.prepare(params, cfg), cfg, slots=4, max_len=128, chunk=16)
    prompt = _prompt(1, 37)
    got = slots.generate(e, [prompt], max_new_tokens=NEW)[0]
    assert got.token_ids == _reference_greedy(cfg, params, prompt, NEW)
    assert got.finish_reason == "length" and got.sampled == [True] * NEW
    assert len(set(got.token_ids)) > 3  # a reply that varies


@pytest.mark.parametrize("join_after", [0, 1, 3, 7])
def test_greedy_reply_is_the_same_alone_and_joined_to_a_busy_batch(eng, join_after):
    prompt = _prompt(1, 37)
    alone = slots.generate(eng, [prompt], max_new_tokens=NEW)[0].token_ids
    before = engine.compilations()
    _busy(eng, join_after)
    joined = eng.submit(slots.Request(prompt, max_new_tokens=NEW))
    eng.run_until_idle()
    assert joined.result.token_ids == alone
    assert engine.compilations() == before  # nothing recompiles as requests come and go


def test_seeded_sampling_is_the_same_alone_and_joined(eng):
    req = dict(max_new_tokens=NEW, temperature=1.0, top_p=0.95, seed=7)
    prompt = _prompt(2, 20)
    alone = slots.generate(eng, [prompt], **req)[0].token_ids
    _busy(eng, 2)
    joined = eng.submit(slots.Request(prompt, **req))
    eng.run_until_idle()
    assert joined.result.token_ids == alone
    other_seed = slots.generate(eng, [prompt], **dict(req, seed=8))[0].token_ids
    assert other_seed != alone


def test_chunked_prefill_interleaves_with_running_rows(eng):
    """A 64-token prompt (4 chunks) joins a running row: the row gets a token at every step
    of the prefill instead of waiting for all of it (one per step while chunks remain: the
    engine runs single decode steps then, so the next chunk is not held back)."""
    running = eng.submit(slots.Request(_prompt(3, 5), max_new_tokens=60))
    for _ in range(3):
        eng.step()
    count = lambda: len(eng._rows[0].tokens)
    n0 = count()
    long = eng.submit(slots.Request(_prompt(4, 64), max_new_tokens=4))
    counts = []
    for _ in range(4):
        eng.step()
        counts.append(count())
    assert counts[:3] == [n0 + 1, n0 + 2, n0 + 3] and counts[3] > counts[2]
    eng.run_until_idle()
    assert running.result.finish_reason == "length" and len(long.result.token_ids) == 4


def test_cancelled_request_frees_its_slot_before_the_next_step(tiny):
    cfg, params = tiny
    e = slots.SlotEngine(decode_model.prepare(params, cfg), cfg, slots=1, max_len=64, chunk=16)
    first = e.submit(slots.Request(_prompt(5, 8), max_new_tokens=40))
    second = e.submit(slots.Request(_prompt(6, 8), max_new_tokens=20))
    for _ in range(3):
        e.step()
    first.cancel()
    e.step()  # frees the slot and admits the second request at once
    assert first.done.is_set() and first.result.finish_reason == "cancelled"
    assert e._rows[0] is not None and e._rows[0].req is second
    e.run_until_idle()
    assert len(second.result.token_ids) == 20 and not e.busy()


def test_stop_ids_stop_strings_and_limits_per_request(eng):
    prompt = _prompt(1, 37)
    alone = slots.generate(eng, [prompt], max_new_tokens=NEW)[0].token_ids
    decode = lambda ids: "".join(f"<{t}>" for t in ids)
    stop_id = slots.Request(prompt, max_new_tokens=NEW, stop_ids=[alone[4]])
    stop_str = slots.Request(prompt, max_new_tokens=NEW, decode_fn=decode,
                             stop_strings=[f"{alone[2]}><{alone[3]}"])
    short = slots.Request(prompt, max_new_tokens=2)
    for r in (stop_id, stop_str, short):
        eng.submit(r)
    eng.run_until_idle()
    first = alone.index(alone[4])
    assert stop_id.result.token_ids == alone[:first] and stop_id.result.finish_reason == "stop"
    assert stop_str.result.token_ids == alone[:4]
    assert stop_str.result.text == decode(alone[:2]) + "<"  # cut where the stop string begins
    assert short.result.token_ids == alone[:2] and short.result.finish_reason == "length"


def test_streamed_tokens_are_the_completion(eng):
    events = []
    req = eng.submit(slots.Request(_prompt(1, 37), max_new_tokens=NEW, on_token=events.append,
                                   decode_fn=lambda ids: " ".join(map(str, ids))))
    eng.run_until_idle()
    assert [e.token_id for e in events if e.token_id >= 0] == req.result.token_ids
    assert "".join(e.text for e in events) == req.result.text


class _Tool:
    """Answers a fixed pair of ids after the pause id."""

    def __init__(self, pause, answer):
        self.pause_ids, self.answer, self.calls = [pause], answer, 0

    def after(self, row, token_ids):
        self.calls += 1
        return self.answer


def test_tool_answers_are_forced_into_the_row_not_sampled(eng):
    prompt = _prompt(1, 37)
    alone = slots.generate(eng, [prompt], max_new_tokens=NEW)[0].token_ids
    i = next(i for i in range(1, NEW) if alone[i] not in alone[:i])  # its first occurrence
    tool = _Tool(alone[i], [5, 6])
    got = slots.generate(eng, [prompt], max_new_tokens=NEW, tools=tool)[0]
    assert tool.calls >= 1
    assert got.token_ids[:i + 3] == alone[:i + 1] + [5, 6]
    assert got.sampled[:i + 3] == [True] * (i + 1) + [False, False]
    assert len(got.token_ids) == NEW


def test_bad_requests_are_refused_before_they_queue(eng):
    with pytest.raises(ValueError, match="room for"):
        eng.submit(slots.Request(_prompt(1, 100), max_new_tokens=40))
    with pytest.raises(ValueError, match="vocabulary"):
        eng.submit(slots.Request([600], max_new_tokens=4))
    with pytest.raises(ValueError, match="decode_fn"):
        eng.submit(slots.Request([1], stop_strings=["x"]))
    assert not eng.busy()


def test_int8_decode_rounds_a_row_the_same_in_any_batch(tiny):
    """engine.generate with int8 weights: one prompt alone and as one of 40 rows (more than
    the 32 at which int8 activations used to switch to integer rounding) gives one reply."""
    cfg, params = tiny
    prepared = decode_model.prepare(params, cfg, "int8")
    prompt = _prompt(1, 16)
    alone = engine.generate(prepared, cfg, [prompt], max_new_tokens=NEW)[0].token_ids
    batch = [_prompt(20 + i, 16) for i in range(39)] + [prompt]
    joined = engine.generate(prepared, cfg, batch, max_new_tokens=NEW)[-1].token_ids
    assert joined == alone


class _Model:
    """What engine.decode_params reads of a loaded model."""

    def __init__(self, config, params):
        self.config, self.params = config, params


def test_a_dropped_model_frees_its_prepared_parameters(tiny):
    cfg, params = tiny
    m = _Model(cfg, jax.tree.map(jnp.copy, params))
    prepared = engine.decode_params(m, "int8")
    assert engine.decode_params(m, "int8") is prepared  # made once while the model lives
    refs = [weakref.ref(x) for x in jax.tree.leaves(prepared)]
    m.params = jax.tree.map(jnp.copy, params)  # new params: prepared again, the old ones go
    assert engine.decode_params(m, "int8") is not prepared
    del prepared
    gc.collect()
    assert all(r() is None for r in refs)
    refs = [weakref.ref(x) for x in jax.tree.leaves(engine.decode_params(m, "float32"))]
    del m
    gc.collect()
    assert all(r() is None for r in refs)


def test_top_k_is_per_request(eng):
    """top_k 1 keeps only the most likely token: sampled at temperature 1 it is the greedy
    reply, beside a row that samples freely."""
    prompt = _prompt(1, 37)
    greedy = slots.generate(eng, [prompt], max_new_tokens=NEW)[0].token_ids
    k1 = eng.submit(slots.Request(prompt, max_new_tokens=NEW, temperature=1.0, top_k=1, seed=3))
    free = eng.submit(slots.Request(prompt, max_new_tokens=NEW, temperature=1.0, seed=3))
    eng.run_until_idle()
    assert k1.result.token_ids == greedy and free.result.token_ids != greedy


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_smollm2_greedy_reply_is_the_same_alone_and_in_a_busy_batch(weights):
    """SmolLM2-135M-Instruct: a chat reply alone, and joined three steps into a batch of five
    other requests (greedy and sampled, one prompt spanning several chunks) in 6 slots (rows
    in the int8 kernel's groups of 3 and its remainder), is the same token for token."""
    import infer
    from tests.test_gguf_smollm2 import PROMPTS

    m = infer.load("smollm2")
    eng = slots.SlotEngine(engine.decode_params(m, weights), m.config, slots=6, max_len=256,
                           chunk=32)
    ask = engine.prompt_ids(m, "Write a haiku about the sea.", chat=True)
    stop = engine.stop_ids_for(m, chat=True)
    alone = slots.generate(eng, [ask], max_new_tokens=24, stop_ids=stop)[0].token_ids
    others = [engine.prompt_ids(m, p) for p in PROMPTS] + [engine.prompt_ids(m, PROMPTS[1] * 6)]
    busy = [eng.submit(slots.Request(p, max_new_tokens=40, temperature=0.7 * (i % 2), seed=i))
            for i, p in enumerate(others)]
    for _ in range(3):
        eng.step()
    joined = eng.submit(slots.Request(ask, max_new_tokens=24, stop_ids=stop))
    eng.run_until_idle()
    assert len(alone) >= 10 and joined.result.token_ids == alone
    assert all(r.result is not None for r in busy)
