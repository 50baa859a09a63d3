"""notebooks/03_scaling_laws.ipynb runs top to bottom in its fast setting (small start grid, 20
resamples) on the CPU sweep recorded in scaling/results/cpu_sweep.json."""
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_scaling_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TWOFILES_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    nb = nbformat.read(REPO / "notebooks" / "03_scaling_laws.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "compute-optimal at C" in outputs          # the fit's summary
    assert "mean absolute relative error" in outputs  # the held-out budget was predicted
    assert "numerical check" in outputs               # the plan, checked numerically
    assert "steps=" in outputs                         # the next sweep's layout
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
