"""Packing conversations into rows: whole conversations, segments, masks and saved state."""

import numpy as np
import pytest

from train import packing


def test_rows_keep_conversations_whole_and_segmented():
    a = ([1, 2, 3], [0, 1, 1])
    b = ([4, 5], [0, 1])
    c = ([6, 7, 8, 9], [0, 0, 1, 1])
    rows = packing.pack([a, b, c], row_len=6)
    assert rows["tokens"].tolist() == [[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 0, 0]]
    assert rows["segment_ids"].tolist() == [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]]
    assert rows["positions"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]
    assert rows["mask"].tolist() == [[0, 1, 1, 0, 1, 0], [0, 0, 1, 1, 0, 0]]


def test_targets_never_cross_a_conversation_or_enter_padding():
    batch = packing.to_batch(packing.pack([([1, 2, 3], [1, 1, 1]), ([4, 5], [1, 1])], 6))
    assert batch["inputs"].tolist() == [[1, 2, 3, 4, 5]]
    assert batch["targets"].tolist() == [[2, 3, 4, 5, 0]]
    # 3 -> 4 crosses into the next conversation, 5 -> pad is padding: neither is learnt.
    assert batch["loss_mask"].tolist() == [[1, 1, 0, 1, 0]]


def test_too_long_conversation_is_refused_with_its_index():
    with pytest.raises(packing.PackingError, match="example 1: 7 tokens"):
        packing.pack([([1], [1]), (list(range(7)), [1] * 7)], row_len=6)


def test_state_resumes_the_same_batches():
    examples = [([i, i + 1, i + 2], [0, 1, 1]) for i in range(0, 60, 3)]
    it = packing.PackedBatches(examples, batch_size=2, row_len=7, seed=3)
    for _ in range(5):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(6)]
    again = packing.PackedBatches(examples, batch_size=2, row_len=7, seed=3)
    again.set_state(state)
    for want in expected:
        got = next(again)
        for k in want:
            assert np.array_equal(got[k], want[k])


def test_epochs_reshuffle_and_cover_every_conversation():
    examples = [([100 + i], [1]) for i in range(10)]
    it = packing.PackedBatches(examples, batch_size=4, row_len=3, seed=0)
    n = it.batches_per_epoch()
    def epoch():
        batches = [next(it) for _ in range(n)]
        return np.concatenate([np.concatenate([b["inputs"], b["targets"][:, -1:]], 1)
                               for b in batches]).ravel()

    epoch0, epoch1 = epoch(), epoch()
    assert sorted(set(epoch0) - {0}) == sorted(set(epoch1) - {0}) == list(range(100, 110))
    assert not np.array_equal(epoch0, epoch1)
