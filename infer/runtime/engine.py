"""The KV-cache generation engine: one jitted prefill, one jitted on-device decode loop.

    gen = generate(params, cfg, [[1, 2, 3], [4, 5]], max_new_tokens=32, temperature=0.7,
                   stop_ids=[eos], decode_fn=enc.decode)
    gen[0].text, gen[0].token_ids, gen.decode_tokens_per_sec

How it works (and why):
- Prompts are left-padded to a common length (`valid_BT` marks the padding) so every row's last
  prompt token sits in the same column; each row keeps its own rotary positions 0..len-1.
- Shapes are bucketed (prompt length and room for new tokens rounded up to powers of two), and
  compiled executables are cached by shape, so new prompts and new token budgets reuse them:
  there is no compilation per token and usually none per call. `compilations()` counts them.
- The decode loop is a `lax.while_loop` on the device: forward one token per row through the
  preallocated cache, sample, record, stop rows that produced a stop id. Without streaming or
  stop strings the whole generation is one device call (no host round trip per token). Streaming
  runs the same compiled loop one step at a time; stop strings, which need text, are checked on
  the host between chunks of `STOP_STRING_CHUNK` steps.
- Sampling is `infer.runtime.sampling.sample`; temperature and top_p are traced values, so changing them
  does not recompile.
- Tools (`tools=`, e.g. `infer.tools.session.ToolRunner`) run between steps. The loop returns to
  the host after any step in which a row sampled one of the runner's `pause_ids` (such as
  `<|tool_call_end|>`); the runner reads the row and may answer with ids to force. Forced ids are
  written into the row's future output columns (`force_BN`, a fixed-size buffer, so nothing
  recompiles) and go through the same decode step as sampled ones, one per step, replacing what
  was sampled there; they are marked `sampled=False`, never stop a row and never pause it. No
  step runs while the host answers, so every other row sees the same steps and keys as without
  the call: its tokens are unchanged.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import model as model_lib
from infer.runtime import decode_model
from infer.runtime.sampling import SamplingParams, sample

STOP_STRING_CHUNK = 16  # decode steps between host checks for stop strings (when not streaming)
_MIN_BUCKET = 16


@dataclasses.dataclass
class Completion:
    """One row's output. `token_ids` exclude a final stop id; with a stop string they run up to
    the token that completed it, while `text` is cut just before the stop string."""

    token_ids: list[int]
    text: str | None
    finish_reason: str  # "stop" (stop id or stop string) or "length"
    logits: np.ndarray | None = None  # [n, V] float32, with output_logits=True
    # Per token: True where the model sampled it, False where a tool's output was forced in
    # (training losses and RL must not learn those).
    sampled: list[bool] = dataclasses.field(default_factory=list)
    tool_calls: list[dict] = dataclasses.field(default_factory=list)  # filled by tool runners


@dataclasses.dataclass
class Generation:
    """The completions of a batch, indexable like a list, with timings (compilation excluded)."""

    completions: list[Completion]
    prefill_tokens: int
    prefill_seconds: float
    decode_tokens: int
    decode_seconds: float

    def __getitem__(self, i: int) -> Completion:
        return self.completions[i]

    def __len__(self) -> int:
        return len(self.completions)

    def __iter__(self):
        return iter(self.completions)

    @property
    def prefill_tokens_per_sec(self) -> float:
        return self.prefill_tokens / max(self.prefill_seconds, 1e-9)

    @property
    def decode_tokens_per_sec(self) -> float:
        return self.decode_tokens / max(self.decode_seconds, 1e-9)


@dataclasses.dataclass(frozen=True)
class TokenEvent:
    """A token as it is generated: `text` is the new printable text (may be empty while a
    multi-byte character or a possible stop string is incomplete). At the end of a row, text
    still held back (bytes that never became a character) comes with token_id -1."""

    row: int
    token_id: int
    text: str
    sampled: bool = True  # False for a token a tool forced into the row


# ---------------------------------------------------------------------------------------------
# Device functions (pure; compiled once per static configuration and shape bucket)


def _prefill(params, tokens_BP, valid_BP, cache, key, temperature, top_p, stop_S, pause_S,
             max_new, *, cfg, forward_fn, top_k, use_top_p, n_out, output_logits):
    """Runs the prompts through the cache and samples each row's first new token."""
    positions_BP = jnp.maximum(jnp.cumsum(valid_BP, axis=1) - 1, 0)
    # The decode layout can skip projecting all but the last position to the vocabulary, and
    # reading the cache, which is empty here.
    fast = ({"last_only": True, "empty_cache": True} if forward_fn is decode_model.forward
            else {})
    logits_BPV, cache = forward_fn(params, tokens_BP, cfg, cache=cache,
                                   positions_BT=positions_BP, valid_BT=valid_BP, **fast)
    logits_BV = logits_BPV[:, -1]  # left padding: the last column is every row's last token
    token_B = sample(logits_BV, jax.random.fold_in(key, 0), temperature, top_k,
                     top_p if use_top_p else 1.0)
    B = tokens_BP.shape[0]
    state = {
        "cache": cache,
        "token_B": token_B,
        "next_position_B": positions_BP[:, -1] + 1,
        "out_BN": jnp.zeros((B, n_out), jnp.int32).at[:, 0].set(token_B),
        "count_B": jnp.ones((B,), jnp.int32),
        "done_B": jnp.isin(token_B, stop_S) | (max_new <= 1),
        "pause_B": jnp.isin(token_B, pause_S),
        "force_BN": jnp.zeros((B, n_out), jnp.int32),
        "forced_BN": jnp.zeros((B, n_out), bool),
        "step": jnp.ones((), jnp.int32),
        "key": key,
    }
    if output_logits:
        state["logits_BNV"] = jnp.zeros((B, n_out, logits_BV.shape[-1]),
                                        jnp.float32).at[:, 0].set(logits_BV)
    return state


