"""train.loader: windows of the token stream, per-process slices that cover each epoch exactly
once, exact resume from a JSON state, global arrays on a mesh, deterministic eval batches."""

import collections
import json

import numpy as np
import pytest

from train import corpus, loader, prepare
from train import tokenizer as tk

T = 16  # sequence length used throughout


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Two plays (one per split) tokenized with a small tokenizer."""
    root = tmp_path_factory.mktemp("loader")
    plays = list(corpus.limited(corpus.open_source("demo").documents(), 2))
    tk.save(root / "tok.json", tk.train_tokenizer(plays, 512)[0])
    prepare.prepare("demo", root / "tok.json", root / "data", max_docs=2, progress=False)
    return root / "data"


def stream(data_dir, split="train"):
    meta = prepare.read_meta(data_dir)
    (shard,) = meta[split]["shards"]
    return np.fromfile(data_dir / shard["file"], dtype=meta["dtype"]).astype(np.int32)


def test_windows_follow_the_token_stream(data_dir):
    tokens = stream(data_dir)
    ld = loader.Loader(data_dir, "train", seq_len=T, global_batch=4, shuffle=False)
    assert ld.windows_per_epoch == (len(tokens) - 1) // T
    for step in range(3):
        batch = next(ld)
        assert batch["inputs"].dtype == np.int32 and batch["inputs"].shape == (4, T)
        for r in range(4):
            start = (step * 4 + r) * T
            np.testing.assert_array_equal(batch["inputs"][r], tokens[start:start + T])
            np.testing.assert_array_equal(batch["targets"][r], tokens[start + 1:start + T + 1])


def test_windows_stay_inside_shards(data_dir, tmp_path):
    prepare.prepare("demo", data_dir / "tokenizer.json", tmp_path / "d", max_docs=3,
                    shard_tokens=1000, progress=False)
    meta = prepare.read_meta(tmp_path / "d")
    shards = [np.fromfile(tmp_path / "d" / s["file"], dtype=meta["dtype"])
              for s in meta["train"]["shards"]]
    assert len(shards) == 2  # two plays of more than 1000 tokens: a shard each
    windows = loader.TokenWindows(tmp_path / "d", "train", T)
    first_of_second = (len(shards[0]) - 1) // T
    assert len(windows) == first_of_second + (len(shards[1]) - 1) // T
    last = first_of_second - 1
    np.testing.assert_array_equal(windows[last], shards[0][last * T:(last + 1) * T + 1])
    np.testing.assert_array_equal(windows[first_of_second], shards[1][:T + 1])


def _global_positions(data_dir, n_processes, global_batch, n_positions, seed=0):
    """Window contents by global position, read by `n_processes` simulated processes."""
    loaders = [loader.Loader(data_dir, "train", seq_len=T, global_batch=global_batch, seed=seed,
                             process_index=p, process_count=n_processes)
               for p in range(n_processes)]
    seen = {}
    for step in range(-(-n_positions // global_batch)):
        for p, ld in enumerate(loaders):
            for r, window in enumerate(ld.local_batch_at(step)):
                seen[step * global_batch + r * n_processes + p] = tuple(window)
    return [seen[g] for g in range(n_positions)], loaders[0]


def test_two_processes_see_every_window_once_per_epoch(data_dir):
    windows = loader.TokenWindows(data_dir, "train", T)
    n = len(windows)
    everything = collections.Counter(tuple(windows[i]) for i in range(n))
    seen, ld0 = _global_positions(data_dir, 2, 8, 2 * n)
    first, second = seen[:n], seen[n:]
    assert collections.Counter(first) == everything  # each window exactly once in epoch 1
    assert collections.Counter(second) == everything  # and again in epoch 2
    assert first != second  # in a new order
    # One process alone (global batch 8) reads the same global sequence: slicing loses nothing.
    alone, _ = _global_positions(data_dir, 1, 8, n)
    assert alone == first
    # What the iterator yields is that slice, split into inputs and targets.
    batch = next(ld0)
    np.testing.assert_array_equal(batch["inputs"], ld0.local_batch_at(0)[:, :-1])
    np.testing.assert_array_equal(batch["targets"], ld0.local_batch_at(0)[:, 1:])


def _take(ld, n):
    return [np.asarray(next(ld)["inputs"]) for _ in range(n)]


def test_state_round_trip_gives_identical_batches(data_dir):
    ld = loader.Loader(data_dir, "train", seq_len=T, global_batch=8, seed=3)
    _take(ld, 7)
    state = json.loads(json.dumps(ld.get_state()))
    expected = _take(ld, 5)
    resumed = loader.Loader(data_dir, "train", seq_len=T, global_batch=8, seed=3)
    resumed.set_state(state)
    for a, b in zip(expected, _take(resumed, 5)):
        np.testing.assert_array_equal(a, b)
    def first(seed):
        return _take(loader.Loader(data_dir, "train", seq_len=T, global_batch=8, seed=seed), 1)[0]

    np.testing.assert_array_equal(first(3), first(3))
    assert not np.array_equal(first(3), first(4))
    with pytest.raises(loader.LoaderError, match="global_batch=8"):
        loader.Loader(data_dir, "train", seq_len=T, global_batch=4, seed=3).set_state(state)


def test_global_arrays_on_a_mesh(data_dir):
    import jax

    from model import sharding

    if jax.device_count() < 8:
        pytest.skip("needs the 8 simulated devices that tests/conftest.py sets up")
    mesh = sharding.make_mesh(data=-1)
    ld = loader.Loader(data_dir, "train", seq_len=T, global_batch=16, seed=1, mesh=mesh)
    batch = next(ld)
    assert batch["inputs"].shape == (16, T)
    assert batch["inputs"].sharding.is_equivalent_to(sharding.batch_sharding(mesh), 2)
    np.testing.assert_array_equal(np.asarray(batch["targets"]), ld.local_batch_at(0)[:, 1:])
    with pytest.raises(loader.LoaderError, match="multiple of the mesh's batch shards"):
        loader.Loader(data_dir, "train", seq_len=T, global_batch=12, mesh=mesh)


def test_eval_batches_are_fixed(data_dir):
    tokens = stream(data_dir, "val")
    n_windows = (len(tokens) - 1) // T
    a = [np.asarray(b["inputs"]) for b in loader.eval_batches(data_dir, "val", T, 8, None, 5)]
    b = [np.asarray(b["inputs"]) for b in loader.eval_batches(data_dir, "val", T, 8, None, 5)]
    assert len(a) == min(5, n_windows // 8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a[0][1], tokens[T:2 * T])  # stream order, not shuffled
    everything = list(loader.eval_batches(data_dir, "val", T, 8, None, None))
    assert len(everything) == n_windows // 8


def test_clear_errors(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="prepared data folder"):
        loader.Loader(tmp_path / "nothing", seq_len=T, global_batch=8)
    with pytest.raises(loader.LoaderError, match="no split 'test'"):
        loader.Loader(data_dir, "test", seq_len=T, global_batch=8)
    with pytest.raises(loader.LoaderError, match="too few for one window"):
        loader.Loader(data_dir, "val", seq_len=10**7, global_batch=8)
    with pytest.raises(loader.LoaderError, match="multiple of the process count 2"):
        loader.Loader(data_dir, seq_len=T, global_batch=5, process_index=0, process_count=2)
