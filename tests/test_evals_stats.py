"""evals.stats against published values and independent references (scipy, math.comb)."""

import itertools
import math

import pytest
from scipy import stats as scipy_stats

from evals import stats


def test_wilson_matches_the_published_interval_for_8_of_10():
    lo, hi = stats.wilson(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)


@pytest.mark.parametrize("k,n", [(0, 1), (0, 20), (3, 7), (20, 20), (57, 100), (999, 1000)])
def test_wilson_matches_scipy(k, n):
    ref = scipy_stats.binomtest(k, n).proportion_ci(method="wilson")
    assert stats.wilson(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_wilson_does_not_collapse_at_the_ends():
    lo, hi = stats.wilson(0, 10)
    assert lo == 0.0 and hi > 0.25  # 0/10 does not prove the rate is 0
    lo, hi = stats.wilson(10, 10)
    assert hi == 1.0 and lo < 0.75


def test_wilson_refuses_impossible_counts():
    with pytest.raises(ValueError, match="n must be"):
        stats.wilson(0, 0)
    with pytest.raises(ValueError, match="successes"):
        stats.wilson(11, 10)


def test_pass_at_k_by_hand():
    assert stats.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert stats.pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)  # C(7,2)/C(10,2)
    assert stats.pass_at_k(5, 0, 3) == 0.0
    assert stats.pass_at_k(5, 3, 3) == 1.0  # only 2 wrong: any 3 include a right one
    assert stats.pass_at_k(4, 4, 4) == 1.0


@pytest.mark.parametrize("n,c,k", [(20, 1, 1), (20, 7, 5), (200, 13, 100), (64, 63, 2)])
def test_pass_at_k_equals_the_binomial_definition(n, c, k):
    assert stats.pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k),
                                                     rel=1e-12, abs=1e-15)


def test_pass_at_k_is_the_chance_that_a_random_k_subset_holds_a_correct_sample():
    samples = [1, 0, 0, 1, 0, 0]
    subsets = list(itertools.combinations(samples, 3))
    assert stats.pass_at_k(6, 2, 3) == pytest.approx(sum(map(any, subsets)) / len(subsets))


def test_pass_at_k_of_a_thousand_samples_does_not_overflow():
    assert stats.pass_at_k(2000, 1, 1000) == pytest.approx(0.5)


def test_majority_at_k():
    answers, scores = ["8", "7", "7", None, "8", "8"], [0, 1, 1, 0, 0, 0]
    assert stats.majority_at_k(answers, scores, 1) == 0.0
    assert stats.majority_at_k(answers, scores, 3) == 1.0  # 7 twice against 8 once
    assert stats.majority_at_k(answers, scores, 4) == 1.0  # None does not vote
    assert stats.majority_at_k(answers, scores, 5) == 0.0  # 2-2: the first seen, 8, wins
    assert stats.majority_at_k(answers, scores, 6) == 0.0
    assert stats.majority_at_k([None, None], [0, 0], 2) == 0.0


def test_ks_up_to():
    assert stats.ks_up_to(1) == [1]
    assert stats.ks_up_to(8) == [1, 2, 4, 8]
    assert stats.ks_up_to(6) == [1, 2, 4, 6]