def _decode(params, state, until_step, temperature, top_p, stop_S, pause_S, max_new, *,
            cfg, forward_fn, top_k, use_top_p):
    """Generates one token per live row per step until `until_step`, `max_new`, all done, or
    a row sampling a pause id (the host then runs its tool)."""

    def cond(s):
        return ((s["step"] < jnp.minimum(until_step, max_new)) & ~jnp.all(s["done_B"])
                & ~jnp.any(s["pause_B"]))

    def body(s):
        logits_B1V, cache = forward_fn(params, s["token_B"][:, None], cfg, cache=s["cache"],
                                       positions_BT=s["next_position_B"][:, None])
        logits_BV = logits_B1V[:, 0]
        token_B = sample(logits_BV, jax.random.fold_in(s["key"], s["step"]), temperature, top_k,
                         top_p if use_top_p else 1.0)
        live_B = ~s["done_B"]
        forced_B = s["forced_BN"][:, s["step"]]
        token_B = jnp.where(forced_B, s["force_BN"][:, s["step"]], token_B)
        token_B = jnp.where(live_B, token_B, 0)
        sampled_B = live_B & ~forced_B
        new = dict(s)
        new["cache"] = cache
        new["token_B"] = token_B
        new["next_position_B"] = s["next_position_B"] + 1
        new["out_BN"] = jax.lax.dynamic_update_index_in_dim(s["out_BN"], token_B, s["step"], 1)
        new["count_B"] = s["count_B"] + live_B
        new["done_B"] = (s["done_B"] | (sampled_B & jnp.isin(token_B, stop_S))
                         | (s["step"] + 1 >= max_new))
        new["pause_B"] = sampled_B & jnp.isin(token_B, pause_S)
        new["step"] = s["step"] + 1
        if "logits_BNV" in s:
            new["logits_BNV"] = jax.lax.dynamic_update_index_in_dim(
                s["logits_BNV"], logits_BV, s["step"], 1)
        return new

    return jax.lax.while_loop(cond, body, state)


