"""The closed forms of L(N, D) = E + A/N^alpha + B/D^beta against direct numerical minimisation."""
import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from scaling.law import Law

# Published laws (Hoffmann et al. 2022 eq. 10; Besiroglu et al. 2024 Table 1) plus one with
# unequal exponents, so a and b differ from 1/2.
LAWS = [Law(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
        Law(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658),
        Law(E=3.0, A=50.0, B=9000.0, alpha=0.6, beta=0.2)]


def brute_force_n(law, compute):
    """argmin over N of L(N, C/6N), by scipy's bounded Brent search in log N: no closed form."""
    f = lambda x: law.loss(math.exp(x), compute / (6 * math.exp(x)))
    xs = np.linspace(0, 80, 4001)  # coarse scan first, so the search cannot miss the basin
    x0 = xs[np.argmin([f(x) for x in xs])]
    res = minimize_scalar(f, bounds=(x0 - 0.05, x0 + 0.05), method="bounded",
                          options={"xatol": 1e-11})
    return math.exp(res.x)


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("compute", [1e18, 5.76e23, 1e27])
def test_closed_form_optimum_matches_numerical_minimum(law, compute):
    n_opt = law.optimal_n(compute)
    assert n_opt == pytest.approx(brute_force_n(law, compute), rel=1e-6)
    assert law.optimal_d(compute) * n_opt * 6 == pytest.approx(compute, rel=1e-12)
    # The closed-form optimal loss is the loss of the optimal allocation...
    assert law.optimal_loss(compute) == pytest.approx(
        float(law.loss(n_opt, law.optimal_d(compute))), rel=1e-12)
    # ...and no other split of the same compute does better.
    for f in (0.5, 0.9, 1.1, 2.0):
        assert law.loss(n_opt * f, compute / (6 * n_opt * f)) > law.optimal_loss(compute)


@pytest.mark.parametrize("law", LAWS)
def test_compute_for_loss_inverts_optimal_loss(law):
    for compute in (1e19, 1e22, 1e25):
        target = law.optimal_loss(compute)
        assert law.compute_for_loss(target) == pytest.approx(compute, rel=1e-9)


def test_exponents_and_tokens_per_param():
    law = LAWS[1]
    assert law.a == pytest.approx(0.3658 / (0.3478 + 0.3658))
    assert law.a + law.b == pytest.approx(1.0)
    # Doubling compute multiplies N_opt by 2^a.
    assert law.optimal_n(2e23) / law.optimal_n(1e23) == pytest.approx(2 ** law.a)


def test_unreachable_target_and_bad_compute_are_refused():
    law = LAWS[0]
    with pytest.raises(ValueError, match="irreducible loss E"):
        law.compute_for_loss(1.5)
    with pytest.raises(ValueError, match="compute must be positive"):
        law.optimal_n(-1.0)
    with pytest.raises(ValueError, match="cannot plan"):
        Law(E=1.0, A=1.0, B=1.0, alpha=-0.1, beta=0.3).optimal_n(1e20)
    with pytest.raises(ValueError, match="missing"):
        Law.from_dict({"E": 1.0, "A": 2.0})
