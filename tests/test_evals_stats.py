"""evals.stats against published values and independent references (scipy, math.comb)."""

import itertools
import math

import numpy as np
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


# paired_bootstrap: a difference of accuracies on the same problems


def test_paired_bootstrap_of_a_constant_gain_is_that_gain_exactly():
    # Every problem gains exactly 0.25: every resample's mean difference is 0.25.
    a = [0.0, 0.25, 0.5, 0.75] * 5
    b = [x + 0.25 for x in a]
    out = stats.paired_bootstrap(a, b, resamples=500)
    assert out["diff"] == pytest.approx(0.25)
    assert out["ci"] == pytest.approx([0.25, 0.25])
    assert out["p_le_0"] == 0.0 and out["b_only"] == 20 and out["a_only"] == 0


def test_paired_bootstrap_hand_case_two_problems():
    # a = [0, 0], b = [1, 0]: a resample of two problems holds the gained one 0, 1 or 2 times
    # with chances 1/4, 1/2, 1/4, so the mean gain is 0, 0.5 or 1 and P(<= 0) = 1/4.
    out = stats.paired_bootstrap([0, 0], [1, 0], resamples=40_000, seed=1)
    assert out["diff"] == 0.5
    assert out["p_le_0"] == pytest.approx(0.25, abs=0.01)
    assert out["ci"] == [0.0, 1.0]


def test_paired_bootstrap_matches_the_normal_interval_of_the_mean_difference():
    # For many problems the bootstrap distribution of a mean is close to normal with the
    # sample's standard error (central limit theorem): compare with scipy's normal quantiles.
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2, 400).astype(float)
    b = np.where(rng.random(400) < 0.3, 1.0, a)  # 30% of problems flip to solved
    d = b - a
    se = d.std(ddof=0) / math.sqrt(len(d))
    z = scipy_stats.norm.ppf(0.975)
    out = stats.paired_bootstrap(a, b, resamples=20_000, seed=3)
    assert out["diff"] == pytest.approx(d.mean())
    assert out["ci"] == pytest.approx([d.mean() - z * se, d.mean() + z * se], abs=0.01)


def test_pairing_shows_a_gain_that_two_separate_intervals_cannot():
    # 100 problems: B solves everything A solves plus 12 more. The two Wilson intervals
    # (0.40 vs 0.52 of 100) overlap, but on the same problems the gain never goes below 0.
    a = [1.0] * 40 + [0.0] * 60
    b = [1.0] * 52 + [0.0] * 48
    assert stats.wilson(40, 100)[1] > stats.wilson(52, 100)[0]
    out = stats.paired_bootstrap(a, b)
    assert out["ci"][0] > 0.05 and out["p_le_0"] == 0.0


def test_paired_bootstrap_refuses_unpaired_scores():
    with pytest.raises(ValueError, match="equally long"):
        stats.paired_bootstrap([1, 0, 1], [1, 0])