# ---------------------------------------------------------------------------------------------
# Compilation cache: explicit so timings exclude compilation and tests can count compilations.

_EXECUTABLES: dict = {}
_COMPILATIONS = [0]


def compilations() -> int:
    """How many executables the engine has compiled in this process."""
    return _COMPILATIONS[0]


def _signature(tree) -> tuple:
    """Shapes, dtypes and placements: an executable is compiled for its inputs' shardings too
    (parameters laid out over a training mesh need their own)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((np.shape(x), str(x.dtype), getattr(x, "weak_type", False),
                           getattr(x, "sharding", None)) for x in leaves)


def _compiled(fn, static: dict, donate: tuple, *args):
    """The executable of `fn(*args, **static)` for these argument shapes, compiled once."""
    key = (fn, tuple(sorted(static.items(), key=lambda kv: kv[0])), _signature(args))
    exe = _EXECUTABLES.get(key)
    if exe is None:
        jitted = jax.jit(lambda *a: fn(*a, **static), donate_argnums=donate)
        exe = jitted.lower(*args).compile()
        _EXECUTABLES[key] = exe
        _COMPILATIONS[0] += 1
    return exe


def _bucket(n: int) -> int:
    return max(_MIN_BUCKET, 1 << (max(n, 1) - 1).bit_length())


def _id_set(ids: Sequence[int], bucket) -> np.ndarray:
    """Sorted unique ids padded with -1 to a bucketed length (few shapes, few compilations)."""
    unique = sorted({int(i) for i in ids})
    out = np.full((bucket(len(unique)),), -1, np.int32)
    out[:len(unique)] = unique
    return out


# ---------------------------------------------------------------------------------------------
# Host side: stop strings and streaming text


def _held_back(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that could still grow into a stop string."""
    longest = 0
    for stop in stop_strings:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class _RowText:
    """Incremental text of one row: what may be shown so far and where a stop string begins."""

    def __init__(self, decode_fn, stop_strings):
        self.decode_fn = decode_fn
        self.stop_strings = [s for s in stop_strings if s]
        self.shown = 0
        self.stop_at: int | None = None  # index in text where a stop string starts
        self.stop_token_count: int | None = None

    def update(self, token_ids: list[int]) -> str:
        """New printable text after `token_ids` (all of this row's tokens so far)."""
        if self.decode_fn is None or self.stop_at is not None:
            return ""
        text = self.decode_fn(token_ids)
        hits = [text.find(s) for s in self.stop_strings]
        hits = [h for h in hits if h >= 0]
        if hits:
            self.stop_at = min(hits)
            self.stop_token_count = len(token_ids)
            end = self.stop_at
        else:
            end = len(text) - _held_back(text, self.stop_strings)
            while end > self.shown and text[end - 1] == "\ufffd":  # an incomplete UTF-8 char
                end -= 1
        delta = text[self.shown:max(end, self.shown)]
        self.shown = max(end, self.shown)
        return delta


# ---------------------------------------------------------------------------------------------
# Public API


def _validate(cfg, prompts, max_new_tokens):
    if not prompts:
        raise ValueError("generate: prompt_ids_batch is empty; expected a list of token-id lists")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"generate: prompt {i} has no tokens; give at least one (e.g. BOS)")
        bad = [t for t in p if not 0 <= t < cfg.vocab_size]
        if bad:
            raise ValueError(f"generate: prompt {i} has token ids {bad[:5]} outside the "
                             f"vocabulary [0, {cfg.vocab_size})")
    if max_new_tokens < 1:
        raise ValueError(f"generate: max_new_tokens must be >= 1, got {max_new_tokens}")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > cfg.max_seq_len:
        raise ValueError(
            f"generate: prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds the "
            f"model's context of {cfg.max_seq_len} tokens; shorten the prompt or ask for fewer "
            "new tokens")


