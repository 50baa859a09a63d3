"""Preference pairs: one JSONL line per comparison of two answers to the same prompt.

    {"prompt": [{"role": "user", "content": "who are you?"}],
     "chosen": {"role": "assistant", "content": "I am Quill."},
     "rejected": {"role": "assistant", "content": "I am a toaster."}}

The prompt is a conversation so far (any messages, earlier assistant turns included); chosen and
rejected are the two candidates for the next assistant message. Both conversations, prompt plus
answer, must be valid for `conversations.check`. Other keys of a line (an id, a source) are
ignored. A bad line is refused as `FILE:LINE: what is wrong` (ConversationError).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from train.datasets.conversations import ConversationError, check


class Pair(NamedTuple):
    prompt: list[dict]
    chosen: dict
    rejected: dict


def check_pair(record) -> Pair:
    """A Pair from one decoded line; raises ConversationError saying what is wrong."""
    if not isinstance(record, dict) or not {"prompt", "chosen", "rejected"} <= set(record):
        raise ConversationError('expected an object {"prompt": [messages], "chosen": {message}, '
                                '"rejected": {message}}')
    prompt = record["prompt"]
    if not isinstance(prompt, list) or not prompt:
        raise ConversationError('"prompt" must be a non-empty list of messages')
    answers = []
    for key in ("chosen", "rejected"):
        answer = record[key]
        if not isinstance(answer, dict) or answer.get("role") != "assistant":
            raise ConversationError(f'"{key}" must be one assistant message '
                                    '{"role": "assistant", "content": ...}')
        try:
            conversation = check(prompt + [answer])
        except ConversationError as e:
            raise ConversationError(f"prompt + {key}: {e}") from None
        answers.append(conversation[-1])
    return Pair(conversation[:-1], *answers)


def iter_file(path: str | Path) -> Iterator[tuple[str, Pair]]:
    """Yield ("FILE:LINE", Pair) for each non-blank line, checked as it is read."""
    path = Path(path)
    if not path.is_file():
        raise ConversationError(f'{path}: no such preference file (expected .jsonl with one '
                                '{"prompt", "chosen", "rejected"} per line)')
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                pair = check_pair(json.loads(line))
            except json.JSONDecodeError as e:
                raise ConversationError(f"{where}: not JSON ({e.msg} at column {e.colno})"
                                        ) from None
            except ConversationError as e:
                raise ConversationError(f"{where}: {e}") from None
            yield where, pair


def write(path: str | Path, pairs) -> int:
    """Write Pairs (or (prompt, chosen, rejected) triples) as JSONL, checked first; returns
    how many."""
    lines = [json.dumps(dict(zip(Pair._fields, check_pair(dict(zip(Pair._fields, p))))),
                        ensure_ascii=False) + "\n" for p in pairs]
    Path(path).write_text("".join(lines), encoding="utf-8")
    return len(lines)
