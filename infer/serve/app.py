"""The FastAPI application: OpenAI's endpoints over a Worker, and the web chat at `/`.

    app = create_app(worker, api_key=None, cors_origin=None)

Every failure answers in OpenAI's error shape (infer.serve.errors). Bodies are read here, up to
`max_body_bytes` (413 past it), and parsed by infer.serve.schema, so a malformed body is a 400
naming the field rather than FastAPI's 422. With `api_key`, the /v1 endpoints want
`Authorization: Bearer KEY` (401 otherwise); `/`, where the page asks for the key, and `/health`
stay open. Past the worker's queue limit a request gets 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from infer.serve import docs, responses, schema, spec as spec_lib, tool_calls
from infer.serve.errors import APIError
from infer.serve.worker import Job, QueueFull, Worker

MAX_BODY_BYTES = 1 << 20
RETRY_AFTER_SECONDS = 1
_DISCONNECT_POLL_SECONDS = 0.25
# The page may talk to this server only, and load nothing from anywhere.
_PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'")


def create_app(worker: Worker, *, api_key: str | None = None, cors_origin: str | None = None,
               max_body_bytes: int = MAX_BODY_BYTES, retriever=None, docs_k: int = 5) -> FastAPI:
    """The server's application; the caller starts and closes the worker. With `retriever`
    (infer.retrieval, `--docs`), chat requests get documents (infer.serve.docs)."""
    app = FastAPI(title="twofiles", docs_url=None, redoc_url=None, openapi_url=None)
    page = (Path(__file__).parent / "chat.html").read_text(encoding="utf-8")
    started = int(time.time())
    if cors_origin:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=[cors_origin],
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(APIError)
    async def api_error(_request, e: APIError):
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, e: StarletteHTTPException):
        return APIError(e.status_code, str(e.detail)).response()

    @app.exception_handler(Exception)
    async def server_error(_request, e: Exception):
        return APIError(500, f"internal error: {type(e).__name__}: {e}").response()

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(),
                                                                    api_key.encode()):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY' "
                           "with the key the server was started with",
                           code="invalid_api_key")

    def find_model(name: str):
        if name not in worker.models:
            raise APIError(404, f"the model {name!r} is not served here; GET /v1/models lists "
                           f"{sorted(worker.models)}", param="model", code="model_not_found")
        return worker.models[name]

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return HTMLResponse(page, headers={"Content-Security-Policy": _PAGE_POLICY,
                                           "X-Content-Type-Options": "nosniff"})

    @app.get("/health")
    async def health():
        return {"status": "ok", "queued": worker.queued()}

    @app.get("/v1/models")
    async def list_models(request: Request):
        authorize(request)
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": started, "owned_by": "twofiles"}
            for name in worker.models]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        body = schema.parse(schema.ChatRequest, await read_body(request, max_body_bytes))
        model = find_model(body.model)
        hits = None
        if retriever is not None:
            body, hits = docs.with_documents(body, retriever, docs_k)
        spec = spec_lib.chat_spec(body.model, model, body)
        marks = tool_calls.markers(model) if spec.tools else None
        return await answer(request, body, spec, "chat.completion", marks, hits)

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        body = schema.parse(schema.CompletionRequest, await read_body(request, max_body_bytes))
        spec = spec_lib.completion_spec(body.model, find_model(body.model), body)
        return await answer(request, body, spec, "text_completion")

    async def answer(request: Request, body, spec, kind: str, marks=None, hits=None):
        job = Job(spec, body.stream, asyncio.get_running_loop())
        try:
            worker.submit(job)
        except QueueFull as e:
            raise APIError(429, f"the server is busy ({e}); retry in {RETRY_AFTER_SECONDS} s",
                           code="queue_full",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        rid = responses.new_id("chatcmpl" if kind == "chat.completion" else "cmpl")
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_events(job, rid, kind, body.model, include_usage, marks),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        result = await _result(job, request)
        if kind != "chat.completion":
            return JSONResponse(responses.text_completion(rid, body.model, result))
        content, calls = tool_calls.split(result.text, marks) if marks else (result.text, [])
        reply = responses.chat_completion(rid, body.model, result, content, calls)
        if hits is not None:
            reply["sources"] = [h.source() for h in hits]
        return JSONResponse(reply)

    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes `limit` bytes (declared or sent)."""
    declared = request.headers.get("content-length", "")
    too_big = APIError(413, f"the request body is over the limit of {limit} bytes",
                       code="request_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _result(job: Job, request: Request):
    """The job's Result; a client that disconnects while waiting cancels its job."""
    try:
        while True:
            try:
                kind, value = await asyncio.wait_for(job.out.get(), _DISCONNECT_POLL_SECONDS)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    raise APIError(499, "the client disconnected") from None
                continue
            if kind == "error":
                raise value
            if kind == "done":
                return value
    finally:
        job.cancelled.set()  # harmless once done; frees the engine if the client is gone


async def _events(job: Job, rid: str, kind: str, model: str, include_usage: bool,
                  marks: tool_calls.Markers | None = None):
    """The SSE stream of a job; the stream's end (or the client's going) cancels the job.
    With tools (`marks`), a call's text is held back and sent as one tool_calls delta."""
    chat = kind == "chat.completion"
    content = tool_calls.ContentStream(marks) if marks else None
    chunk_kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str, finish_reason: str | None = None) -> str:
        if chat:
            delta = {"content": text} if text else {}
            return responses.sse(responses.chat_chunk(rid, model, delta, finish_reason))
        return responses.sse(responses.text_chunk(rid, model, text, finish_reason))

    try:
        if chat:
            yield responses.sse(responses.chat_chunk(rid, model,
                                                     {"role": "assistant", "content": ""}))
        while True:
            item, value = await job.out.get()
            if item == "delta":
                text = content.feed(value) if content else value
                if text:
                    yield chunk(text)
            elif item == "error":
                yield responses.sse(value.body())
                break
            else:
                finish_reason = value.finish_reason
                if content:
                    rest, calls = content.finish(value.text)
                    if rest:
                        yield chunk(rest)
                    if calls:
                        yield responses.sse(responses.chat_chunk(
                            rid, model, responses.tool_call_deltas(calls)))
                        finish_reason = "tool_calls"
                yield chunk("", finish_reason)
                if include_usage:
                    yield responses.sse(responses.usage_chunk(rid, chunk_kind, model, value))
                break
        yield responses.sse("[DONE]")
    finally:
        job.cancelled.set()
