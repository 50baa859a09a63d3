"""notebooks/01_pretrain.ipynb runs top to bottom (in its fast setting: a tiny model, 20 steps)."""

import pytest

from tests.notebook_runner import run_notebook


@pytest.mark.slow
def test_pretrain_notebook_runs(tmp_path, monkeypatch):
    outputs, plotted = run_notebook("01_pretrain.ipynb", tmp_path, monkeypatch)
    assert "bits/byte" in outputs and "ROMEO:" in outputs
    assert (tmp_path / "runs" / "notebook-fast" / "metrics.jsonl").is_file()
    assert plotted
