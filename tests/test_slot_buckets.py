"""The slot engine's buckets (infer/runtime/slots.py): a decode step runs only a power-of-two
bucket of rows covering the busy ones, busy rows are moved down into freed ones, and with
XLA's attention a step reads only a bucket of positions. None of it may change a reply: a
request's greedy tokens are the same alone and while the batch grows and shrinks across bucket
boundaries around it, and after its row is moved, in float32 and int8.

The model is the tiny preset with its weights scaled by 4 (replies vary token to token, as in
tests/test_engine_continuous.py); the float32 reference is a greedy loop over `model.forward`
without a cache, an independent implementation."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model
from infer.runtime import decode_model, engine, slots

NEW = 40


@pytest.fixture(scope="module")
def tiny():
    cfg = dataclasses.replace(model.preset("tiny"), max_seq_len=256)
    params = model.init(cfg, jax.random.key(0))
    return cfg, jax.tree.map(lambda w: w * 4 if w.ndim >= 2 else w, params)


@pytest.fixture(scope="module", params=["float32", "int8"])
def eng(request, tiny):
    cfg, params = tiny
    e = slots.SlotEngine(decode_model.prepare(params, cfg, request.param), cfg, slots=8,
                         max_len=128, chunk=16)
    e.warmup()
    return e


def _prompt(seed: int, n: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, 512, n)]


def _row_of(eng, req) -> int | None:
    return next((b for b, s in enumerate(eng._rows) if s is not None and s.req is req), None)


def test_one_request_runs_the_fewest_rows(eng):
    """Alone, a request pays for one row (int8) or two (float32: XLA:CPU's one-row float32
    product rounds differently from its many-row one), not for the engine's 8 slots."""
    eng.decode_calls.clear()
    slots.generate(eng, [_prompt(1, 20)], max_new_tokens=NEW)
    least = 1 if decode_model.has_int8(eng.params) else 2
    assert set(eng.decode_calls) == {least}


def test_reply_survives_the_batch_growing_and_shrinking_across_buckets(eng):
    """A request decodes alone, then four short requests join (5 busy rows: bucket 8) and leave
    again (back to the smallest bucket) while it runs: its tokens are those it gets alone."""
    prompt = _prompt(1, 37)
    alone = slots.generate(eng, [prompt], max_new_tokens=NEW)[0].token_ids
    before = engine.compilations()
    eng.decode_calls.clear()
    req = eng.submit(slots.Request(prompt, max_new_tokens=NEW))
    for _ in range(3):
        eng.step()
    others = [eng.submit(slots.Request(_prompt(30 + i, 9 + 5 * i), max_new_tokens=6 + 2 * i,
                                       temperature=0.8 * (i % 2), seed=i)) for i in range(4)]
    while not all(o.done.is_set() for o in others):
        eng.step()
    left = len(req.result.token_ids) if req.result else None
    eng.run_until_idle()
    assert left is None  # the others left while the request was still generating
    assert req.result.token_ids == alone
    assert 8 in eng.decode_calls and min(eng.decode_calls) < 4  # across buckets, both ways
    assert engine.compilations() == before


def test_a_moved_row_keeps_its_tokens(eng):
    """A request admitted behind two short ones lands in row 2; when they finish it is moved
    to row 0 (a copy of its cache row) and goes on with the same tokens as alone."""
    prompt = _prompt(2, 26)
    alone = slots.generate(eng, [prompt], max_new_tokens=NEW)[0].token_ids
    short = [eng.submit(slots.Request(_prompt(40 + i, 12), max_new_tokens=3)) for i in range(2)]
    req = eng.submit(slots.Request(prompt, max_new_tokens=NEW))
    rows = []
    while not req.done.is_set():
        eng.step()
        rows.append(_row_of(eng, req))
    assert rows[0] == 2 and 0 in rows and all(s.done.is_set() for s in short)
    assert req.result.token_ids == alone


