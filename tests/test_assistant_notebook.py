"""notebooks/04_assistant.ipynb runs top to bottom (fast setting: a tiny base, a few SFT steps,
one LoRA step on SmolLM2)."""

import pytest

from tests.notebook_runner import run_notebook


@pytest.mark.slow
def test_assistant_notebook_runs(tmp_path, monkeypatch):
    outputs, plotted = run_notebook("04_assistant.ipynb", tmp_path, monkeypatch)
    assert "validation loss on assistant tokens" in outputs
    assert "learnt: " in outputs and "<|tool_call_start|>" in outputs
    assert "LoRA: " in outputs and "smollm2-quill.gguf" in outputs
    assert (tmp_path / "runs" / "nb-arith" / "summary.json").is_file()
    assert plotted
