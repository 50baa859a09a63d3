"""Conversation files: OpenAI-style JSONL, one `{"messages": [...]}` object per line.

A message is `{"role": ..., "content": str}` with role `system` (first message only), `user`,
`assistant` or `tool`. An assistant may call tools in the OpenAI shape,

    "tool_calls": [{"id": "call_0", "type": "function",
                    "function": {"name": "calculator", "arguments": "{\"expression\": \"2 + 2\"}"}}]

(its content may then be null or absent), and each call is answered by a tool message
`{"role": "tool", "tool_call_id": "call_0", "content": "4"}` before the next user or assistant
turn. Keys of a line other than "messages" (an id, a source) are ignored; unknown keys inside a
message are refused, since a misspelt key would otherwise be silently dropped from training.

`check` is the one definition of a valid conversation; `read` applies it to every line and
refuses a bad one with `FILE:LINE: what is wrong`; `write` checks everything, then writes
atomically (a temp file renamed into place), so a failed write leaves no partial file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

ROLES = ("system", "user", "assistant", "tool")
_KEYS = {  # allowed keys per role
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls"},
    "tool": {"role", "content", "tool_call_id", "name"},
}


class ConversationError(ValueError):
    """A conversation or conversation file that cannot be used; the message says where and why."""


def _check_tool_calls(calls) -> list[str]:
    """The ids of an assistant's OpenAI-shaped tool calls; raises ConversationError if malformed."""
    if not isinstance(calls, list) or not calls:
        raise ConversationError("tool_calls must be a non-empty list of "
                                '{"id", "type": "function", "function": {"name", "arguments"}}')
    ids = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if (not isinstance(call, dict) or call.get("type") != "function"
                or not isinstance(call.get("id"), str) or not call["id"]
                or not isinstance(fn, dict) or set(call) - {"id", "type", "function"}):
            raise ConversationError(f'tool call {j} must be {{"id": str, "type": "function", '
                                    f'"function": {{"name", "arguments"}}}}, got {call!r:.120}')
        if set(fn) != {"name", "arguments"} or not isinstance(fn["name"], str) or not fn["name"]:
            raise ConversationError(f'tool call {j}: "function" must be exactly '
                                    f'{{"name": str, "arguments": JSON string}}, got {fn!r:.120}')
        try:
            args = json.loads(fn["arguments"]) if isinstance(fn["arguments"], str) else None
        except json.JSONDecodeError as e:
            raise ConversationError(f"tool call {j}: arguments are not valid JSON ({e})") from None
        if not isinstance(args, dict):
            raise ConversationError(f"tool call {j}: arguments must be a JSON object in a string, "
                                    f"e.g. '{{\"expression\": \"2 + 2\"}}', got "
                                    f"{fn['arguments']!r:.80}")
        if call["id"] in ids:
            raise ConversationError(f"tool call {j}: id {call['id']!r} is used twice")
        ids.append(call["id"])
    return ids


def check(messages) -> list[dict]:
    """Validate one conversation and return it with a null assistant content made "".

    Raises ConversationError naming the first bad message (0-based). Rules: a non-empty list
    of dicts; known roles and keys; string content; system only first; every tool message
    answers a pending call of the assistant just before it; at least one assistant turn (a
    conversation with nothing to learn from is a mistake, not data).
    """
    if not isinstance(messages, list) or not messages:
        raise ConversationError('"messages" must be a non-empty list of {"role", "content"} dicts')
    out, pending = [], set()  # pending: ids of tool calls not yet answered
    for i, m in enumerate(messages):
        where = f"message {i}"
        if not isinstance(m, dict):
            raise ConversationError(f"{where}: must be a dict, got {type(m).__name__}")
        role = m.get("role")
        if role not in ROLES:
            raise ConversationError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        if unknown := sorted(set(m) - _KEYS[role]):
            raise ConversationError(f"{where}: unknown key {unknown[0]!r} for role {role!r} "
                                    f"(allowed: {', '.join(sorted(_KEYS[role]))})")
        content = m.get("content")
        if content is None and role == "assistant" and "tool_calls" in m:
            m = {**m, "content": ""}  # OpenAI writes null content beside tool calls
        elif not isinstance(content, str):
            raise ConversationError(f"{where} ({role}): content must be a string, got "
                                    f"{type(content).__name__}")
        if role == "system" and i != 0:
            raise ConversationError(f"{where}: a system message may only come first")
        if role == "tool":
            call_id = m.get("tool_call_id")
            if call_id not in pending:
                raise ConversationError(
                    f"{where}: tool message with tool_call_id {call_id!r} answers no call of "
                    f"the assistant message before it")
            pending.discard(call_id)
        else:
            if pending:
                raise ConversationError(f"{where}: tool call(s) {', '.join(sorted(pending))} "
                                        f"of the assistant message before it have no tool answer")
            if role == "assistant" and "tool_calls" in m:
                try:
                    pending = set(_check_tool_calls(m["tool_calls"]))
                except ConversationError as e:
                    raise ConversationError(f"{where}: {e}") from None
        out.append(m)
    if not any(m["role"] == "assistant" for m in out):
        raise ConversationError("no assistant message: nothing to learn from")
    return out


def iter_file(path: str | Path) -> Iterator[tuple[str, list[dict]]]:
    """Yield ("FILE:LINE", messages) for each non-blank line, checked as it is read."""
    path = Path(path)
    if not path.is_file():
        raise ConversationError(f"{path}: no such conversation file (expected .jsonl with one "
                                f'{{"messages": [...]}} per line)')
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            where = f"{path}:{n}"
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                problem = f"not JSON ({e.msg} at column {e.colno})"
                raise ConversationError(f"{where}: {problem}") from None
            if not isinstance(record, dict) or "messages" not in record:
                raise ConversationError(f'{where}: expected an object {{"messages": [...]}}, got '
                                        f"{line.strip()[:60]!r}")
            try:
                yield where, check(record["messages"])
            except ConversationError as e:
                raise ConversationError(f"{where}: {e}") from None


def read(path: str | Path) -> list[list[dict]]:
    """All conversations of a JSONL file; the first bad line raises `FILE:LINE: what is wrong`."""
    conversations = [messages for _, messages in iter_file(path)]
    if not conversations:
        raise ConversationError(f"{path}: holds no conversations")
    return conversations


def write(path: str | Path, conversations: Iterable[list[dict]], *, force: bool = False) -> int:
    """Write conversations as JSONL atomically; returns how many. Refuses to replace a file
    unless `force`, and refuses an invalid conversation before anything is written."""
    path = Path(path)
    if path.exists() and not force:
        raise ConversationError(f"{path} exists; pass force=True (--force) to replace it")
    lines = []
    for i, messages in enumerate(conversations):
        try:
            lines.append(json.dumps({"messages": check(messages)}, ensure_ascii=False) + "\n")
        except ConversationError as e:
            raise ConversationError(f"conversation {i} for {path}: {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    # A sibling temp file opened normally, so the result gets the user's usual permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(lines)