def test_move_copies_the_cache_row_bit_for_bit(tiny):
    """`_move_row` of a row's span: k, v and the valid flags of the destination are the
    source's, and no other row changes."""
    cfg, params = tiny
    e = slots.SlotEngine(decode_model.prepare(params, cfg, "int8"), cfg, slots=4, max_len=128,
                         chunk=16)
    rng = np.random.default_rng(0)
    e.cache = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape) > 0
                                                 if x.dtype == bool else
                                                 rng.standard_normal(x.shape), x.dtype),
                           e.cache)
    before = jax.tree.map(np.asarray, e.cache)
    args = (e.cache, np.int32(3), np.int32(1))
    after = jax.tree.map(np.asarray, e._executable(slots._move_row, 128, args)(*args))
    for k0, k1 in zip(before["k"], after["k"]):
        np.testing.assert_array_equal(k1[1, :, :, :128], k0[3, :, :, :128])
        np.testing.assert_array_equal(k1[[0, 2, 3]], k0[[0, 2, 3]])
    for v0, v1 in zip(before["v"], after["v"]):
        np.testing.assert_array_equal(v1[1, :, :128], v0[3, :, :128])
        np.testing.assert_array_equal(v1[[0, 2, 3]], v0[[0, 2, 3]])
    np.testing.assert_array_equal(after["valid"][1], before["valid"][3])
    np.testing.assert_array_equal(after["valid"][[0, 2, 3]], before["valid"][[0, 2, 3]])


def _reference_greedy(cfg, params, prompt, n):
    """Greedy tokens from full forwards over the ids so far, padded at the end to one length
    (one compilation: a causal model's logits at a position ignore what comes after it)."""
    ids = list(prompt)
    forward = jax.jit(lambda p, t: model.forward(p, t, cfg)[0])
    for _ in range(n):
        padded = jnp.asarray([ids + [0] * (len(prompt) + n - len(ids))])
        ids.append(int(jnp.argmax(forward(params, padded)[0, len(ids) - 1])))
    return ids[len(prompt):]


def test_xla_attention_reads_a_bucket_of_positions(tiny, monkeypatch):
    """Without the CPU kernel (as on accelerators) a decode step attends over a power-of-two
    bucket of positions: a float32 reply that grows from the 128 bucket into the next one is
    model.forward's greedy reply, alone and beside other rows, with one executable per
    (row bucket, position bucket)."""
    monkeypatch.setattr(decode_model, "USE_ATTEND_KERNEL", False)
    cfg, params = tiny
    e = slots.SlotEngine(decode_model.prepare(params, cfg), cfg, slots=4, max_len=200, chunk=16)
    assert e.span_buckets == [128, 224] and e._decode_spans == e.span_buckets
    before = engine.compilations()
    e.warmup()
    # per span: prefill groups of 1, 2, 4 prompts and a move; decode: rows 2, 4 x spans
    assert engine.compilations() - before == (3 + 1) * 2 + 2 * 2
    prompt = _prompt(3, 100)
    want = _reference_greedy(cfg, params, prompt, NEW)
    assert slots.generate(e, [prompt], max_new_tokens=NEW)[0].token_ids == want
    req = e.submit(slots.Request(prompt, max_new_tokens=NEW))
    others = [e.submit(slots.Request(_prompt(50 + i, 30), max_new_tokens=20)) for i in range(3)]
    e.run_until_idle()
    assert req.result.token_ids == want and all(len(o.result.token_ids) == 20 for o in others)
    assert engine.compilations() - before == 12


def test_a_burst_is_prefilled_together_with_the_replies_of_alone(eng):
    """Four prompts submitted at once get their first chunks in one prefill call: each has its
    first token after one step. Each reply is the one it gets alone (int8 activations are
    rounded per token row, float32 rows do not mix)."""
    prompts = [_prompt(60 + i, 6 + 3 * i) for i in range(4)]  # one chunk each
    alone = [slots.generate(eng, [p], max_new_tokens=NEW)[0].token_ids for p in prompts]
    reqs = [eng.submit(slots.Request(p, max_new_tokens=NEW)) for p in prompts]
    eng.step()
    assert all(len(eng._rows[_row_of(eng, r)].tokens) >= 1 for r in reqs)
    eng.run_until_idle()
    assert [r.result.token_ids for r in reqs] == alone


def test_warmup_up_to_a_length_compiles_what_such_requests_use(tiny):
    """warmup(100) compiles the 128-slot span's prefill groups and move and every decode row
    bucket, nothing of the longer span; a request of that length then compiles nothing."""
    cfg, params = tiny
    e = slots.SlotEngine(decode_model.prepare(params, cfg, "int8"), cfg, slots=4, max_len=200,
                         chunk=16)
    e.warmup(100)
    spans = {b if isinstance(b, int) else b[1] for _, b in e._executables}
    assert spans <= {128, None} and len(e._executables) == 3 + 1 + 3  # rows 1, 2, 4
    before = engine.compilations()
    reqs = [e.submit(slots.Request(_prompt(70 + i, 20), max_new_tokens=60)) for i in range(3)]
    e.run_until_idle()
    assert all(len(r.result.token_ids) == 60 for r in reqs)
    assert engine.compilations() == before
