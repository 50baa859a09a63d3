"""Token shards -> global batches: random access, shuffled by seed, sliced per process, resumable.

A split's token stream (all its shards, memory-mapped) is cut into windows of seq_len + 1
tokens at a stride of seq_len: window w covers tokens [w*T, w*T + T], giving inputs (its first T)
and targets (its last T). Windows do not cross shards; documents are packed back to back, each
starting with <|bos|>.

Order (Grain `MapDataset`, random access all the way): the windows are shuffled by `seed`, with
a new permutation each epoch, and repeated forever; position g of that endless sequence is row
g % B of global batch g // B. Process p of P reads positions p, p+P, p+2P, ... so the P processes
together read every position exactly once, each only its own rows (B/P per batch). The state is
just the number of batches taken, so a restored loader yields exactly the batches that follow.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grain
import numpy as np

from train.prepare import read_meta


class LoaderError(ValueError):
    """A loader that cannot be built as asked; the message says why and what would work."""


class TokenWindows:
    """Random-access source: index -> int32 [seq_len + 1] window of one split's tokens."""

    def __init__(self, data_dir, split: str, seq_len: int):
        meta = read_meta(data_dir)
        if split not in meta or not isinstance(meta[split], dict) or "shards" not in meta[split]:
            raise LoaderError(f"{data_dir}: no split {split!r}; it has "
                              f"{[s for s in ('train', 'val') if s in meta]}")
        if seq_len < 1:
            raise LoaderError(f"seq_len must be at least 1, got {seq_len}")
        self.seq_len = seq_len
        self._shards = [np.memmap(Path(data_dir) / s["file"], dtype=meta["dtype"], mode="r",
                                  shape=(s["tokens"],)) for s in meta[split]["shards"]]
        per_shard = [max(0, (len(s) - 1) // seq_len) for s in self._shards]
        self._first = np.cumsum([0] + per_shard)  # first window index of each shard
        if self._first[-1] == 0:
            raise LoaderError(f"{data_dir} split {split!r} has {meta[split]['tokens']} tokens: "
                              f"too few for one window of seq_len + 1 = {seq_len + 1}")

    def __len__(self) -> int:
        return int(self._first[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        shard = int(np.searchsorted(self._first, index, side="right")) - 1
        start = (index - int(self._first[shard])) * self.seq_len
        return np.asarray(self._shards[shard][start:start + self.seq_len + 1], np.int32)


def _process(process_index, process_count) -> tuple[int, int]:
    import jax

    p = jax.process_index() if process_index is None else process_index
    n = jax.process_count() if process_count is None else process_count
    if not 0 <= p < n:
        raise LoaderError(f"process_index {p} is not in [0, {n})")
    return p, n


def _batch_shards(mesh) -> int:
    return int(mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1))


class Loader:
    """Iterator of {"inputs", "targets"}: int32 [global_batch, seq_len] global jax.Arrays."""

    def __init__(self, data_dir, split: str = "train", seq_len: int = 256, global_batch: int = 16,
                 seed: int = 0, mesh=None, shuffle: bool = True, *, prefetch: int = 2,
                 process_index: int | None = None, process_count: int | None = None):
        self.windows = TokenWindows(data_dir, split, seq_len)
        self.split, self.seq_len, self.global_batch, self.seed = split, seq_len, global_batch, seed
        self.shuffle, self.mesh = shuffle, mesh
        self.process_index, self.process_count = _process(process_index, process_count)
        if global_batch < 1 or global_batch % self.process_count:
            raise LoaderError(f"global_batch {global_batch} must be a positive multiple of the "
                              f"process count {self.process_count}")
        if mesh is not None and global_batch % _batch_shards(mesh):
            raise LoaderError(f"global_batch {global_batch} must be a multiple of the mesh's "
                              f"batch shards (data x fsdp = {_batch_shards(mesh)})")
        self.local_batch = global_batch // self.process_count
        ds = grain.MapDataset.source(self.windows)
        if shuffle:
            ds = ds.shuffle(seed=seed)  # a fresh permutation per epoch once repeated
        ds = ds.repeat()[self.process_index::self.process_count]
        self._batches = ds.batch(self.local_batch)
        self.step = 0
        # Batch `step` is a pure function of `step`, so the next few can be built (and put on
        # the devices) by a thread while the training step runs, without touching the state.
        self._prefetch = prefetch
        self._pool = None
        self._ahead: dict = {}

    @property
    def windows_per_epoch(self) -> int:
        return len(self.windows)

    @property
    def epoch(self) -> int:
        return self.step * self.global_batch // len(self.windows)

    def local_batch_at(self, step: int) -> np.ndarray:
        """This process's rows of global batch `step`: int32 [local_batch, seq_len + 1]."""
        return self._batches[step]

    def __iter__(self):
        return self

    def batch_at(self, step: int) -> dict:
        """Global batch `step` as the iterator yields it."""
        local = self.local_batch_at(step)
        return to_global({"inputs": local[:, :-1], "targets": local[:, 1:]}, self.mesh,
                         self.global_batch)

    def __next__(self) -> dict:
        ahead = self._ahead.pop(self.step, None)
        batch = ahead.result() if ahead is not None else self.batch_at(self.step)
        self.step += 1
        if self._prefetch > 0:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="twofiles-loader")
            for step in range(self.step, self.step + self._prefetch):
                if step not in self._ahead:
                    self._ahead[step] = self._pool.submit(self.batch_at, step)
        return batch

    def close(self) -> None:
        """Stop prefetching (the iterator still works, without it)."""
        for ahead in self._ahead.values():
            ahead.cancel()
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        self._prefetch = 0

    def get_state(self) -> dict:
        """JSON-serialisable; `set_state` of a loader built the same way resumes exactly."""
        return {"step": self.step, "epoch": self.epoch, "split": self.split,
                "seq_len": self.seq_len, "global_batch": self.global_batch, "seed": self.seed,
                "shuffle": self.shuffle, "windows_per_epoch": len(self.windows)}

    def set_state(self, state: dict) -> None:
        mine = self.get_state()
        for key in ("split", "seq_len", "global_batch", "seed", "shuffle", "windows_per_epoch"):
            if key in state and state[key] != mine[key]:
                raise LoaderError(
                    f"cannot resume: the saved loader state has {key}={state[key]!r} but this "
                    f"loader has {mine[key]!r}; the batch sequence would not continue exactly")
        step = state.get("step")
        if not isinstance(step, int) or step < 0:
            raise LoaderError(f"loader state needs a non-negative int 'step', got {step!r}")
        self.step = step
        for ahead in self._ahead.values():
            ahead.cancel()
        self._ahead.clear()


def to_global(local: dict, mesh, global_batch: int) -> dict:
    """Process-local numpy rows -> global jax.Arrays with the mesh's batch sharding (without a
    mesh: plain arrays on the default device, holding this process's rows)."""
    import jax

    if mesh is None:
        return {k: jax.numpy.asarray(v) for k, v in local.items()}
    from model import sharding

    spec = sharding.batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(spec, np.ascontiguousarray(v),
                                                      (global_batch, *v.shape[1:]))
            for k, v in local.items()}


def eval_batches(data_dir, split: str = "val", seq_len: int = 256, global_batch: int = 16,
                 mesh=None, max_batches: int | None = None, *, process_index: int | None = None,
                 process_count: int | None = None):
    """A fixed, deterministic sequence of batches over `split` in stream order (no shuffle).

    As many whole batches as the split holds, capped at `max_batches`; a split smaller than one
    batch still yields one batch, with windows repeated from the start to fill it.
    """
    loader = Loader(data_dir, split, seq_len, global_batch, mesh=mesh, shuffle=False,
                    process_index=process_index, process_count=process_count)
    n = max(1, len(loader.windows) // global_batch)
    if max_batches is not None:
        n = min(n, max_batches)
    try:
        for _ in range(n):
            yield next(loader)
    finally:
        loader.close()