def stream_generate(params, cfg, prompt_ids_batch: Sequence[Sequence[int]], *,
                    max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
                    top_p: float = 1.0, seed: int = 0, stop_ids: Sequence[int] = (),
                    stop_strings: Sequence[str] = (), decode_fn: Callable | None = None,
                    stream: bool = True, output_logits: bool = False,
                    forward_fn: Callable | None = None, tools=None) -> Iterator[TokenEvent]:
    """Yields a TokenEvent per generated token (when `stream`); returns the Generation.

    Use `gen = yield from stream_generate(...)` or `generate(..., stream=callback)`.
    `tools`: an object with `pause_ids` (ids after which it wants to look at a row) and
    `after(row, token_ids) -> ids to force into the row next` (empty for none).
    """
    prompts = [[int(t) for t in p] for p in prompt_ids_batch]
    _validate(cfg, prompts, max_new_tokens)
    sp = SamplingParams(float(temperature), int(top_k), float(top_p), int(seed))
    if stop_strings and decode_fn is None:
        raise ValueError("generate: stop_strings need decode_fn (token ids -> text)")
    if forward_fn is None:
        forward_fn = decode_model.forward if decode_model.is_prepared(params) else (
            model_lib.forward)

    B = len(prompts)
    P = _bucket(max(len(p) for p in prompts))
    n_out = _bucket(max_new_tokens)
    tokens_BP = np.zeros((B, P), np.int32)
    valid_BP = np.zeros((B, P), bool)
    for b, p in enumerate(prompts):
        tokens_BP[b, P - len(p):] = p
        valid_BP[b, P - len(p):] = True
    stops = sorted({int(s) for s in stop_ids})
    stop_S = _id_set(stops, lambda n: max(4, -(-n // 4) * 4))
    pause_S = _id_set(tools.pause_ids if tools is not None else (), lambda n: max(4, _bucket(n)))
    if forward_fn is decode_model.forward:
        cache = decode_model.init_cache(cfg, B, P + n_out, decode_model.cache_dtype(params))
    else:
        cache = model_lib.init_cache(cfg, B, P + n_out)
    scalars = (np.float32(sp.temperature), np.float32(sp.top_p), stop_S, pause_S,
               np.int32(max_new_tokens))
    static = dict(cfg=cfg, forward_fn=forward_fn, top_k=sp.top_k, use_top_p=sp.top_p < 1.0)
    key = jax.random.key(sp.seed)

    prefill_args = (params, tokens_BP, valid_BP, cache, key, *scalars)
    prefill = _compiled(_prefill, dict(static, n_out=n_out, output_logits=output_logits), (3,),
                        *prefill_args)
    t0 = time.perf_counter()
    state = prefill(*prefill_args)
    first_B = np.asarray(state["token_B"])  # waits for the prefill
    prefill_seconds = time.perf_counter() - t0

    rows = [_RowText(decode_fn, stop_strings) for _ in range(B)]
    token_lists: list[list[int]] = [[] for _ in range(B)]
    forced_BN = np.zeros((B, n_out), bool)  # the host's copy of which columns are forced
    seen = 1  # steps already delivered to the host
    chunk = 1 if stream else (STOP_STRING_CHUNK if stop_strings else n_out)

    def deliver(out_BN, count_B, upto):
        for b in range(B):
            for j in range(len(token_lists[b]), min(int(count_B[b]), upto)):
                if rows[b].stop_at is not None:
                    break
                token_lists[b].append(int(out_BN[b, j]))
                if token_lists[b][-1] in stops and not forced_BN[b, j]:
                    continue
                text = rows[b].update(token_lists[b])
                if stream:
                    yield TokenEvent(b, token_lists[b][-1], text, not forced_BN[b, j])

    def run_tools(state):
        """Asks the runner about each paused row; writes what it forces into the buffers."""
        pause_B = np.asarray(state["pause_B"])
        if not pause_B.any():
            return state
        done_B = np.asarray(state["done_B"])
        force_BN = np.asarray(state["force_BN"]).copy()
        for b in np.flatnonzero(pause_B):
            if done_B[b] or rows[b].stop_at is not None:  # a call with no room for its answer
                continue
            ids = [int(t) for t in tools.after(int(b), list(token_lists[b]))][:n_out - seen]
            force_BN[b, seen:seen + len(ids)] = ids
            forced_BN[b, seen:seen + len(ids)] = True
        return dict(state, pause_B=jnp.zeros_like(state["pause_B"]),
                    force_BN=jnp.asarray(force_BN), forced_BN=jnp.asarray(forced_BN))

    yield from deliver(first_B[:, None], np.ones(B), 1)
    decode = None
    decode_seconds = 0.0
    while True:
        if tools is not None:
            state = run_tools(state)
        done_B = np.asarray(state["done_B"])
        stopped = np.array([r.stop_at is not None for r in rows])
        if (done_B | stopped).all() or seen >= max_new_tokens:
            break
        if stopped.any() and not (done_B >= stopped).all():
            state["done_B"] = jnp.asarray(done_B | stopped)
        decode_args = (params, state, np.int32(seen + chunk), *scalars)
        decode = decode or _compiled(_decode, static, (1,), *decode_args)
        t0 = time.perf_counter()
        state = decode(*decode_args)
        out_BN, count_B, seen = (np.asarray(state["out_BN"]), np.asarray(state["count_B"]),
                                 int(state["step"]))
        decode_seconds += time.perf_counter() - t0
        yield from deliver(out_BN, count_B, seen)

    logits_BNV = np.asarray(state["logits_BNV"]) if output_logits else None
    completions = []
    for b in range(B):
        ids, row = token_lists[b], rows[b]
        if row.stop_at is not None:
            ids = ids[:row.stop_token_count]
            reason = "stop"
        elif ids and ids[-1] in stops:
            ids = ids[:-1]
            reason = "stop"
        else:
            reason = "length"
        text = None
        if decode_fn is not None:
            text = decode_fn(ids)
            if row.stop_at is not None:
                text = text[:row.stop_at]
        logits = logits_BNV[b, :len(ids)] if logits_BNV is not None else None
        sampled = [not f for f in forced_BN[b, :len(ids)].tolist()]
        completions.append(Completion(ids, text, reason, logits, sampled))
        if stream and text and len(text) > row.shown:  # held back as possibly incomplete
            yield TokenEvent(b, -1, text[row.shown:])
    decode_tokens = sum(max(len(t) - 1, 0) for t in token_lists)
    return Generation(completions, sum(len(p) for p in prompts), prefill_seconds, decode_tokens,
                      decode_seconds)


def generate(params, cfg, prompt_ids_batch: Sequence[Sequence[int]], *,
             stream: Callable[[TokenEvent], None] | None = None, **kwargs) -> Generation:
    """Generates continuations of a batch of prompts (lists of token ids).

    Keyword arguments: max_new_tokens, temperature (0 = greedy), top_k (0 = off), top_p (1 =
    off), seed, stop_ids, stop_strings, decode_fn (token ids -> str; needed for text and stop
    strings), output_logits, forward_fn (default: `model.forward`, or `decode_model.forward` for
    parameters from `decode_model.prepare`, e.g. int8). `stream`, if given, is called with each
    TokenEvent as soon as its token exists.
    """
    events = stream_generate(params, cfg, prompt_ids_batch, stream=stream is not None, **kwargs)
    while True:
        try:
            event = next(events)
        except StopIteration as finished:
            return finished.value
        stream(event)


# ---------------------------------------------------------------------------------------------
# Text in, text out, for a loaded model (`infer.load(...)`: config, params, tokenizer,
# chat_template, bos_id, eos_ids, add_bos).


def prompt_ids(model, prompt, *, chat: bool = False, system: str | None = None) -> list[int]:
    """Token ids for a prompt: plain text (BOS first when the model wants it), or with `chat`
    a user message (or a list of messages) rendered by the model's chat template."""
    from infer.chat import render as chat_render

    enc = model.tokenizer
    if chat:
        return chat_render.prompt_ids(model, chat_messages(prompt, system))
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string without chat=True, got {type(prompt).__name__}")
    ids = enc.encode_ordinary(prompt)  # user text: special-token strings stay plain text
    if getattr(model, "add_bos", False) and model.bos_id is not None:
        ids = [int(model.bos_id)] + ids
    return ids


def chat_messages(prompt, system: str | None = None) -> list[dict]:
    """A conversation from a user message (a string) or a list of messages, system first."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system is not None:
        messages = [{"role": "system", "content": system}] + messages
    return messages


def stop_ids_for(model, *, chat: bool) -> list[int]:
    """End-of-sequence ids, plus the end-of-turn tokens of the chat template when chatting."""
    from infer.chat import template as chat_template

    eos = [int(i) for i in (model.eos_ids or [])]
    if not chat:
        return sorted(set(eos))
    return sorted(set(eos) | set(chat_template.turn_end_ids(model.tokenizer)))


# id(model) -> (weak reference to the model, id of its params, {weights: prepared}). Weak, so
# a model nobody uses any more takes its prepared copies with it (a strong cache kept every
# model loaded in the process, and each of its copies, until exit).
_PREPARED: dict = {}


def decode_params(model, weights: str = "float32"):
    """The model's parameters in the decode layout (`decode_model.prepare`), made once per
    model and weight type: "float32" (same function as model.forward) or "int8". Kept only
    while the model lives, and only for the params it holds now."""
    entry = _PREPARED.get(id(model))
    if entry is None or entry[0]() is not model or entry[1] != id(model.params):
        key = id(model)
        ref = weakref.ref(model, lambda _, key=key: _PREPARED.pop(key, None))
        entry = _PREPARED[key] = (ref, id(model.params), {})
    if weights not in entry[2]:
        entry[2][weights] = decode_model.prepare(model.params, model.config, weights)
    return entry[2][weights]


def generate_text(model, prompts, *, chat: bool = False, system: str | None = None,
                  stop_ids: Sequence[int] | None = None, weights: str = "float32",
                  tools: Sequence[str] = (), **kwargs) -> Generation:
    """Generates from text prompt(s) (a string, or a list for a batch) with a loaded model.

    Stops at EOS (and, with `chat`, at the template's end of turn); `weights` is "float32" or
    "int8" (faster decoding, ~1% weight rounding); `tools` names tools the model may call
    (`infer.tools.TOOLS`; needs `chat`), whose outputs are forced into the completion
    (`sampled` False there) and recorded in `tool_calls`; other keyword arguments are those of
    `generate` (max_new_tokens, temperature, top_k, top_p, seed, stop_strings, stream, ...).
    Returns the Generation; `gen[0].text` is the first completion.
    """
    batch = [prompts] if isinstance(prompts, str) or (
        prompts and isinstance(prompts[0], dict)) else list(prompts)
    if tools and not chat:
        raise ValueError("tools need chat: a tool's output is forced in as a chat message")
    ids = [prompt_ids(model, p, chat=chat, system=system) for p in batch]
    runner = None
    if tools:
        from infer.tools.session import ToolRunner

        runner = ToolRunner(model, [chat_messages(p, system) for p in batch], tools)
    if stop_ids is None:
        stop_ids = stop_ids_for(model, chat=chat)
    kwargs.setdefault("decode_fn", model.tokenizer.decode)
    gen = generate(decode_params(model, weights), model.config, ids, stop_ids=stop_ids,
                   tools=runner, **kwargs)
    if runner is not None:
        for completion, calls in zip(gen, runner.calls):
            completion.tool_calls = calls
    return gen
