"""Continuous batching over a cache of slots: requests join and leave a running batch.

    eng = SlotEngine(decode_model.prepare(params, cfg), cfg, slots=8, max_len=1024)
    req = eng.submit(Request(prompt_ids, max_new_tokens=64, temperature=0.7, seed=1,
                             stop_ids=[eos], decode_fn=enc.decode, on_token=print))
    eng.run_until_idle()          # or eng.step() in a loop of one's own (infer/serve/worker.py)
    req.result.text, req.result.finish_reason

How it works (and why), as llama.cpp's server slots and vLLM's scheduler:
- The KV cache has `slots` rows of `max_len` positions (decode_model's layout, k [B, G, K, S]);
  each row holds one request at its own length. Two executables serve every request: a prefill
  chunk ([1, chunk] tokens into one row) and a decode step ([slots, 1]: one token for every
  row, each written at its own slot). Shapes never change, so requests coming and going never
  compile anything (`engine.compilations()` counts).
- Chunked prefill: a new prompt is split into chunks of `chunk` tokens, the last one ending at
  the prompt's end (the first one padded on the left), and the scheduler runs one chunk, then
  one decode step of the running rows, and so on: a long prompt delays the running rows by one
  chunk per step, never by its whole prefill. Chunks are aligned to multiples of `chunk`
  slots, so one never runs past the row.
- A request's numbers do not depend on the batch: every decode step has the same shape and a
  row's arithmetic never mixes with another's (the int8 kernels round per row and choose their
  path by tokens per row; the attention kernel reads a row's own slots); its random draws use
  its own key, `fold_in(key(seed), n)` for its n-th token. So a greedy (or seeded) reply is the
  same alone as in a busy batch, whichever slot it lands in (tests/test_engine_continuous.py).
- Per request: temperature, top_p, seed, stop ids, stop strings (checked on the host after each
  token), a token limit, tools (`pause_ids` and `after(row, ids)`, as `engine.generate`'s: the
  ids a tool answers are fed in one per step, replacing what was sampled, `sampled=False`).
  `cancel()` frees the request's slot before the next step.
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
        """Stops the request; its slot is free before the engine's next step."""
        self.cancelled.set()


@dataclasses.dataclass
class _Slot:
    """Host state of a request in a row of the cache."""

    req: Request
    chunks: list[np.ndarray]  # prompt chunks still to prefill
    pad: int  # empty slots before the prompt: positions are slot - pad
    order: int  # admission order: the oldest prompt is prefilled first
    length: int = 0  # slots written so far
    tokens: list[int] = dataclasses.field(default_factory=list)
    sampled: list[bool] = dataclasses.field(default_factory=list)
    forced: collections.deque = dataclasses.field(default_factory=collections.deque)
    text: engine._RowText | None = None


# ---------------------------------------------------------------------------------------------
# Device functions (pure; each compiled once per engine shape)


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


def _prefill_chunk(params, cache, slot, tokens_1C, start, pad, sampling_6, *, cfg: ModelConfig):
    """Writes one chunk of a prompt into row `slot` at slots start..start+C-1 (its first `pad`
    columns are padding when start is 0) and samples from its last position."""
    C = tokens_1C.shape[1]
    S = cache["valid"].shape[1]
    row = lambda x: jax.lax.dynamic_index_in_dim(x, slot, 0, keepdims=True)
    # Slots at and past `start` are the previous request's (or this chunk's): never visible.
    valid_1S = row(cache["valid"]) & (jnp.arange(S) < start)
    row_cache = {"k": [row(k) for k in cache["k"]], "v": [row(v) for v in cache["v"]],
                 "valid": valid_1S, "index": start}
    columns_C = start + jnp.arange(C)
    valid_1C = (columns_C >= pad)[None]
    positions_1C = jnp.maximum(columns_C - pad, 0)[None]
    logits_11V, row_cache = decode_model.forward(params, tokens_1C, cfg, row_cache,
                                                 positions_BT=positions_1C, valid_BT=valid_1C,
                                                 last_only=True)
    put = lambda x, r: jax.lax.dynamic_update_index_in_dim(x, r, slot, 0)
    cache = {"k": [put(k, r) for k, r in zip(cache["k"], row_cache["k"])],
             "v": [put(v, r) for v, r in zip(cache["v"], row_cache["v"])],
             "valid": put(cache["valid"], row_cache["valid"]), "index": cache["index"]}
    token_1 = _sample_rows(logits_11V[:, 0], *(x[None] for x in sampling_6))
    return token_1[0], cache


