"""notebooks/01_pretrain.ipynb runs top to bottom (in its fast setting: a tiny model, 20 steps)."""

import nbformat
import pytest
from nbclient import NotebookClient

from tests.train_helpers import REPO


@pytest.mark.slow
def test_pretrain_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TWOFILES_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    nb = nbformat.read(REPO / "notebooks" / "01_pretrain.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "bits/byte" in outputs and "ROMEO:" in outputs
    assert (tmp_path / "runs" / "notebook-fast" / "metrics.jsonl").is_file()
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
