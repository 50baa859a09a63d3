"""The engine thread: requests wait in a bounded queue and join each model's running batch.

Each model has a `slots.SlotEngine` (continuous batching over a cache of `max_batch` slots):
a request takes a free slot as soon as there is one, is prefilled in chunks between the
running rows' decode steps, and leaves when it stops, so concurrent requests share one batch
whatever their sampling settings, limits or stop strings (a request's reply does not depend on
the batch it joins). The one thread steps every engine that has work, one step each in turn.

Results travel back to the server's event loop through each job's asyncio queue as
("delta", text), ("done", Result) or ("error", APIError). A job whose client went away is
dropped if it is still waiting, and frees its slot before the next step if it is running (its
`cancelled` event is the engine request's).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import threading

from infer.runtime import engine, slots
from infer.serve.errors import APIError
from infer.serve.spec import Spec

MAX_LEN = 2048  # slots per row (prompt + reply) of each model's cache, at most its context
CHUNK = 64  # prompt tokens prefilled per step between the running rows' decode steps
_log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More requests are waiting than the server accepts; the client should retry later."""


@dataclasses.dataclass(frozen=True)
class Result:
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int


@dataclasses.dataclass
class Job:
    """A request on its way through the engine thread."""

    spec: Spec
    stream: bool
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    finished: bool = False  # set on the engine thread when its reply is complete

    def emit(self, kind: str, value) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled.set()


class Worker:
    """Owns the models' engines and the one thread that runs them."""

    def __init__(self, models: dict, *, weights: str = "float32", max_queue: int = 64,
                 max_batch: int = 16, max_len: int = MAX_LEN, warmup: int = 0):
        if max_queue < 1 or max_batch < 1:
            raise ValueError(f"max_queue and max_batch must be >= 1, got {max_queue}, "
                             f"{max_batch}")
        self.models = dict(models)
        self.weights, self.max_batch, self.max_len = weights, max_batch, max_len
        # Positions (prompt + reply) up to which each engine compiles its executables when the
        # thread starts, before serving (0: none; each compiles when a request first needs it,
        # and that request and the batch wait a few seconds).
        self.warmup = warmup
        self.engines = {name: self._engine(name) for name in self.models}
        self.max_queue = max_queue
        self._pending: collections.deque[Job] = collections.deque()
        self._running: dict[str, list[Job]] = {name: [] for name in self.models}
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="infer-serve-engine",
                                        daemon=True)

    def _engine(self, name: str) -> slots.SlotEngine:
        m = self.models[name]
        return slots.SlotEngine(engine.decode_params(m, self.weights), m.config,
                                slots=self.max_batch, max_len=self.max_len, chunk=CHUNK)

    def start(self) -> Worker:
        self._thread.start()
        return self

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join()

    def queued(self) -> int:
        """How many requests wait for a slot (not counting those whose client has gone)."""
        with self._wake:
            return sum(not job.cancelled.is_set() for job in self._pending)

    def submit(self, job: Job) -> None:
        """Queues the job, or raises QueueFull when `max_queue` jobs are already waiting, or a
        400 when its prompt and token limit do not fit in a slot."""
        try:
            self.engines[job.spec.model].check(self._request(job))
        except ValueError as e:
            raise APIError(400, str(e), param="max_tokens",
                           code="context_length_exceeded") from None
        with self._wake:
            self._pending = collections.deque(j for j in self._pending
                                              if not j.cancelled.is_set())
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting")
            self._pending.append(job)
            self._wake.notify()

    # -- the thread ------------------------------------------------------------------------------

    def _serve(self) -> None:
        if self.warmup:
            for eng in self.engines.values():
                eng.warmup(self.warmup)
        while True:
            with self._wake:
                while not self._closed and not self._pending and not self._busy():
                    self._wake.wait()
                if self._closed:
                    return
                admitted = self._take()
            for name, jobs in admitted.items():
                self._run(jobs)
            for name, eng in self.engines.items():
                if eng.busy():
                    self._step(name)

    def _busy(self) -> bool:
        return any(eng.busy() for eng in self.engines.values())

    def _take(self) -> dict[str, list[Job]]:
        """Waiting jobs that have a free slot in their model's engine, by model."""
        free = {name: self.max_batch - len(self._running[name]) for name in self.models}
        taken: dict[str, list[Job]] = collections.defaultdict(list)
        for job in list(self._pending):
            if job.cancelled.is_set():
                self._pending.remove(job)
            elif free[job.spec.model] > 0:
                self._pending.remove(job)
                free[job.spec.model] -= 1
                taken[job.spec.model].append(job)
        return taken

    def _run(self, batch: list[Job]) -> None:
        """Puts jobs of one model into its running batch."""
        for job in batch:
            self._running[job.spec.model].append(job)
            self.engines[job.spec.model].submit(self._request(job))

    def _step(self, name: str) -> None:
        try:
            self.engines[name].step()
        except Exception as e:  # an engine failure fails its requests, not the server
            # Its clients see only the message, so the traceback goes to the server's log.
            _log.exception("model %r: a step of its engine failed; its %d running requests "
                           "get a 500", name, len(self._running[name]))
            for job in self._running[name]:
                job.emit("error", APIError(500, f"generation failed: {e}"))
            self._running[name] = []
            self.engines[name] = self._engine(name)  # its cache may be gone with the step
        self._running[name] = [j for j in self._running[name] if not j.cancelled.is_set()
                               and not j.finished]

    def _request(self, job: Job) -> slots.Request:
        spec = job.spec
        model = self.models[spec.model]

        def on_token(event):
            if job.stream and event.text and not job.cancelled.is_set():
                job.emit("delta", event.text)

        def on_done(completion):
            job.finished = True
            if completion.finish_reason != "cancelled":
                job.emit("done", Result(completion.text, completion.token_ids,
                                        completion.finish_reason, len(spec.prompt_ids)))

        return slots.Request(
            spec.prompt_ids, max_new_tokens=spec.max_new_tokens, temperature=spec.temperature,
            top_k=spec.top_k, top_p=spec.top_p, seed=spec.seed,
            stop_ids=engine.stop_ids_for(model, chat=spec.chat),
            stop_strings=spec.stop_strings, decode_fn=model.tokenizer.decode,
            on_token=on_token, on_done=on_done, cancelled=job.cancelled)
