"""notebooks/02_two_files.ipynb runs top to bottom in its fast setting (a few tokens each)."""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_files_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TWOFILES_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    nb = nbformat.read(REPO / "notebooks" / "02_two_files.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in outputs
    assert "T=1.2:" in outputs and "decode" in outputs
    assert "llama.cpp gives the same greedy tokens: True" in outputs
    assert "run.c gives the same greedy tokens: True" in outputs
