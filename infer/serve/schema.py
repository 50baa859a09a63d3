"""Request bodies of the OpenAI API that this server accepts, checked before anything runs.

Types are strict (a string is not a number, `true` is not 1) and unknown fields are refused, as
OpenAI refuses them. Fields this server does not implement are accepted only at the value that
means "off" (`n: 1`, `logprobs: false`, `tools: []`, ...); any other value is a 400 that names
the field, never silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infer.serve.errors import APIError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def as_dict(self) -> dict:
        """The renderer's shape: a "developer" message is a system message, parts are joined."""
        content = self.content
        if isinstance(content, list):
            content = "".join(p.text for p in content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(_Strict):
    include_usage: bool = False


class _Request(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    n: Any = None
    logit_bias: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise APIError(400, "stop: give at most 4 non-empty strings", param="stop")
        return stops


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    response_format: Any = None
    functions: Any = None
    function_call: Any = None


class CompletionRequest(_Request):
    prompt: str | list[str]
    echo: Any = None
    suffix: Any = None
    best_of: Any = None

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise APIError(400, f"prompt: a list of {len(self.prompt)} prompts is not supported; "
                           "send one prompt per request", param="prompt")
        return self.prompt[0]


# Unimplemented fields and the values that mean they are off.
_OFF = {
    "n": (None, 1), "logit_bias": (None, {}), "logprobs": (None, False, 0),
    "top_logprobs": (None, 0), "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "tools": (None, []), "tool_choice": (None, "none"),
    "response_format": (None, {"type": "text"}),
    "functions": (None, []), "function_call": (None, "none"), "echo": (None, False),
    "suffix": (None, ""), "best_of": (None, 1),
}


def parse(kind: type[_Request], body: bytes) -> _Request:
    """The validated request, or an APIError 400 naming the first bad field."""
    try:
        request = kind.model_validate_json(body)
    except ValidationError as e:
        raise _bad_request(e.errors()[0]) from None
    for name, off in _OFF.items():
        value = getattr(request, name, None)
        if not any(value == o and type(value) is type(o) for o in off):
            raise APIError(400, f"{name}: {value!r:.60} is not supported by this server "
                           f"(supported: {' or '.join(map(repr, off[1:]))}, or leave it out)",
                           param=name, code="unsupported_parameter")
    return request


def _bad_request(error: dict) -> APIError:
    loc = [str(x) for x in error["loc"]]
    param = loc[0] if loc else None
    if error["type"] == "json_invalid":
        return APIError(400, f"the body is not valid JSON: {error['msg']}", code="invalid_json")
    if error["type"] == "extra_forbidden":
        return APIError(400, f"unrecognized request argument supplied: {'.'.join(loc)}",
                        param=param, code="unknown_parameter")
    where = ".".join(loc) or "body"
    return APIError(400, f"{where}: {error['msg']}", param=param, code="invalid_value")
