"""Continuous batching over a cache of slots: requests join and leave a running batch.

    eng = SlotEngine(decode_model.prepare(params, cfg), cfg, slots=8, max_len=1024)
    eng.warmup()                  # optional: compile every bucket now rather than on first use
    req = eng.submit(Request(prompt_ids, max_new_tokens=64, temperature=0.7, seed=1,
                             stop_ids=[eos], decode_fn=enc.decode, on_token=print))
    eng.run_until_idle()          # or eng.step() in a loop of one's own (infer/serve/worker.py)
    req.result.text, req.result.finish_reason

How it works (and why), as llama.cpp's server slots and vLLM's scheduler:
- The KV cache has `slots` rows of `row_len` positions (decode_model's layout, k [B, G, K, S]);
  each row holds one request at its own length. The busy rows are always the lowest ones:
  when a request leaves, the highest busy row is moved into its place (a copy of the cache
  row's written slots, `_move_row`), and a new request takes the lowest free row.
- Buckets, so one request pays for one row and its own length: a decode step ([rows, 1]: one
  token for each of the first `rows` rows, each written at its own slot) runs the smallest
  power-of-two row bucket that covers the busy rows; a prefill call ([P, chunk]: a chunk of
  each of P prompts) and a row move read and write only a power-of-two bucket of positions
  (`span`, from MIN_SPAN) that covers the rows. With XLA's attention (accelerators) a decode
  step also attends over a span bucket covering the longest row; the CPU kernel needs none (it
  reads each row only up to the last token written, a bound it gets at run time). One
  executable per bucket, compiled on first use or all at once by `warmup()`, never per request
  (`engine.compilations()` counts them).
- Decode calls run several steps on the device when the host has nothing to do between
  them (`_decode_run`, a while loop; up to RUN_TOKENS // rows steps): a row stops there on its
  stop or tool-pause ids or its token limit, and its tokens stream in runs of a few. One step
  per call whenever the host has work between steps: a prompt being prefilled, a request
  waiting for a free row, a tool's answer to feed in. The step is one compiled body whatever
  the run's length, so this changes no number. On SmolLM2 int8, one request in 16 slots,
  a token took 20.4 ms with one step per call and 15.3-16.0 ms with runs (two runs on the
  2-core Xeon, under the lock; engine.generate's on-device loop 14.7 ms in the second).
- Chunked prefill: a new prompt is split into chunks of `chunk` tokens, the last one ending at
  the prompt's end (the first one padded on the left), and the scheduler runs one chunk, then
  one decode step of the running rows, and so on: a long prompt delays the running rows by one
  chunk per step, never by its whole prefill. Chunks are aligned to multiples of `chunk`
  slots, so one never runs past the row. Prompts at the same point (a burst of new requests:
  all at their first chunk) are prefilled together, up to PREFILL_ROWS per call, so the last
  of a burst waits for fewer steps before its first token.
- A request's numbers do not depend on the batch, its row or its bucket: a row's arithmetic
  never mixes with another's (the int8 kernels round per row and choose their path by tokens
  per row; the attention kernel reads a row's own slots), and a moved row is a bitwise copy.
  One exception, measured: XLA:CPU multiplies a single float32 row by a matrix on a
  matrix-vector path that sums in another order than its matrix-matrix path (which gives every
  row the same bits from 2 rows up), so float32 decode steps run at least 2 rows
  (`_min_rows`); the int8 kernel treats one row like any other. Random draws use the
  request's own key, `fold_in(key(seed), n)` for its n-th token. So a greedy (or seeded) reply
  is the same alone as in a busy batch, whichever rows and buckets it passes through
  (tests/test_engine_continuous.py, tests/test_slot_buckets.py).
- Per request: temperature, top_p, seed, stop ids, stop strings (checked on the host after each
  token), a token limit, tools (`pause_ids` and `after(row, ids)`, as `engine.generate`'s: the
  ids a tool answers are fed in one per step, replacing what was sampled, `sampled=False`).
  `cancel()` frees the request's slot before the next step (after the current call's run).
  `Request.row` names the request in its events and tool calls; it is not the cache row,
  which may change.
- Sampling stays `infer.runtime.sampling`'s: greedy rows take its argmax; sampled rows its
  draw with their own key (one `sample` call per row, vmapped).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from infer.runtime import decode_model, engine, sampling
from infer.runtime.engine import Completion, TokenEvent
from model.config import ModelConfig


@dataclasses.dataclass(eq=False)
class Request:
    """One generation request. `on_token(TokenEvent)` streams its tokens and `on_done(Completion)`
    ends it (both on the engine's thread); `result` is its Completion once `done` is set. `row`
    is passed to `tools.after` and in every TokenEvent. `top_k` 0 and `top_p` 1 are off."""

    prompt_ids: Sequence[int]
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop_ids: Sequence[int] = ()
    stop_strings: Sequence[str] = ()
    decode_fn: Callable | None = None
    tools: object | None = None
    row: int = 0
    on_token: Callable[[TokenEvent], None] | None = None
    on_done: Callable[[Completion], None] | None = None
    result: Completion | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stops the request; its slot is free before the engine's next step (a step's
        decode call may have run a few tokens further)."""
        self.cancelled.set()


@dataclasses.dataclass
class _Slot:
    """Host state of a request in a row of the cache (the numbers every step sends to the
    device live in SlotEngine._host instead, one array per field, indexed by row)."""

    req: Request
    chunks: list[np.ndarray]  # prompt chunks still to prefill
    order: int  # admission order: the oldest prompt is prefilled first
    tokens: list[int] = dataclasses.field(default_factory=list)
    sampled: list[bool] = dataclasses.field(default_factory=list)
    forced: collections.deque = dataclasses.field(default_factory=collections.deque)
    text: engine._RowText | None = None


MIN_SPAN = 128  # the smallest position bucket (the attention kernel's block of slots)
RUN_TOKENS = 8  # tokens (steps x rows) a decode call may make before the host looks again
PREFILL_ROWS = 4  # prompts whose next chunks one prefill call may take together
HALT_IDS = 8  # stop and pause ids per row the device checks (more: one step per call)


def _buckets(smallest: int, largest: int) -> list[int]:
    """Powers of two times `smallest` below `largest`, then `largest` itself."""
    out = []
    while smallest < largest:
        out.append(smallest)
        smallest *= 2
    return out + [largest]


def _fit(buckets: Sequence[int], n: int) -> int:
    """The smallest bucket that holds n."""
    return next(b for b in buckets if b >= n)


# ---------------------------------------------------------------------------------------------
# Device functions (pure; each compiled once per bucket)


def _sample_rows(logits_BV, temperature_B, top_k_B, top_p_B, seed_B, count_B):
    """Each row's token from its own key, fold_in(key(seed), count), and its own settings.
    top_k is a value per row here (`sampling.sample` takes one static k): logits below a row's
    k-th largest are dropped before `sample` applies its temperature and top_p."""
    greedy_B = sampling._argmax(logits_BV)

    def one(logits_V, t, k, p, seed, count):
        kth = -jnp.sort(-logits_V)[jnp.clip(k, 1, logits_V.shape[0]) - 1]
        logits_V = jnp.where((k > 0) & (logits_V < kth), -jnp.inf, logits_V)
        key = jax.random.fold_in(jax.random.key(seed), count)
        return sampling.sample(logits_V[None], key, t, 0, p)[0]

    return jax.lax.cond(jnp.all(temperature_B == 0), lambda: greedy_B,
                        lambda: jax.vmap(one)(logits_BV, temperature_B, top_k_B, top_p_B,
                                              seed_B, count_B))


def _row_slots(cache, b, span: int):
    """Slots [0, span) of cache row b: ([k [1, G, K, span]], [v [1, G, span, K]]) per layer."""
    k = [jax.lax.dynamic_slice(x, (b, 0, 0, 0), (1, *x.shape[1:3], span)) for x in cache["k"]]
    v = [jax.lax.dynamic_slice(x, (b, 0, 0, 0), (1, x.shape[1], span, x.shape[3]))
         for x in cache["v"]]
    return k, v


def _put_row_slots(cache, b, k, v, valid_S):
    """Writes `_row_slots`-shaped k and v into row b from slot 0, and its whole valid row."""
    put = lambda x, r: jax.lax.dynamic_update_slice(x, r.astype(x.dtype), (b, 0, 0, 0))
    return {"k": [put(x, r) for x, r in zip(cache["k"], k)],
            "v": [put(x, r) for x, r in zip(cache["v"], v)],
            "valid": jax.lax.dynamic_update_index_in_dim(cache["valid"], valid_S, b, 0)}


def _prefill_chunks(params, cache, rows_P, tokens_PC, start, pad_P, temperature_P, top_k_P,
                    top_p_P, seed_P, count_P, *, cfg: ModelConfig, span: int):
    """Writes one chunk of each of P prompts, into rows `rows_P`, all at slots
    start..start+C-1 (a row's first pad_P columns are padding when start is 0; start + C <=
    span), and samples from each one's last position. Only the rows' first `span` slots are
    read and written. Several prompts in one call: a burst of requests reaches its first
    tokens sooner than with one prompt's chunk per step."""
    P, C = tokens_PC.shape
    S = cache["valid"].shape[1]
    k = [x[rows_P, :, :, :span] for x in cache["k"]]
    v = [x[rows_P, :, :span] for x in cache["v"]]
    # Slots at and past `start` are the previous request's (or this chunk's): never visible.
    valid_PS = cache["valid"][rows_P, :span] & (jnp.arange(span) < start)
    columns_1C = (start + jnp.arange(C))[None]
    logits_P1V, new = decode_model.forward(
        params, tokens_PC, cfg, {"k": k, "v": v, "valid": valid_PS, "index": start},
        positions_BT=jnp.maximum(columns_1C - pad_P[:, None], 0),
        valid_BT=columns_1C >= pad_P[:, None], last_only=True)
    valid_PS = jnp.zeros((P, S), bool).at[:, :span].set(new["valid"])  # none past the span
    cache = {"k": [x.at[rows_P, :, :, :span].set(r.astype(x.dtype))
                   for x, r in zip(cache["k"], new["k"])],
             "v": [x.at[rows_P, :, :span].set(r.astype(x.dtype))
                   for x, r in zip(cache["v"], new["v"])],
             "valid": cache["valid"].at[rows_P].set(valid_PS)}
    token_P = _sample_rows(logits_P1V[:, 0], temperature_P, top_k_P, top_p_P, seed_P, count_P)
    return token_P, cache


def _decode_run(params, cache, token_B, write_B, position_B, live_B, temperature_B, top_k_B,
                top_p_B, seed_B, count_B, left_B, halt_BN, until, *, cfg: ModelConfig,
                span: int | None, steps: int):
    """Up to `until` (<= `steps`) decode steps of the cache's first B rows, on the device: each
    step takes one token per live row, writes it at the row's own slot (`write_B`), and samples
    the next. A row stops being live after sampling one of its `halt_BN` ids (its stop ids and
    its tools' pause ids, -1 padded) or its `left_B` last token. Rows that are not live write
    nothing visible (their slot is marked invalid and rewritten later); rows past B are
    untouched. Returns the sampled tokens [steps, B] (the first n_B[b] of row b are its own),
    n_B and the cache. The step is the same whatever `until` is, so a reply's numbers do not
    depend on how many steps each call ran."""
    B = token_B.shape[0]

    def step(state):
        i, cache, token_B, write_B, position_B, live_B, count_B, left_B, out_KB, n_B = state
        logits_B1V, cache = decode_model.forward(params, token_B[:, None], cfg,
                                                 dict(cache, index=write_B),
                                                 positions_BT=position_B[:, None],
                                                 valid_BT=live_B[:, None], span=span)
        new_B = _sample_rows(logits_B1V[:, 0], temperature_B, top_k_B, top_p_B, seed_B,
                             count_B)
        out_KB = jax.lax.dynamic_update_index_in_dim(out_KB, new_B, i, 0)
        cache = {"k": cache["k"], "v": cache["v"], "valid": cache["valid"]}
        halted_B = jnp.any(new_B[:, None] == halt_BN, axis=1) | (left_B <= 1)
        step_B = live_B.astype(jnp.int32)
        return (i + 1, cache, jnp.where(live_B, new_B, token_B), write_B + step_B,
                position_B + step_B, live_B & ~halted_B, count_B + step_B, left_B - step_B,
                out_KB, n_B + step_B)

    def more(state):
        return (state[0] < until) & jnp.any(state[5])

    state = (jnp.int32(0), cache, token_B, write_B, position_B, live_B, count_B, left_B,
             jnp.zeros((steps, B), jnp.int32), jnp.zeros((B,), jnp.int32))
    state = jax.lax.while_loop(more, step, state)
    return state[8], state[9], state[1]


def _move_row(cache, src, dst, *, span: int):
    """Copies row src's first `span` slots (all it has written) and valid row into row dst."""
    k, v = _row_slots(cache, src, span)
    return _put_row_slots(cache, dst, k, v, cache["valid"][src])


# ---------------------------------------------------------------------------------------------
# The scheduler

# Per-row numbers sent to the device at every step, kept in one array each (no Python list
# rebuilt per step): slots written, padding before the prompt, last token, generating or not,
# tokens so far and still allowed, the request's sampling settings, whether its halting ids
# fit the device's HALT_IDS (and, beside these, the ids: "halt" [slots, HALT_IDS]).
_HOST_FIELDS = {"length": np.int32, "pad": np.int32, "last": np.int32, "live": bool,
                "count": np.int32, "left": np.int32, "temperature": np.float32,
                "top_k": np.int32, "top_p": np.float32, "seed": np.uint32, "fits": bool}


class SlotEngine:
    """A running batch of `slots` rows over `decode_model.prepare`d parameters (see module doc).
    `submit` and `Request.cancel` may be called from any thread; `step`, `run_until_idle` and
    `warmup` run on one."""

    def __init__(self, params, cfg: ModelConfig, *, slots: int = 8, max_len: int | None = None,
                 chunk: int = 64):
        if not decode_model.is_prepared(params):
            raise ValueError("SlotEngine needs parameters from decode_model.prepare(params, cfg, "
                             "'float32' or 'int8') (e.g. engine.decode_params(model))")
        if slots < 1 or chunk < 1:
            raise ValueError(f"slots and chunk must be >= 1, got {slots} and {chunk}")
        self.params, self.cfg, self.slots, self.chunk = params, cfg, slots, chunk
        # A request may use `max_len` positions (prompt + reply); its row has one chunk more,
        # in whole chunks, for the padding before its prompt (a chunk never runs past a row).
        self.max_len = min(max_len or cfg.max_seq_len, cfg.max_seq_len)
        self.row_len = -(-self.max_len // chunk) * chunk + chunk
        self.cache = decode_model.init_cache(cfg, slots, self.row_len,
                                             decode_model.cache_dtype(params))
        del self.cache["index"]  # each executable sets its own
        self.row_buckets = _buckets(min(self._min_rows(), slots), slots)
        self.span_buckets = _buckets(min(MIN_SPAN, self.row_len), self.row_len)
        self.prefill_buckets = _buckets(1, min(PREFILL_ROWS, slots))
        # With the CPU kernel a decode step reads each row up to its last token whatever the
        # cache's length, so its executables need no position bucket (None: the whole row).
        self._decode_spans = [None] if decode_model._use_attend_kernel() else self.span_buckets
        self._rows: list[_Slot | None] = [None] * slots
        self._host = {name: np.zeros(slots, dtype) for name, dtype in _HOST_FIELDS.items()}
        self._host["halt"] = np.full((slots, HALT_IDS), -1, np.int32)  # see _decode_run
        self._waiting: collections.deque[Request] = collections.deque()
        self._lock = threading.Lock()  # submit (any thread) against _admit (the step)
        self._admitted = 0
        self._executables: dict = {}
        self.decode_calls: collections.Counter = collections.Counter()  # by row bucket

    def _min_rows(self) -> int:
        """The fewest rows a decode step runs: 2 for float32 matrices (XLA:CPU's one-row
        product rounds differently, see the module doc), 1 for the int8 kernels."""
        return 1 if decode_model.has_int8(self.params) else 2

    # -- requests ------------------------------------------------------------------------------

    def check(self, req: Request) -> None:
        """Raises ValueError naming what does not fit (before the request is queued)."""
        n = len(req.prompt_ids)
        if n == 0:
            raise ValueError("the prompt has no tokens; give at least one (e.g. BOS)")
        bad = [int(t) for t in req.prompt_ids if not 0 <= int(t) < self.cfg.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary "
                             f"[0, {self.cfg.vocab_size})")
        if req.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {req.max_new_tokens}")
        sampling.SamplingParams(float(req.temperature), int(req.top_k), float(req.top_p),
                                int(req.seed))
        if req.stop_strings and req.decode_fn is None:
            raise ValueError("stop_strings need decode_fn (token ids -> text)")
        if n + req.max_new_tokens > self.max_len:
            raise ValueError(f"a prompt of {n} tokens leaves room for {max(self.max_len - n, 0)} "
                             f"new tokens in a slot of {self.max_len}; max_new_tokens is "
                             f"{req.max_new_tokens}")

    def submit(self, req: Request) -> Request:
        """Queues a request (checked first); it joins the batch at the next free slot."""
        self.check(req)
        with self._lock:
            self._waiting.append(req)
        return req

    def busy(self) -> bool:
        """Whether any request is waiting or running."""
        return bool(self._waiting) or any(r is not None for r in self._rows)

    def running(self) -> int:
        return sum(r is not None for r in self._rows)

    # -- the loop ------------------------------------------------------------------------------

    def step(self) -> None:
        """One scheduler step: drop cancelled requests, move the busy rows down into the
        lowest ones, admit waiting requests into free slots, run one prefill call (the oldest
        admitted prompt's next chunk, with those of prompts at the same point) and one decode
        call of the rows that are generating."""
        for b, slot in enumerate(self._rows):
            if slot is not None and slot.req.cancelled.is_set():
                self._finish(b, "cancelled")
        self._compact()
        self._admit()
        self._prefill()
        if self._host["live"].any():
            self._decode()

    def run_until_idle(self) -> None:
        while self.busy():
            self.step()

    def warmup(self, positions: int | None = None) -> None:
        """Compiles the executables that requests of up to `positions` slots (padded prompt
        and reply; default: a whole row) may use: every decode row bucket, and each prefill
        group and move of those spans. Requests that fit then never wait for a compilation."""
        top = _fit(self.span_buckets, min(positions or self.row_len, self.row_len))
        for span in (s for s in self.span_buckets if s <= top):
            for n in self.prefill_buckets:
                self._executable(_prefill_chunks, (n, span), self._prefill_args([0] * n))
            self._executable(_move_row, span, (self.cache, np.int32(0), np.int32(0)))
        for rows in self.row_buckets:
            for span in self._decode_spans:
                if span is None or span <= top:
                    self._executable(_decode_run, (rows, span), self._decode_args(rows))

    # -- internals -----------------------------------------------------------------------------

    def _compact(self) -> None:
        """Moves the highest busy rows into the free rows below them: the busy rows are then
        rows 0..n-1, and a decode step runs the smallest bucket of rows that covers them."""
        busy = [b for b, s in enumerate(self._rows) if s is not None]
        holes = [b for b in range(len(busy)) if self._rows[b] is None]
        for dst, src in zip(holes, reversed(busy)):
            length = int(self._host["length"][src])
            if length:  # a row with nothing written yet has nothing to copy
                span = _fit(self.span_buckets, length)
                args = (self.cache, np.int32(src), np.int32(dst))
                self.cache = self._executable(_move_row, span, args)(*args)
            self._rows[dst], self._rows[src] = self._rows[src], None
            for a in self._host.values():
                a[dst], a[src] = a[src], 0

    def _admit(self) -> None:
        with self._lock:
            for b in range(self.slots):
                while self._rows[b] is None and self._waiting:
                    req = self._waiting.popleft()
                    if req.cancelled.is_set():
                        self._done(req, Completion([], "" if req.decode_fn else None,
                                                   "cancelled"))
                        continue
                    self._rows[b] = self._new_slot(b, req)

    def _new_slot(self, b: int, req: Request) -> _Slot:
        ids = np.asarray([int(t) for t in req.prompt_ids], np.int32)
        pad = -len(ids) % self.chunk
        padded = np.concatenate([np.zeros(pad, np.int32), ids])
        self._admitted += 1
        h = self._host
        h["length"][b], h["pad"][b], h["last"][b], h["live"][b], h["count"][b] = 0, pad, 0, 0, 0
        h["temperature"][b], h["top_k"][b], h["top_p"][b] = req.temperature, req.top_k, req.top_p
        h["seed"][b] = req.seed % (1 << 31)
        halt = sorted({int(t) for t in req.stop_ids}
                      | {int(t) for t in (req.tools.pause_ids if req.tools else ())})
        h["halt"][b] = -1
        h["halt"][b, :len(halt)] = halt[:HALT_IDS]
        h["fits"][b] = len(halt) <= HALT_IDS
        return _Slot(req, list(padded.reshape(-1, self.chunk)), self._admitted,
                     text=engine._RowText(req.decode_fn, req.stop_strings))

    def _settings(self, rows) -> tuple:
        h = self._host
        return tuple(h[name][rows].copy()
                     for name in ("temperature", "top_k", "top_p", "seed", "count"))

    def _prefill_args(self, rows: list[int], tokens_PC=None) -> tuple:
        if tokens_PC is None:
            tokens_PC = np.zeros((len(rows), self.chunk), np.int32)
        h = self._host
        return (self.params, self.cache, np.asarray(rows, np.int32), tokens_PC,
                np.int32(h["length"][rows[0]]), h["pad"][rows], *self._settings(rows))

    def _prefill(self) -> None:
        """The next chunk of the oldest admitted prompt still prefilling, together with those
        of the next oldest at the same point of theirs (the same slots), in a power-of-two
        group of at most PREFILL_ROWS."""
        h = self._host
        prefilling = sorted((b for b, s in enumerate(self._rows) if s is not None and s.chunks),
                            key=lambda b: self._rows[b].order)
        if not prefilling:
            return
        start = int(h["length"][prefilling[0]])
        rows = [b for b in prefilling if h["length"][b] == start]
        rows = rows[:max(n for n in self.prefill_buckets if n <= len(rows))]
        tokens_PC = np.stack([self._rows[b].chunks.pop(0) for b in rows])
        args = self._prefill_args(rows, tokens_PC)
        span = _fit(self.span_buckets, start + self.chunk)
        token_P, self.cache = self._executable(_prefill_chunks, (len(rows), span), args)(*args)
        token_P = np.asarray(token_P)
        h["length"][rows] += self.chunk
        for b, token in zip(rows, token_P):
            if not self._rows[b].chunks:
                h["live"][b] = True
                self._record(b, int(token))

    def _decode_args(self, rows: int, until: int = 1) -> tuple:
        h, r = self._host, slice(0, rows)
        position_B = np.maximum(h["length"][r] - h["pad"][r], 0)
        return (self.params, self.cache, h["last"][r].copy(), h["length"][r].copy(), position_B,
                h["live"][r].copy(), *self._settings(r), h["left"][r].copy(),
                h["halt"][r].copy(), np.int32(until))

    def _run_steps(self, rows: int) -> int:
        """Decode steps the next call may run before the host looks again: RUN_TOKENS // rows
        (a row's tokens then stream in runs of a few, ~0.1 s), or one when the host has work
        between steps: a prompt to prefill, a waiting request and a free row, a tool's
        answer to feed in, or more halting ids than the device checks."""
        h = self._host
        if ((self._waiting and None in self._rows)
                or any(s is not None and (s.chunks or s.forced) for s in self._rows[:rows])
                or not h["fits"][:rows][h["live"][:rows]].all()):
            return 1
        return max(1, RUN_TOKENS // rows)

    def _decode(self) -> None:
        h = self._host
        rows = _fit(self.row_buckets, 1 + max(b for b, s in enumerate(self._rows)
                                              if s is not None))
        until = self._run_steps(rows)
        span = self._decode_spans[0] if len(self._decode_spans) == 1 else _fit(
            self._decode_spans, min(self.row_len, int(h["length"][:rows].max()) + until))
        args = self._decode_args(rows, until)
        self.decode_calls[rows] += 1
        out_KB, n_B, self.cache = self._executable(_decode_run, (rows, span), args)(*args)
        out_KB, n_B = np.asarray(out_KB), np.asarray(n_B)
        for b in np.flatnonzero(n_B):
            slot = self._rows[b]
            h["length"][b] += n_B[b]
            for token in out_KB[:n_B[b], b]:
                if self._rows[b] is not slot:  # finished by a stop string: the rest is void
                    break
                self._record(int(b), int(token))

    def _executable(self, fn, bucket, args):
        """fn compiled for this bucket (once; later steps skip hashing the arguments'
        signature). `bucket` is the span (move) or (rows, span) (prefill, decode)."""
        key = (fn, bucket)
        if key not in self._executables:
            static = {"cfg": self.cfg} if fn is not _move_row else {}
            static["span"] = bucket if fn is _move_row else bucket[1]
            if fn is _decode_run:
                static["steps"] = max(1, RUN_TOKENS // bucket[0])
            donate = (0,) if fn is _move_row else (1,)
            self._executables[key] = engine._compiled(fn, static, donate, *args)
        return self._executables[key]

    def _record(self, b: int, token: int) -> None:
        """Appends row b's new token (or the tool's forced one), streams it, and finishes the
        request on a stop id, a stop string, its token limit or a full row."""
        slot = self._rows[b]
        req = slot.req
        sampled = not slot.forced
        if not sampled:
            token = slot.forced.popleft()
        slot.tokens.append(token)
        slot.sampled.append(sampled)
        self._host["last"][b] = token
        self._host["count"][b] = len(slot.tokens)
        self._host["left"][b] = req.max_new_tokens - len(slot.tokens)
        stopped = sampled and token in req.stop_ids
        if not stopped:
            text = slot.text.update(slot.tokens)
            if req.on_token is not None:
                req.on_token(TokenEvent(req.row, token, text, sampled))
        if stopped or slot.text.stop_at is not None:
            return self._finish(b, "stop")
        if len(slot.tokens) >= req.max_new_tokens:
            return self._finish(b, "length")
        if sampled and req.tools is not None and token in req.tools.pause_ids:
            room = req.max_new_tokens - len(slot.tokens)
            slot.forced.extend(int(t) for t in req.tools.after(req.row, list(slot.tokens))[:room])

    def _finish(self, b: int, reason: str) -> None:
        slot, self._rows[b] = self._rows[b], None
        for a in self._host.values():
            a[b] = 0
        ids, row = slot.tokens, slot.text
        sampled = slot.sampled
        if row.stop_at is not None:
            ids, sampled = ids[:row.stop_token_count], sampled[:row.stop_token_count]
        elif reason == "stop":
            ids, sampled = ids[:-1], sampled[:-1]
        text = None
        if slot.req.decode_fn is not None:
            text = slot.req.decode_fn(ids)
            if row.stop_at is not None:
                text = text[:row.stop_at]
            if slot.req.on_token is not None and len(text) > row.shown and reason != "cancelled":
                slot.req.on_token(TokenEvent(slot.req.row, -1, text[row.shown:]))
        self._done(slot.req, Completion(list(ids), text, reason, None, list(sampled)))

    @staticmethod
    def _done(req: Request, completion: Completion) -> None:
        req.result = completion
        req.done.set()
        if req.on_done is not None:
            req.on_done(completion)


def generate(eng: SlotEngine, prompt_ids_batch: Sequence[Sequence[int]], **kwargs
             ) -> list[Completion]:
    """Runs a batch of prompts through the engine (each a Request with `kwargs`) to the end."""
    reqs = [eng.submit(Request(list(p), row=i, **kwargs)) for i, p in enumerate(prompt_ids_batch)]
    eng.run_until_idle()
    return [r.result for r in reqs]
