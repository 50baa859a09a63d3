"""Conversations in the OpenAI shape, checked before anything renders them.

    {"role": "system" | "user", "content": str}
    {"role": "assistant", "content": str | None,
     "tool_calls": [{"id": str, "type": "function",
                     "function": {"name": str, "arguments": "<a JSON object, as a string>"}}]}
    {"role": "tool", "content": str, "tool_call_id": str, "name": str}   # what the tool returned

`check` returns the messages as templates see them: keys whose value is None dropped (as
transformers drops them, so that both render the same dicts).
"""

from __future__ import annotations

import json
import re

ROLES = ("system", "user", "assistant", "tool")
# OpenAI's optional "name" (of a participant, or of the tool that answered) is allowed and kept;
# templates that do not write it ignore it.
_KEYS = {"system": {"content", "name"}, "user": {"content", "name"},
         "assistant": {"content", "tool_calls", "name"}, "tool": {"content", "tool_call_id", "name"}}
_CALL_KEYS, _FUNCTION_KEYS = {"id", "type", "function"}, {"name", "arguments"}
# OpenAI's rule for function names; it also keeps names free of markup such as "<|".
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ChatError(ValueError):
    """A conversation that cannot be rendered; the message names the bad message."""


def check(messages) -> list[dict]:
    """The messages, validated (ChatError naming the message index otherwise), None values
    dropped."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatError("messages must be a non-empty list of {'role', 'content'} dicts, got "
                        f"{messages!r:.80}")
    return [_check_message(i, m) for i, m in enumerate(messages)]


def _check_message(i: int, m) -> dict:
    role = m.get("role") if isinstance(m, dict) else m
    if not isinstance(m, dict) or role not in ROLES:
        raise ChatError(f"message {i}: role {role!r} is not one of {ROLES}")
    # None values, and an empty tool_calls list, say nothing: dropped, as transformers drops them.
    m = {k: v for k, v in m.items() if v is not None and not (k == "tool_calls" and v == [])}
    unknown = set(m) - _KEYS[role] - {"role"}
    if unknown:
        raise ChatError(f"message {i}: unknown key(s) {sorted(unknown)} for role {role!r}; "
                        f"allowed: {sorted(_KEYS[role])} (tool calls go in 'tool_calls', "
                        "in the OpenAI shape)")
    if role == "system" and i != 0:
        raise ChatError(f"message {i}: a system message may only come first")
    if role == "assistant" and "content" not in m and not m.get("tool_calls"):
        raise ChatError(f"message {i}: an assistant message needs 'content' or 'tool_calls'")
    if role != "assistant" and "content" not in m:
        raise ChatError(f"message {i}: a {role} message needs 'content' (a str)")
    if not isinstance(m.get("content", ""), str):
        raise ChatError(f"message {i}: content must be a str, got "
                        f"{type(m['content']).__name__}")
    for key in ("tool_call_id", "name"):
        if not isinstance(m.get(key, ""), str):
            raise ChatError(f"message {i}: {key!r} must be a str")
    if "tool_calls" in m:
        _check_tool_calls(i, m["tool_calls"])
    return m


def _check_tool_calls(i: int, calls) -> None:
    if not isinstance(calls, list):
        raise ChatError(f"message {i}: tool_calls must be a list, got {type(calls).__name__}")
    for j, call in enumerate(calls):
        where = f"message {i}, tool call {j}"
        fn = call.get("function") if isinstance(call, dict) else None
        if (not isinstance(fn, dict) or call.get("type", "function") != "function"
                or set(call) - _CALL_KEYS or set(fn) - _FUNCTION_KEYS):
            raise ChatError(f"{where}: expected {{'id', 'type': 'function', 'function': "
                            f"{{'name', 'arguments'}}}}, got {call!r:.80}")
        if not isinstance(call.get("id", ""), str):
            raise ChatError(f"{where}: 'id' must be a str")
        name, arguments = fn.get("name"), fn.get("arguments")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ChatError(f"{where}: function name {name!r} must be 1-64 letters, digits, "
                            "'_' or '-'")
        if not isinstance(arguments, str):
            raise ChatError(f"{where}: 'arguments' must be a JSON object as a str (the OpenAI "
                            f"shape), got {type(arguments).__name__}")
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise ChatError(f"{where}: 'arguments' is not JSON ({e})") from None
        if not isinstance(parsed, dict):
            raise ChatError(f"{where}: 'arguments' must be a JSON object, got {arguments!r:.80}")


def call_text(name: str, arguments: str) -> str:
    """A tool call as the model writes it: {"name": NAME, "arguments": ARGUMENTS} (the
    arguments' JSON as given). The twofiles template and the ChatML fold both use this text."""
    return '{"name": "' + name + '", "arguments": ' + arguments + "}"
