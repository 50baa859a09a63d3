"""Corpus -> token shards: tokenize once per corpus and tokenizer, stream, write atomically.

Layout of a prepared directory (`python -m train prepare --source SRC --tokenizer FILE --out DIR`):

    DIR/meta.json            what is below, written last (see `read_meta`)
    DIR/tokenizer.json       a copy of the tokenizer the shards were made with
    DIR/train-00000.bin      token ids, flat, little-endian uint16 (uint32 if the vocab needs it)
    DIR/train-00000.docs.npy int64 offsets (in tokens) where each document starts in that shard
    DIR/val-00000.bin ...    the validation split, same layout

Each document is written as <|bos|> followed by its tokens, so a document boundary is both a
bos id in the stream and an entry of the `.docs.npy` offsets. Documents go to the validation
split by position: document i is in val when ceil((i+1)*f) > ceil(i*f), i.e. document 0 and
then one in every 1/f, spread evenly and the same on every run. Documents never span shards.

Counts in meta.json per split: `documents`, `tokens` (including one bos per document) and
`bytes` (UTF-8 bytes of the documents' text), so that bits per byte = loss_nats * tokens /
(ln 2 * bytes) over a whole split. `source_spec` is the source as given and
`source_fingerprint` a digest of its files' names and content (`corpus.fingerprint`): a rerun
reuses DIR only while both, the tokenizer and the options match, so edited files are never
served from old shards.

Atomic: everything is written into a hidden temporary folder beside DIR, meta.json last, and the
folder is renamed to DIR at the end; an interrupted run leaves no DIR that looks complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from train import corpus as corpus_lib
from train import tokenizer as tokenizer_lib

FORMAT = "twofiles-tokens"
VERSION = 1
SPLITS = ("train", "val")
META = "meta.json"


class PrepareError(ValueError):
    """A preparation that cannot be done, or a prepared folder that cannot be used."""


def is_val(index: int, val_fraction: float) -> bool:
    return math.ceil((index + 1) * val_fraction) > math.ceil(index * val_fraction)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class _SplitWriter:
    """Appends documents to `{split}-NNNNN.bin` shards, rolling over at `shard_tokens`."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.folder, self.split, self.dtype, self.shard_tokens = folder, split, dtype, shard_tokens
        self.shards: list[dict] = []
        self.documents = self.tokens = self.bytes = 0
        self._file = None

    def _open(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}"
        self._file = open(self.folder / f"{name}.bin", "wb")
        self._starts: list[int] = []
        self.shards.append({"file": f"{name}.bin", "docs_file": f"{name}.docs.npy",
                            "tokens": 0, "documents": 0})

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            np.save(self.folder / self.shards[-1]["docs_file"], np.asarray(self._starts, np.int64))
            self._file = None

    def add(self, ids: np.ndarray, n_bytes: int) -> None:
        if self._file is None or self.shards[-1]["tokens"] >= self.shard_tokens:
            self._close()
            self._open()
        shard = self.shards[-1]
        self._starts.append(shard["tokens"])
        ids.astype(self.dtype, copy=False).tofile(self._file)
        shard["tokens"] += len(ids)
        shard["documents"] += 1
        self.documents += 1
        self.tokens += len(ids)
        self.bytes += n_bytes

    def finish(self) -> dict:
        self._close()
        return {"documents": self.documents, "tokens": self.tokens, "bytes": self.bytes,
                "bytes_per_token": self.bytes / self.tokens if self.tokens else None,
                "shards": self.shards}


def _batches(documents, size: int):
    batch = []
    for doc in documents:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _existing(out_dir: Path, source: str, content: str, fp: str, options: dict,
              overwrite: bool):
    """The meta of an already prepared `out_dir` to reuse, or None to (re)write it. `content`
    is the source's corpus.fingerprint: shards of files edited since are not reused."""
    if not out_dir.exists():
        return None
    if not (out_dir / META).is_file():
        if any(out_dir.iterdir()):  # not ours to replace, even with overwrite
            raise PrepareError(f"{out_dir} exists, is not empty and holds no {META} (it is not "
                               "a prepared data folder); choose another --out")
        return None
    if overwrite:
        return None
    meta = read_meta(out_dir)
    same = (meta["source_spec"] == source and meta["tokenizer_fingerprint"] == fp
            and meta["options"] == options)
    if same and meta.get("source_fingerprint") == content:
        return meta
    if same:
        raise PrepareError(
            f"{out_dir} holds shards of {source!r} made before its files changed (or by a "
            "version of twofiles that did not record their content); pass --overwrite to "
            "prepare it again, or choose another --out")
    raise PrepareError(
        f"{out_dir} already holds shards of source {meta['source_spec']!r} made with "
        f"tokenizer {meta['tokenizer_fingerprint']} and options {meta['options']}; asked "
        f"for {source!r} with tokenizer {fp} and {options}. Choose another --out or pass "
        "--overwrite")