def _decode_step(params, cache, token_B, write_B, position_B, live_B, temperature_B, top_k_B,
                 top_p_B, seed_B, count_B, *, cfg: ModelConfig):
    """One token for every row, written at the row's own slot (`write_B`); rows that are not
    live write nothing visible (their slot is marked invalid and rewritten later)."""
    step_cache = dict(cache, index=write_B)
    logits_B1V, cache = decode_model.forward(params, token_B[:, None], cfg, step_cache,
                                             positions_BT=position_B[:, None],
                                             valid_BT=live_B[:, None])
    token_B = _sample_rows(logits_B1V[:, 0], temperature_B, top_k_B, top_p_B, seed_B,
                           count_B)
    return token_B, dict(cache, index=jnp.zeros_like(write_B))


# ---------------------------------------------------------------------------------------------
# The scheduler


class SlotEngine:
    """A running batch of `slots` rows over `decode_model.prepare`d parameters (see module doc).
    `submit` and `Request.cancel` may be called from any thread; `step` and `run_until_idle`
    run on one."""

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
        self.cache["index"] = jnp.zeros((slots,), jnp.int32)
        self._rows: list[_Slot | None] = [None] * slots
        self._waiting: collections.deque[Request] = collections.deque()
        self._lock = threading.Lock()  # submit (any thread) against _admit (the step)
        self._last_B = np.zeros(slots, np.int32)  # each row's last token (next step's input)
        self._admitted = 0
        self._executables: dict = {}

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
        """One scheduler step: drop cancelled requests, admit waiting ones into free slots, run
        one prefill chunk (the oldest admitted prompt's) and one decode step of the rows that
        are generating."""
        for b, slot in enumerate(self._rows):
            if slot is not None and slot.req.cancelled.is_set():
                self._finish(b, "cancelled")
        self._admit()
        prefilling = [b for b, s in enumerate(self._rows) if s is not None and s.chunks]
        if prefilling:
            self._prefill(min(prefilling, key=lambda b: self._rows[b].order))
        if any(s is not None and not s.chunks for s in self._rows):
            self._decode()

    def run_until_idle(self) -> None:
        while self.busy():
            self.step()

    # -- internals -----------------------------------------------------------------------------

    def _admit(self) -> None:
        with self._lock:
            for b in range(self.slots):
                while self._rows[b] is None and self._waiting:
                    req = self._waiting.popleft()
                    if req.cancelled.is_set():
                        self._done(req, Completion([], "" if req.decode_fn else None,
                                                   "cancelled"))
                        continue
                    self._rows[b] = self._new_slot(req)

    def _new_slot(self, req: Request) -> _Slot:
        ids = np.asarray([int(t) for t in req.prompt_ids], np.int32)
        pad = -len(ids) % self.chunk
        padded = np.concatenate([np.zeros(pad, np.int32), ids])
        self._admitted += 1
        return _Slot(req, list(padded.reshape(-1, self.chunk)), pad, self._admitted,
                     text=engine._RowText(req.decode_fn, req.stop_strings))

    def _sampling(self, rows: Sequence[int]):
        reqs = [self._rows[b].req if self._rows[b] is not None else None for b in rows]
        return (np.asarray([r.temperature if r else 0.0 for r in reqs], np.float32),
                np.asarray([r.top_k if r else 0 for r in reqs], np.int32),
                np.asarray([r.top_p if r else 1.0 for r in reqs], np.float32),
                np.asarray([r.seed % (1 << 31) if r else 0 for r in reqs], np.uint32),
                np.asarray([len(self._rows[b].tokens) if r else 0 for b, r in zip(rows, reqs)],
                           np.int32))

    def _prefill(self, b: int) -> None:
        slot = self._rows[b]
        tokens_1C = slot.chunks.pop(0)[None]
        args = (self.params, self.cache, np.int32(b), tokens_1C, np.int32(slot.length),
                np.int32(slot.pad), tuple(x[0] for x in self._sampling([b])))
        token, self.cache = self._executable(_prefill_chunk, args)(*args)
        slot.length += self.chunk
        if not slot.chunks:
            self._record(b, int(token))

    def _decode(self) -> None:
        live_B = np.array([s is not None and not s.chunks for s in self._rows])
        write_B = np.array([s.length if s is not None else 0 for s in self._rows], np.int32)
        position_B = np.array([max(s.length - s.pad, 0) if s is not None else 0
                               for s in self._rows], np.int32)
        args = (self.params, self.cache, self._last_B.copy(), write_B, position_B, live_B,
                *self._sampling(range(self.slots)))
        token_B, self.cache = self._executable(_decode_step, args)(*args)
        token_B = np.asarray(token_B)
        for b in np.flatnonzero(live_B):
            self._rows[b].length += 1
            self._record(int(b), int(token_B[b]))

    def _executable(self, fn, args):
        """fn compiled for this engine's shapes (once; the engine's shapes never change, so
        later steps skip hashing the arguments' signature)."""
        if fn not in self._executables:
            self._executables[fn] = engine._compiled(fn, {"cfg": self.cfg}, (1,), *args)
        return self._executables[fn]

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
        self._last_B[b] = token
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
