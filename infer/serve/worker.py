"""The engine thread: requests wait in a bounded queue, the thread takes them and generates.

Batching, for now: when the thread is free it takes the oldest waiting request and, if it is
greedy, every other waiting request with the same model, token limit, stop strings and kind
(chat or completion), up to `max_batch`, into one `engine.stream_generate` call (padded to a
power of two rows). Sampled
requests run alone (see `Spec.batch_key`). Continuous batching (rows joining a running batch)
belongs inside the engine and is a later step.

Results travel back to the server's event loop through each job's asyncio queue as
("delta", text), ("done", Result) or ("error", APIError). A job whose client went away is
skipped if it is still waiting; a running batch stops as soon as all its jobs are cancelled.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading

from infer.runtime import engine
from infer.serve.errors import APIError
from infer.serve.spec import Spec


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

    def emit(self, kind: str, value) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled.set()


class Worker:
    """Owns the models' decode parameters and the one thread that runs the engine."""

    def __init__(self, models: dict, *, weights: str = "float32", max_queue: int = 64,
                 max_batch: int = 16):
        if max_queue < 1 or max_batch < 1:
            raise ValueError(f"max_queue and max_batch must be >= 1, got {max_queue}, "
                             f"{max_batch}")
        self.models = dict(models)
        self.params = {name: engine.decode_params(m, weights) for name, m in models.items()}
        self.max_queue = max_queue
        self.max_batch = max_batch
        self._pending: collections.deque[Job] = collections.deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="infer-serve-engine",
                                        daemon=True)

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
        """How many requests are waiting (not counting those whose client has gone)."""
        with self._wake:
            return sum(not job.cancelled.is_set() for job in self._pending)

    def submit(self, job: Job) -> None:
        """Queues the job, or raises QueueFull when `max_queue` jobs are already waiting."""
        with self._wake:
            self._pending = collections.deque(j for j in self._pending
                                              if not j.cancelled.is_set())
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting")
            self._pending.append(job)
            self._wake.notify()

    def _take(self) -> list[Job] | None:
        """The next batch (None once closed): the oldest live job and those that may join it."""
        with self._wake:
            while True:
                while self._pending and self._pending[0].cancelled.is_set():
                    self._pending.popleft()
                if self._pending or self._closed:
                    break
                self._wake.wait()
            if self._closed:
                return None
            batch = [self._pending.popleft()]
            key = batch[0].spec.batch_key()
            if key is not None:
                for job in list(self._pending):
                    if len(batch) == self.max_batch:
                        break
                    if job.spec.batch_key() == key and not job.cancelled.is_set():
                        self._pending.remove(job)
                        batch.append(job)
            return batch

    def _serve(self) -> None:
        while (batch := self._take()) is not None:
            try:
                self._run(batch)
            except Exception as e:  # an engine failure fails its requests, not the server
                for job in batch:
                    job.emit("error", APIError(500, f"generation failed: {e}"))

    def _run(self, batch: list[Job]) -> None:
        spec = batch[0].spec
        model = self.models[spec.model]
        prompts = [job.spec.prompt_ids for job in batch]
        # Copies of the first prompt fill the batch to a power of two: the engine compiles
        # once per batch size, so a few sizes serve every batch.
        prompts += [prompts[0]] * ((1 << (len(prompts) - 1).bit_length()) - len(prompts))
        events = engine.stream_generate(
            self.params[spec.model], model.config, prompts,
            max_new_tokens=spec.max_new_tokens, temperature=spec.temperature, top_k=spec.top_k,
            top_p=spec.top_p, seed=spec.seed, stop_ids=engine.stop_ids_for(model, chat=spec.chat),
            stop_strings=spec.stop_strings, decode_fn=model.tokenizer.decode,
            stream=any(job.stream for job in batch))
        while True:
            try:
                event = next(events)
            except StopIteration as finished:
                generation = finished.value
                break
            job = batch[event.row] if event.row < len(batch) else None
            if job and job.stream and event.text and not job.cancelled.is_set():
                job.emit("delta", event.text)
            if all(j.cancelled.is_set() for j in batch):
                events.close()  # every client has gone: free the engine for the next batch
                return
        for job, completion in zip(batch, generation):
            job.emit("done", Result(completion.text, completion.token_ids,
                                    completion.finish_reason, len(job.spec.prompt_ids)))