def prepare(source: str, tokenizer_path, out_dir, *, val_fraction: float = 0.1,
            max_docs: int | None = None, text_field: str = "text",
            tfds_data_dir: str | None = None, shard_tokens: int = 1 << 28,
            overwrite: bool = False, progress: bool = True, batch_docs: int = 16) -> dict:
    """Tokenize `source` with the tokenizer file into shards under `out_dir`; returns the meta.

    Reuses `out_dir` when it already holds the same source, with the same content
    (`corpus.fingerprint`), tokenizer and options; refuses it when the source's files changed
    since (unless `overwrite`, which always writes it anew).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise PrepareError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if max_docs is not None and max_docs < 1:
        raise PrepareError(f"max_docs must be at least 1, got {max_docs}")
    enc = tokenizer_lib.load(tokenizer_path)
    fp = tokenizer_lib.fingerprint(enc)
    out_dir = Path(out_dir)
    options = {"val_fraction": val_fraction, "max_docs": max_docs, "text_field": text_field}
    corpus = corpus_lib.open_source(source, text_field=text_field, tfds_data_dir=tfds_data_dir)
    content = corpus_lib.fingerprint(source, text_field=text_field, tfds_data_dir=tfds_data_dir)
    meta = _existing(out_dir, str(source), content, fp, options, overwrite)
    if meta is not None:
        return meta

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        meta = _write(corpus, enc, fp, tmp, val_fraction=val_fraction, max_docs=max_docs,
                      shard_tokens=shard_tokens, progress=progress, batch_docs=batch_docs)
        meta.update(source_spec=str(source), source_fingerprint=content, options=options)
        shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
        _write_json(tmp / META, meta)  # last: a folder with meta.json is complete
        if out_dir.exists():  # an empty folder, or prepared data to overwrite (checked above)
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _write(corpus, enc, fp, folder: Path, *, val_fraction, max_docs, shard_tokens, progress,
           batch_docs) -> dict:
    from tqdm.auto import tqdm

    dtype = token_dtype(enc.n_vocab)
    writers = {s: _SplitWriter(folder, s, dtype, shard_tokens) for s in SPLITS}
    bos = tokenizer_lib.bos_id(enc)
    total = corpus.num_documents
    if max_docs is not None:
        total = min(max_docs, total) if total is not None else max_docs
    bar = tqdm(total=total, unit="doc", disable=not progress, desc="prepare", smoothing=0.1)
    start, index, n_tokens = time.perf_counter(), 0, 0
    documents = corpus_lib.limited(corpus.documents(), max_docs)
    for batch in _batches(documents, batch_docs):
        for text, ids in zip(batch, enc.encode_ordinary_batch(batch, num_threads=os.cpu_count())):
            split = "val" if is_val(index, val_fraction) else "train"
            tokens = np.empty(len(ids) + 1, dtype)
            tokens[0] = bos
            tokens[1:] = ids
            writers[split].add(tokens, len(text.encode("utf-8")))
            index += 1
            n_tokens += len(tokens)
        bar.update(len(batch))
        bar.set_postfix_str(f"{n_tokens:,} tokens, "
                            f"{n_tokens / max(time.perf_counter() - start, 1e-9):,.0f} tokens/s")
    bar.close()
    seconds = time.perf_counter() - start
    splits = {s: w.finish() for s, w in writers.items()}
    n_bytes = sum(s["bytes"] for s in splits.values())
    if index == 0 or n_bytes == 0:
        raise PrepareError(f"empty corpus: {corpus.description} yielded {index} document(s) "
                           f"and {n_bytes} bytes of text")
    if splits["train"]["documents"] == 0:
        raise PrepareError(f"{corpus.description}: only {index} document(s), all taken by the "
                           f"validation split (val_fraction={val_fraction}); add documents or "
                           "lower val_fraction")
    return {"format": FORMAT, "version": VERSION, "source": corpus.description,
            "tokenizer_fingerprint": fp, "vocab_size": enc.n_vocab, "bos_id": bos,
            "dtype": dtype.name, **splits, "seconds": seconds,
            "tokens_per_second": n_tokens / seconds if seconds else None}


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def read_meta(data_dir) -> dict:
    """The metadata of a prepared folder: `tokenizer_fingerprint`, `vocab_size`, `dtype`,
    `bos_id`, `source`, and per split (`meta["train"]`, `meta["val"]`) `documents`, `tokens`,
    `bytes`, `bytes_per_token` and `shards`."""
    path = Path(data_dir) / META
    if not path.is_file():
        why = "does not exist" if not Path(data_dir).exists() else f"holds no {META}"
        raise FileNotFoundError(f"prepared data folder {str(data_dir)!r} {why}; make it with "
                                "`python -m train prepare --source SRC --tokenizer FILE --out DIR`")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise PrepareError(f"{path}: not twofiles token shards of version {VERSION}")
    return meta


def check_tokenizer(data_dir, enc_or_path) -> None:
    """Refuse to pair shards with a tokenizer other than the one that made them."""
    meta = read_meta(data_dir)
    fp = tokenizer_lib.fingerprint(enc_or_path)
    if meta["tokenizer_fingerprint"] != fp:
        raise tokenizer_lib.TokenizerError(
            f"tokenizer mismatch: {data_dir} was prepared with tokenizer "
            f"{meta['tokenizer_fingerprint']}, but the tokenizer given is {fp}; prepare the "
            "data again with this tokenizer (or use the one in the data folder)")
