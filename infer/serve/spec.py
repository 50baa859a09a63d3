"""What the engine runs for a request: its prompt ids and sampling settings, resolved against
the model (its chat template, context and recommended sampling)."""

from __future__ import annotations

import dataclasses
import secrets

from infer.chat.messages import ChatError
from infer.chat.template import ChatTemplateError
from infer.runtime import engine, sampling_defaults
from infer.serve import tool_calls
from infer.serve.errors import APIError
from infer.serve.schema import ChatRequest, CompletionRequest

DEFAULT_MAX_TOKENS = 512  # when a request gives no limit (OpenAI's "up to the context")


@dataclasses.dataclass(frozen=True)
class Spec:
    """One request, ready for the engine. Requests with equal `batch_key`s may share a batch."""

    model: str
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    stop_strings: tuple[str, ...]
    chat: bool
    # The tools the model may call (infer.serve.tool_calls); their closing marker is among
    # `stop_strings`, so a reply ends with its call.
    tools: tuple[str, ...] = ()

    def batch_key(self) -> tuple | None:
        """Only greedy requests share a batch: a sampled row's random draws depend on its
        position in the batch, and a seed must give the same reply every time."""
        if self.temperature != 0:
            return None
        return (self.model, self.max_new_tokens, self.stop_strings, self.chat)


def chat_spec(name: str, model, request: ChatRequest) -> Spec:
    """The spec of a chat completion; message text is rendered by infer.chat.render, so no
    content becomes a control token."""
    messages = [m.as_dict() for m in request.messages]
    try:
        ids = engine.prompt_ids(model, messages, chat=True)
    except (ChatError, ChatTemplateError) as e:
        raise APIError(400, f"messages: {e}", param="messages") from None
    if request.max_tokens and request.max_completion_tokens:
        raise APIError(400, "give max_tokens or max_completion_tokens, not both",
                       param="max_completion_tokens")
    limit = request.max_completion_tokens or request.max_tokens
    spec = _spec(name, model, request, ids, limit, chat=True,
                 base=sampling_defaults.for_model(model))
    tools = request.tool_names()
    if not tools:
        return spec
    close = tool_calls.markers(model).close
    return dataclasses.replace(spec, tools=tools,
                               stop_strings=tuple(dict.fromkeys(spec.stop_strings + (close,))))


def completion_spec(name: str, model, request: CompletionRequest) -> Spec:
    """The spec of a plain completion: the prompt as text (BOS first when the model wants it);
    unset sampling settings are greedy, as for `python -m infer generate`."""
    ids = engine.prompt_ids(model, request.prompt_text())
    if not ids:
        raise APIError(400, "prompt: empty, and this model starts no prompt with BOS; give some "
                       "text", param="prompt")
    return _spec(name, model, request, ids, request.max_tokens, chat=False,
                 base=sampling_defaults.Recommended(0.0, 0, 1.0, "greedy"))


def _spec(name, model, request, ids, limit, *, chat, base) -> Spec:
    context = model.config.max_seq_len
    room = context - len(ids)
    if room < 1:
        raise APIError(400, f"the prompt is {len(ids)} tokens and the model's context is "
                       f"{context}; shorten it", param="messages" if chat else "prompt",
                       code="context_length_exceeded")
    if limit is not None and limit > room:
        raise APIError(400, f"the prompt is {len(ids)} tokens, so at most {room} new tokens fit "
                       f"in the model's context of {context}; max_tokens is {limit}",
                       param="max_tokens", code="context_length_exceeded")
    temperature = base.temperature if request.temperature is None else request.temperature
    top_p = base.top_p if request.top_p is None else request.top_p
    seed = secrets.randbits(31) if request.seed is None else request.seed
    seed %= 1 << 31  # OpenAI takes any integer; the engine's key wants 32 bits
    return Spec(name, tuple(ids), limit or min(DEFAULT_MAX_TOKENS, room), float(temperature),
                base.top_k, float(top_p), seed, tuple(request.stop_strings()), chat)
