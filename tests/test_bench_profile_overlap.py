"""benchmarks/train_step_profile.py's wall-time accounting where XLA overlaps ops.

XLA:CPU runs independent thunks at the same time, so summed op durations overstate the step;
the profile's covered wall time and fair shares are checked here on hand-made timelines.
"""

import pytest

from benchmarks.train_step_profile import busy_us, shared_us


def _ev(name, ts, dur):
    return {"name": name, "ts": ts, "dur": dur}


def test_busy_time_counts_overlap_once_and_skips_gaps():
    # a: 0-10, b: 5-15 (overlap 5), gap 15-20, c: 20-30, d inside c: 22-24
    events = [_ev("a", 0, 10), _ev("b", 5, 10), _ev("c", 20, 10), _ev("d", 22, 2)]
    assert busy_us(events) == 25


def test_shares_split_overlapping_time_evenly_and_add_up_to_busy_time():
    events = [_ev("a", 0, 10), _ev("b", 5, 10), _ev("c", 20, 10), _ev("d", 22, 2)]
    share = shared_us(events)
    # a alone 0-5, with b 5-10; b alone 10-15; c alone 20-22 and 24-30, with d 22-24
    assert share["a"] == pytest.approx(7.5)
    assert share["b"] == pytest.approx(7.5)
    assert share["c"] == pytest.approx(9.0)
    assert share["d"] == pytest.approx(1.0)
    assert sum(share.values()) == pytest.approx(busy_us(events))


def test_repeated_op_names_accumulate():
    events = [_ev("dot", 0, 4), _ev("dot", 10, 6), _ev("exp", 12, 2)]
    share = shared_us(events)
    assert share["dot"] == pytest.approx(4 + 4 + 1)
    assert share["exp"] == pytest.approx(1)
