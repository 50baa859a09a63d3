"""Runs a notebook top to bottom in its fast setting, as the notebook tests need it."""

import os
import pathlib

import nbformat
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_notebook(name: str, workdir: pathlib.Path, monkeypatch) -> tuple[str, bool]:
    """Executes notebooks/<name> in `workdir`; returns (all text output, whether a plot was shown)."""
    monkeypatch.setenv("TWOFILES_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # A notebook is a single-device user session, not the suite's 8 simulated devices.
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    return text, any("image/png" in o.get("data", {}) for o in outputs)
