"""A directory of text, markdown and JSONL files -> passages, each with its file and line.

Text and markdown split at blank lines into paragraphs; a paragraph longer than MAX_WORDS is cut
into runs of whole lines of at most that many words (a single longer line is kept whole), so a
citation `[file:line]` points at the passage's first line. A JSONL line is one passage: its
"text" or "content" field, the contents of its "messages", or else the line itself. Files are
read as UTF-8; hidden files and folders are skipped.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

SUFFIXES = (".txt", ".md", ".jsonl")
MAX_WORDS = 120


class RetrievalError(ValueError):
    """Documents that cannot be read or indexed; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Chunk:
    path: str  # relative to the documents directory, with forward slashes
    line: int  # 1-based line of the passage's first line
    text: str

    @property
    def source(self) -> str:
        return f"{self.path}:{self.line}"


def files_under(root: str | Path) -> list[Path]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise RetrievalError(f"--docs {root}: not a directory (expected a folder of "
                             f"{', '.join(SUFFIXES)} files)")
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        raise RetrievalError(f"--docs {root}: holds no {', '.join(SUFFIXES)} files")
    return found


def read_dir(root: str | Path) -> list[Chunk]:
    """Every passage of every file under `root`, in file order."""
    root = Path(root).expanduser()
    chunks = []
    for path in files_under(root):
        name = path.relative_to(root).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise RetrievalError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        split = _jsonl_chunks if path.suffix.lower() == ".jsonl" else _text_chunks
        chunks += [Chunk(name, line, passage) for line, passage in split(text, path)]
    return chunks


def _text_chunks(text: str, _path=None) -> list[tuple[int, str]]:
    """(first line, passage) for each paragraph, long ones cut into runs of lines."""
    out, lines, start = [], [], 0
    for number, line in enumerate(text.splitlines() + [""], start=1):
        if line.strip():
            if not lines:
                start = number
            lines.append(line)
            continue
        if lines:
            out += _windows(start, lines)
            lines = []
    return out


def _windows(start: int, lines: list[str]) -> list[tuple[int, str]]:
    out, run, words, first = [], [], 0, start
    for offset, line in enumerate(lines):
        n = len(line.split())
        if run and words + n > MAX_WORDS:
            out.append((first, "\n".join(run)))
            run, words, first = [], 0, start + offset
        run.append(line)
        words += n
    out.append((first, "\n".join(run)))
    return out


def _jsonl_chunks(text: str, path: Path) -> list[tuple[int, str]]:
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise RetrievalError(f"{path}:{number}: not JSON ({e.msg})") from None
        passage = _record_text(record) or line
        out.append((number, passage))
    return out


def _record_text(record) -> str:
    if not isinstance(record, dict):
        return ""
    for key in ("text", "content"):
        if isinstance(record.get(key), str):
            return record[key]
    messages = record.get("messages")
    if isinstance(messages, list):
        return "\n".join(m["content"] for m in messages
                         if isinstance(m, dict) and isinstance(m.get("content"), str))
    return ""
