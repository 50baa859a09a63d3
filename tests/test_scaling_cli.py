"""`python -m scaling fit` and `plan` on an IsoFLOP sweep drawn from a known law; approach 2
against the closed form; Kaplan's form recovered; bad input refused with a clear message."""
import json
import math

import numpy as np
import pytest

from scaling import kaplan, records
from scaling.__main__ import main
from scaling.law import Law
from scaling.records import RunRecord

TRUE = Law(E=1.7, A=400.0, B=1200.0, alpha=0.34, beta=0.31)
BUDGETS = (1e18, 1e19, 1e20, 1e21)


def isoflop_runs(noise=0.001, seed=0):
    """8 sizes per budget spread 16x around the law's optimum, loss with 0.1% noise."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in BUDGETS:
        for n in TRUE.optimal_n(c) * np.geomspace(0.25, 4.0, 8):
            d = c / (6 * n)
            loss = float(TRUE.loss(n, d)) * math.exp(noise * rng.standard_normal())
            runs.append(RunRecord(params=n, tokens=d, loss=loss, flops=c, budget=c))
    return runs


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    csv, out, png = str(tmp / "runs.csv"), str(tmp / "fit.json"), str(tmp / "fit.png")
    records.write_csv(csv, isoflop_runs())
    assert main(["fit", csv, "--json", out, "--plot", png, "--bootstrap", "64",
                 "--grid", "coarse", "--budget", "1e22"]) == 0
    with open(out) as f:
        return json.load(f), png, out


def test_fit_json_has_parameters_intervals_and_the_split(fitted):
    fit, png, _ = fitted
    # On an IsoFLOP design N and D move together, so E, A and B trade off; the exponents and
    # the allocation they imply are what the data pins down.
    for k, tol in (("E", 0.05), ("A", 0.25), ("B", 0.25), ("alpha", 0.04), ("beta", 0.04)):
        assert fit[k] == pytest.approx(getattr(TRUE, k), rel=tol), k
        lo, hi = fit["ci"][k]
        assert lo <= fit[k] <= hi
    assert fit["n_points"] == 32 and fit["budget"] == 1e22 and fit["converged"]
    assert fit["a"] == pytest.approx(TRUE.a, abs=0.02)
    assert fit["tokens_per_param"] == pytest.approx(TRUE.tokens_per_param(1e22), rel=0.3)
    assert fit["ci"]["tokens_per_param"][0] < fit["tokens_per_param"] < fit["ci"]["tokens_per_param"][1]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_isoflop_minima_follow_the_closed_form(fitted):
    """Approach 2 reads the optimum off each budget's parabola; on data from a known law its
    exponent must match the law's a = beta / (alpha + beta) and its minima the closed form."""
    iso = fitted[0]["isoflop"]
    assert iso["a"] == pytest.approx(TRUE.a, abs=0.03)
    assert iso["a"] + iso["b"] == pytest.approx(1.0, abs=0.05)
    for p in iso["profiles"]:
        assert p["N_opt"] == pytest.approx(TRUE.optimal_n(p["compute"]), rel=0.25)
    assert iso["ci"]["a"][0] <= iso["a"] <= iso["ci"]["a"][1]


def test_plan_prints_the_closed_form_and_its_numerical_check(fitted, capsys):
    fit, _, path = fitted
    law = Law.from_dict(fit)
    assert main(["plan", "--fit", path, "--compute", "1e23", "--target-loss", "2.1"]) == 0
    text = capsys.readouterr().out
    assert f"{law.optimal_n(1e23):.4g}" in text
    assert f"{law.compute_for_loss(2.1):.4g}" in text
    assert "closed form off by" in text
    assert main(["plan", "--fit", path, "--compute", "1e23", "--target-loss", "1.0"]) == 2
    assert "irreducible loss" in capsys.readouterr().err


def test_kaplan_form_is_recovered():
    """Noise-free data from Kaplan et al.'s eq. 1.5 with their published constants
    (alpha_N = 0.076, alpha_D = 0.095, N_c = 8.8e13, D_c = 5.4e13)."""
    truth = kaplan.KaplanLaw(N_c=8.8e13, D_c=5.4e13, alpha_N=0.076, alpha_D=0.095)
    rng = np.random.default_rng(3)
    n = np.exp(rng.uniform(np.log(1e6), np.log(1e10), 40))
    d = np.exp(rng.uniform(np.log(1e8), np.log(1e12), 40))
    out = kaplan.fit(n, d, truth.loss(n, d))
    for k in ("N_c", "D_c", "alpha_N", "alpha_D"):
        assert out[k] == pytest.approx(getattr(truth, k), rel=1e-3), k


def test_bad_input_gets_a_clear_error_and_no_output(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("params,tokens,loss\n1e6,2e7,3.0\n2e6,-1,3.0\n")
    out = tmp_path / "fit.json"
    assert main(["fit", str(bad), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv line 3" in err and "'tokens' must be positive" in err
    few = tmp_path / "few.csv"
    few.write_text("params,tokens,loss\n" + "".join(f"{i}e6,2e7,3.0\n" for i in range(1, 4)))
    assert main(["fit", str(few), "--json", str(out)]) == 2
    assert "3 run(s) given" in capsys.readouterr().err
    assert not out.exists()


def test_fit_reads_a_csv_with_other_column_names(tmp_path):
    src = tmp_path / "other.csv"
    src.write_text("Model Size,Training FLOP,loss\n" + "".join(
        f"{r.params},{r.flops},{r.loss}\n" for r in isoflop_runs()))
    out = tmp_path / "fit.json"
    assert main(["fit", str(src), "--json", str(out), "--bootstrap", "4", "--grid", "coarse",
                 "--no-kaplan", "--column", "params=Model Size",
                 "--column", "flops=Training FLOP"]) == 0
    with open(out) as f:
        fit = json.load(f)
    assert fit["n_points"] == len(BUDGETS) * 8
    assert fit["alpha"] == pytest.approx(TRUE.alpha, rel=0.1)
    with pytest.raises(SystemExit, match="OURS=THEIRS"):
        main(["fit", str(src), "--json", str(out), "--column", "size=Model Size"])
