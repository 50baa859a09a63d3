"""notebooks/02_two_files.ipynb runs top to bottom in its fast setting (a few tokens each)."""

import pytest

from tests.notebook_runner import run_notebook


@pytest.mark.slow
def test_two_files_notebook_runs(tmp_path, monkeypatch):
    outputs, _ = run_notebook("02_two_files.ipynb", tmp_path, monkeypatch)
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in outputs
    assert "T=1.2:" in outputs and "decode" in outputs
    assert "llama.cpp gives the same greedy tokens: True" in outputs
    assert "run.c gives the same greedy tokens: True" in outputs
