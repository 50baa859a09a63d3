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

from infer.chat import messages as chat_messages


class ConversationError(ValueError):
    """A conversation or conversation file that cannot be used; the message says where and why."""


def check(messages) -> list[dict]:
    """Validate one conversation for training and return it with a null assistant content made "".

    Each message must pass the renderer's own check (`infer.chat.messages.check`: roles, keys,
    string content, system only first, OpenAI-shaped tool calls), so training data and inference
    share one definition of a message. Training adds the rules of a whole conversation: every
    tool call has a unique id and is answered by a tool message before the next turn, and there
    is at least one assistant turn (a conversation with nothing to learn from is a mistake, not
    data). Raises ConversationError naming the first bad message (0-based).
    """
    try:
        out = chat_messages.check(messages)
    except chat_messages.ChatError as e:
        raise ConversationError(str(e)) from None
    pending: set[str] = set()  # ids of tool calls not yet answered
    for i, m in enumerate(out):
        if m["role"] == "tool":
            if m.get("tool_call_id") not in pending:
                raise ConversationError(
                    f"message {i}: tool message with tool_call_id {m.get('tool_call_id')!r} "
                    "answers no call of the assistant message before it")
            pending.discard(m["tool_call_id"])
            continue
        if pending:
            raise ConversationError(f"message {i}: tool call(s) {', '.join(sorted(pending))} "
                                    "of the assistant message before it have no tool answer")
        if m["role"] == "assistant" and "tool_calls" in m:
            pending = _call_ids(i, m["tool_calls"])
            out[i] = {"content": "", **m}  # OpenAI writes null content beside tool calls
    if not any(m["role"] == "assistant" for m in out):
        raise ConversationError("no assistant message: nothing to learn from")
    return out


def _call_ids(i: int, calls: list[dict]) -> set[str]:
    ids = [call.get("id") for call in calls]
    for j, call_id in enumerate(ids):
        if not isinstance(call_id, str) or not call_id:
            raise ConversationError(f"message {i}, tool call {j}: needs an 'id' (a non-empty "
                                    "str) that its tool message's tool_call_id names")
        if call_id in ids[:j]:
            raise ConversationError(f"message {i}, tool call {j}: id {call_id!r} is used twice")
    return set(ids)


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
