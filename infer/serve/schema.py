"""Request bodies of the OpenAI API that this server accepts, checked before anything runs.

Types are strict (a string is not a number, `true` is not 1) and unknown fields are refused, as
OpenAI refuses them. Fields this server does not implement are accepted only at the value that
means "off" (`n: 1`, `logprobs: false`, ...); any other value is a 400 that names the field,
never silently ignored.

Tools: `tools` may list the functions of `infer.tools.TOOLS` (the calculator), the tools the
project's models are trained to call; any other function is a 400 naming it. `tool_choice` may
be "auto" (the default with tools) or "none"; "required" and a named function would need the
server to force a call, which it does not, so they are refused too.
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


class FunctionCall(_Strict):
    name: str
    arguments: str  # a JSON object, as a string (OpenAI's shape)


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's calls, sent back by the client
    tool_call_id: str | None = None  # a tool message: the call it answers
    name: str | None = None

    def as_dict(self) -> dict:
        """The renderer's shape (infer.chat.messages): a "developer" message is a system
        message, parts are joined, unset fields are left out."""
        content = self.content
        if isinstance(content, list):
            content = "".join(p.text for p in content)
        out = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if self.tool_calls:
            out["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        for key in ("tool_call_id", "name"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class FunctionDef(_Strict):
    name: str
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: dict


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
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: Any = None
    functions: Any = None
    function_call: Any = None

    def tool_names(self) -> tuple[str, ...]:
        """The tools the model may call in this request: () without tools or with
        tool_choice "none"; a 400 for a tool or a choice this server does not run."""
        from infer.tools import SCHEMAS, TOOLS

        for i, tool in enumerate(self.tools or []):
            name = tool.function.name
            if name not in TOOLS:
                raise APIError(400, f"tools[{i}]: the function {name!r:.60} is not supported by "
                               f"this server; the tools its models call: {', '.join(TOOLS)}",
                               param="tools", code="unsupported_tool")
            want = SCHEMAS[name]["function"]["parameters"]["properties"]
            given = (tool.function.parameters or {}).get("properties", want)
            if not isinstance(given, dict) or set(given) != set(want):
                raise APIError(400, f"tools[{i}]: {name} takes the arguments {sorted(want)}, "
                               f"not {_shown(given)}; give its schema (infer.tools.SCHEMAS) "
                               "or leave out parameters", param="tools", code="invalid_value")
        if self.tool_choice is not None and not self.tools:
            raise APIError(400, f"tool_choice: {_shown(self.tool_choice)} is not supported "
                           "without tools; give tools or leave tool_choice out",
                           param="tool_choice", code="unsupported_parameter")
        if self.tool_choice is not None and self.tool_choice not in ("none", "auto"):
            raise APIError(400, f"tool_choice: {_shown(self.tool_choice)} is not supported by "
                           "this server (supported: 'auto' or 'none'): the model decides "
                           "whether to call a tool", param="tool_choice",
                           code="unsupported_parameter")
        if not self.tools or self.tool_choice == "none":
            return ()
        return tuple(dict.fromkeys(t.function.name for t in self.tools))


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


def _shown(value) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    return f"{value!r:.60}"


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
