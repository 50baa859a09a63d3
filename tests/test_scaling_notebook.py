"""notebooks/03_scaling_laws.ipynb runs top to bottom in its fast setting (small start grid, 20
resamples) on the CPU sweep recorded in scaling/results/cpu_sweep.json."""

from tests.notebook_runner import run_notebook


def test_scaling_notebook_runs(tmp_path, monkeypatch):
    outputs, plotted = run_notebook("03_scaling_laws.ipynb", tmp_path, monkeypatch)
    assert "compute-optimal at C" in outputs          # the fit's summary
    assert "mean absolute relative error" in outputs  # the held-out budget was predicted
    assert "numerical check" in outputs               # the plan, checked numerically
    assert "steps=" in outputs                         # the next sweep's layout
    assert plotted
