"""Packing whole conversations into fixed-length rows, and the epochs of batches over them.

A row holds several conversations end to end; each is a segment with its own positions from 0,
and attention never crosses segments (`model.forward(segment_ids_BT=...)`), so a packed row
trains exactly as its conversations would one by one. A conversation is never split: one that
does not fit in what is left of a row starts the next row. Padding has segment 0 and mask 0.

Targets are the next token of the same segment: the last token of a conversation predicts
nothing (its target is masked), so a row's boundary is never learnt.
"""

from __future__ import annotations

import numpy as np


class PackingError(ValueError):
    """A conversation that cannot be packed; the message says which and what to do."""


def pack(examples, row_len: int, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Rows [R, row_len] of `tokens`, `mask` (1 = learn this token), `segment_ids` (1, 2, ...
    within a row; 0 = padding) and `positions`, from (ids, mask) pairs in the given order."""
    rows, row, seg = [], [], 0

    def close():
        nonlocal row, seg
        if row:
            rows.append(row)
        row, seg = [], 0

    for i, (ids, mask) in enumerate(examples):
        if len(ids) != len(mask):
            raise PackingError(f"example {i}: {len(ids)} ids but {len(mask)} mask values")
        if len(ids) > row_len:
            raise PackingError(f"example {i}: {len(ids)} tokens do not fit in a row of "
                               f"{row_len}; truncate it or raise the sequence length")
        if len(row) + len(ids) > row_len:
            close()
        seg += 1
        row.extend((t, m, seg, p) for p, (t, m) in enumerate(zip(ids, mask)))
    close()
    out = np.zeros((len(rows), row_len, 4), np.int32)
    out[:, :, 0] = pad_id
    for r, row in enumerate(rows):
        out[r, :len(row)] = row
    return dict(zip(("tokens", "mask", "segment_ids", "positions"), np.moveaxis(out, -1, 0)))


def to_batch(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Next-token batch of packed rows: inputs, targets, loss_mask, segment_ids, positions
    ([B, row_len - 1]); a target counts only where it is learnt and in its input's segment."""
    seg = rows["segment_ids"]
    same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    return {"inputs": rows["tokens"][:, :-1], "targets": rows["tokens"][:, 1:],
            "loss_mask": (rows["mask"][:, 1:] * same).astype(np.int32),
            "segment_ids": seg[:, :-1], "positions": rows["positions"][:, :-1]}


class PackedBatches:
    """Endless batches of packed rows: each epoch shuffles the conversations by (seed, epoch),
    packs them, and yields `batch_size` rows at a time (the last batch of an epoch is filled
    with empty rows, mask 0). Its state (epoch, batch) is saved in every checkpoint, so a
    resumed run sees exactly the batches it would have."""

    def __init__(self, examples, batch_size: int, row_len: int, seed: int, *,
                 shuffle: bool = True, pad_id: int = 0):
        if not examples:
            raise PackingError("no conversations to train on")
        self.examples, self.batch_size, self.row_len = list(examples), batch_size, row_len
        self.seed, self.shuffle, self.pad_id = seed, shuffle, pad_id
        self.epoch, self.batch = 0, 0
        self._rows_epoch, self._rows = None, None
        pack(self.examples, row_len, pad_id)  # refuse what cannot be packed before training

    def rows(self, epoch: int) -> dict[str, np.ndarray]:
        if self._rows_epoch != epoch:
            order = np.arange(len(self.examples))
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(order)
            self._rows = pack([self.examples[i] for i in order], self.row_len, self.pad_id)
            self._rows_epoch = epoch
        return self._rows

    def batches_per_epoch(self) -> int:
        return -(-len(self.rows(0)["tokens"]) // self.batch_size)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rows = self.rows(self.epoch)
        n = len(rows["tokens"])
        lo = self.batch * self.batch_size
        take = {k: v[lo:lo + self.batch_size] for k, v in rows.items()}
        short = self.batch_size - len(take["tokens"])
        if short:
            take = {k: np.concatenate([v, np.zeros((short, self.row_len), v.dtype)])
                    for k, v in take.items()}
        self.batch += 1
        if self.batch * self.batch_size >= n:
            self.epoch, self.batch = self.epoch + 1, 0
        return to_batch(take)

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def set_state(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
