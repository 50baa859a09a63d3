"""The training race's paired speed ratio (benchmarks/train_throughput.py): drift shared by a
round cancels, and the interval is the t-interval of the log ratios."""

import math

import pytest

from benchmarks.train_throughput import paired_ratio


def test_drift_shared_by_a_round_cancels():
    # The machine slows 4x over the run; in every round the variant takes half the reference's time.
    mid, lo, hi = paired_ratio([1.0, 2.0, 4.0], [0.5, 1.0, 2.0])
    assert (mid, lo, hi) == pytest.approx((2.0, 2.0, 2.0))


def test_interval_is_the_t_interval_of_log_ratios():
    # Ratios 2 and 4: mean log = ln(2 * sqrt 2), sd = ln 2 / sqrt 2, t(0.975, 1 dof) = 12.7062.
    mid, lo, hi = paired_ratio([2.0, 4.0], [1.0, 1.0])
    half = 12.7062047 * (math.log(2) / math.sqrt(2)) / math.sqrt(2)
    assert mid == pytest.approx(2 * math.sqrt(2))
    assert lo == pytest.approx(2 * math.sqrt(2) * math.exp(-half), rel=1e-6)
    assert hi == pytest.approx(2 * math.sqrt(2) * math.exp(half), rel=1e-6)


def test_slower_variant_reads_below_one():
    mid, lo, hi = paired_ratio([1.0, 1.1, 0.9, 1.0], [1.3, 1.4, 1.25, 1.35])
    assert lo < mid < hi < 1.0


def test_rounds_must_pair():
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])
