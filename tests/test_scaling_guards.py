"""Scaling commands refuse what would give a meaningless fit or overwrite a user's files."""
import pytest

from scaling import records, sweep
from scaling.__main__ import main
from scaling.records import RecordError, RunRecord


def _csv(tmp_path, runs, name="runs.csv"):
    path = str(tmp_path / name)
    records.write_csv(path, runs)
    return path


def test_a_single_model_size_is_refused_not_fitted(tmp_path, capsys):
    """One N leaves A and alpha free: the fit would say "converged" with zero-width
    intervals and extrapolate."""
    one_size = [RunRecord(params=1e6, tokens=t, loss=3.0 + 1e9 / t) for t in
                (1e9, 2e9, 4e9, 8e9, 1.6e10, 3.2e10)]
    with pytest.raises(RecordError, match=r"all 6 runs have the same model size N \(1e\+06\)"):
        records.arrays(one_size)
    out = tmp_path / "fit.json"
    assert main(["fit", _csv(tmp_path, one_size), "--json", str(out), "--bootstrap", "0"]) == 2
    assert "A/N^alpha cannot be fitted" in capsys.readouterr().err
    assert not out.exists()
    one_d = [RunRecord(params=n, tokens=1e9, loss=3.0 + 1e3 / n) for n in
             (1e6, 2e6, 4e6, 8e6, 1.6e7)]
    with pytest.raises(RecordError, match="same token count D"):
        records.arrays(one_d)


def test_fit_refuses_to_write_over_its_input(tmp_path, capsys):
    runs = [RunRecord(params=1e6 * i, tokens=1e9 / i, loss=3.0 + 0.1 * i) for i in range(1, 7)]
    path = _csv(tmp_path, runs)
    before = open(path).read()
    assert main(["fit", path, "--json", path]) == 2
    assert "--json" in capsys.readouterr().err and open(path).read() == before


def test_an_unwritable_output_names_the_users_path(tmp_path):
    with pytest.raises(OSError) as e:
        records.write_json("/sys/fit.json", {"a": 1})
    assert "cannot write /sys/fit.json" in str(e.value) and ".tmp" not in str(e.value)


def test_sweep_refuses_a_directory_that_is_not_a_sweep(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "records.csv").write_text("my own records\n")
    with pytest.raises(sweep.SweepError, match="holds files but no plan.json"):
        sweep.run_sweep(out, [1e11], config="tiny", runs_per_budget=3, log=lambda *a: None)
    assert sorted(p.name for p in out.iterdir()) == ["records.csv"]


def test_a_bootstrap_replica_that_runs_off_is_an_interval_not_a_crash():
    from scaling.kaplan import KaplanLaw

    law = KaplanLaw.from_x([1e4, 5.0, 0.1, 0.2])  # exp(1e4) overflows a float
    assert law.N_c == float("inf") and law.D_c > 0
