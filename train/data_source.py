"""The training data a config names: a prepared folder, or a source prepared on first use.

A source (`demo`, files, `tfds:NAME`) is turned into a tokenizer of the model's vocabulary size
and token shards once, under data.cache_dir, and reused by every later run naming the same
source and vocabulary size. Only process 0 prepares; the others wait for it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import jax

from model.config import ConfigError
from train import loader as loader_lib
from train import prepare as prepare_lib
from train import tokenizer as tokenizer_lib
from train.config import TrainConfig

TOKENIZER_FILE = "tokenizer.json"  # the name in a prepared folder and in a run directory


def cache_folder(source: str, vocab_size: int, cache_dir: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", source).strip("-")[:40] or "source"
    digest = hashlib.sha256(source.encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{slug}-{digest}-v{vocab_size}"


def _prepare_source(source: str, vocab_size: int, cache_dir: str, progress: bool) -> Path:
    from train import corpus as corpus_lib

    folder = cache_folder(source, vocab_size, cache_dir)
    tok_path = folder / f"tokenizer-v{vocab_size}.json"
    if not tok_path.exists():
        corpus = corpus_lib.open_source(source)
        if progress:
            print(f"training a {vocab_size}-token tokenizer on {corpus.description}", flush=True)
        ranks, pattern = tokenizer_lib.train_tokenizer(corpus.documents(), vocab_size)
        tokenizer_lib.save(tok_path, ranks, pattern)
    data_dir = folder / "tokens"
    prepare_lib.prepare(source, tok_path, data_dir, progress=progress)
    return data_dir


def resolve(cfg: TrainConfig, progress: bool = True) -> tuple[str, dict]:
    """(prepared folder, its metadata) for cfg.data.source, preparing it when needed."""
    source = cfg.data.source
    if (Path(source) / prepare_lib.META).is_file():
        data_dir = Path(source)
    else:
        data_dir = cache_folder(source, cfg.model.vocab_size, cfg.data.cache_dir) / "tokens"
        if jax.process_index() == 0:
            data_dir = _prepare_source(source, cfg.model.vocab_size, cfg.data.cache_dir, progress)
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
