"""OpenAI's response objects: chat completions, text completions, their stream chunks, usage."""

from __future__ import annotations

import json
import secrets
import time


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _envelope(rid: str, kind: str, model: str, choices: list, **extra) -> dict:
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model,
            "choices": choices, **extra}


def chat_completion(rid: str, model: str, result, content: str | None = None,
                    calls: list[dict] = ()) -> dict:
    """The reply to a chat request; with `calls` (infer.serve.tool_calls.split) the message
    holds them beside `content` and finish_reason is "tool_calls"."""
    message = {"role": "assistant", "content": result.text if not calls else content}
    if calls:
        message["tool_calls"] = list(calls)
    choice = {"index": 0, "message": message,
              "finish_reason": "tool_calls" if calls else result.finish_reason,
              "logprobs": None}
    return _envelope(rid, "chat.completion", model, [choice],
                     usage=usage(result.prompt_tokens, len(result.token_ids)))


def chat_chunk(rid: str, model: str, delta: dict, finish_reason: str | None = None) -> dict:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
    return _envelope(rid, "chat.completion.chunk", model, [choice])


def tool_call_deltas(calls: list[dict]) -> dict:
    """A stream delta carrying whole calls (OpenAI's clients also take them in one piece)."""
    return {"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}


def text_completion(rid: str, model: str, result) -> dict:
    choice = {"index": 0, "text": result.text, "finish_reason": result.finish_reason,
              "logprobs": None}
    return _envelope(rid, "text_completion", model, [choice],
                     usage=usage(result.prompt_tokens, len(result.token_ids)))


def text_chunk(rid: str, model: str, text: str, finish_reason: str | None = None) -> dict:
    choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
    return _envelope(rid, "text_completion", model, [choice])


def usage_chunk(rid: str, kind: str, model: str, result) -> dict:
    """The last chunk with `stream_options.include_usage`: no choices, the request's usage."""
    return _envelope(rid, kind, model, [], usage=usage(result.prompt_tokens,
                                                       len(result.token_ids)))


def sse(obj) -> str:
    """One server-sent event carrying `obj` as JSON (or the literal [DONE])."""
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n"
