"""notebooks/05_tools_and_evals.ipynb runs top to bottom (fast setting: the calculator's
refusals, one SmolLM2 tool call, an 8-problem evaluation, the committed curve and a live 4 x 4
one)."""

import pytest

from tests.notebook_runner import run_notebook


@pytest.mark.slow
def test_tools_and_evals_notebook_runs(tmp_path, monkeypatch):
    outputs, plotted = run_notebook("05_tools_and_evals.ipynb", tmp_path, monkeypatch)
    assert "4817 * 293" in outputs and "1411381" in outputs
    assert outputs.count("error: ") >= 10  # every attack in the table is refused
    assert '"tool_calls"' in outputs
    assert "95% CI" in outputs and "majority" in outputs and "oracle" in outputs
    assert (tmp_path / "nb-evals" / "live_curve.png").is_file()
    assert plotted
