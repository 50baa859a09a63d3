"""The training data a config names: a prepared folder, or a source prepared on first use.

`data.source` is either a folder written by `python -m train prepare` (used as it is: its
tokenizer comes with it), or a source (`demo`, files, `tfds:NAME`) that is turned once into a
tokenizer of the model's vocabulary size and token shards, in the cache, and reused by every
later run naming the same source, unchanged, and vocabulary size. The cache is keyed by the
source's content (`corpus.fingerprint`): after an edit to its files the next run prepares it
anew. Only process 0 prepares; the others wait for it.

The cache is one place for every working directory: `$TWOFILES_CACHE/data`, by default
`$XDG_CACHE_HOME/twofiles/data` (`~/.cache/twofiles/data`); `data.cache_dir` names another.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import jax

from model.config import ConfigError
from train import corpus as corpus_lib
from train import loader as loader_lib
from train import prepare as prepare_lib
from train import tokenizer as tokenizer_lib
from train.config import TrainConfig

TOKENIZER_FILE = "tokenizer.json"  # the name in a prepared folder and in a run directory


def cache_root() -> Path:
    """Where twofiles keeps what it can remake: $TWOFILES_CACHE, else ~/.cache/twofiles."""
    if os.environ.get("TWOFILES_CACHE"):
        return Path(os.environ["TWOFILES_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "twofiles"


def cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else cache_root() / "data"


def cache_folder(source: str, vocab_size: int, cache: Path, fingerprint: str) -> Path:
    """The folder of one source at one content (`fingerprint`) and vocabulary size."""
    # A path's end names it best ("corpus-jsonl", not "home-me-projects-...").
    slug = re.sub(r"[^A-Za-z0-9]+", "-", source).strip("-")[-40:].strip("-") or "source"
    digest = hashlib.sha256(f"{source}\0{fingerprint}".encode()).hexdigest()[:12]
    return Path(cache) / f"{slug}-{digest}-v{vocab_size}"


def _prepare_source(source: str, vocab_size: int, folder: Path, progress: bool) -> Path:
    data_dir = folder / "tokens"
    if (data_dir / prepare_lib.META).is_file():
        if progress:
            print(f"data: {source}, prepared earlier in {folder}", flush=True)
        return data_dir
    tok_path = folder / f"tokenizer-v{vocab_size}.json"
    if not tok_path.exists():
        corpus = corpus_lib.open_source(source)
        if progress:
            print(f"data: training a {vocab_size}-token tokenizer on {corpus.description} into "
                  f"{folder} (the cache: TWOFILES_CACHE moves it; data.source=DIR uses a folder "
                  "from `python -m train prepare`)", flush=True)
        ranks, pattern = tokenizer_lib.train_tokenizer(corpus.documents(), vocab_size)
        tokenizer_lib.save(tok_path, ranks, pattern)
    prepare_lib.prepare(source, tok_path, data_dir, progress=progress)
    return data_dir


def resolve(cfg: TrainConfig, progress: bool = True) -> tuple[str, dict]:
    """(prepared folder, its metadata) for cfg.data.source, preparing it when needed."""
    source = cfg.data.source
    if (Path(source) / prepare_lib.META).is_file():
        data_dir = Path(source)
    else:
        try:
            fingerprint = corpus_lib.fingerprint(source)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"data.source: {e}; or name a folder made by `python -m "
                                    "train prepare --out DIR`") from None
        folder = cache_folder(source, cfg.model.vocab_size, cache_dir(cfg), fingerprint)
        data_dir = folder / "tokens"
        if jax.process_index() == 0:
            data_dir = _prepare_source(source, cfg.model.vocab_size, folder, progress)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("twofiles-prepare")
    meta = prepare_lib.read_meta(data_dir)
    if meta["vocab_size"] > cfg.model.vocab_size:
        raise ConfigError(f"data {data_dir} uses a tokenizer of {meta['vocab_size']} tokens but "
                          f"model.vocab_size is {cfg.model.vocab_size}; set "
                          f"model.vocab_size={meta['vocab_size']}")
    return str(data_dir), meta


def split_counts(meta: dict, split: str) -> dict:
    """{"documents", "tokens", "bytes"} of one split."""
    return meta[split]


def train_loader(data_dir: str, cfg: TrainConfig, mesh) -> loader_lib.Loader:
    return loader_lib.Loader(data_dir, "train", seq_len=cfg.seq_len,
                             global_batch=cfg.data.batch_size, seed=cfg.seed, mesh=mesh)


def eval_batches(data_dir: str, cfg: TrainConfig, mesh):
    return loader_lib.eval_batches(data_dir, "val", cfg.seq_len, cfg.data.batch_size, mesh,
                                   cfg.data.eval_batches or None)


def tokenizer_file_name(data_dir: str) -> str:
    return TOKENIZER_FILE


def copy_tokenizer(data_dir: str, out: Path) -> str:
    """Copies the data's tokenizer into the run directory (atomically); returns its file name."""
    tmp = out / f".{TOKENIZER_FILE}.tmp"
    shutil.copyfile(Path(data_dir) / TOKENIZER_FILE, tmp)
    tmp.replace(out / TOKENIZER_FILE)
    return TOKENIZER_FILE
