"""notebooks/06_preferences_and_rl.ipynb runs top to bottom in its fast setting: the whole
pipeline, tiny, live (base, SFT, pairs, DPO, reward model, RL, the report card)."""

import json

import pytest

from tests.notebook_runner import run_notebook


@pytest.mark.slow
def test_preferences_notebook_runs_the_pipeline_live(tmp_path, monkeypatch):
    outputs, plotted = run_notebook("06_preferences_and_rl.ipynb", tmp_path, monkeypatch)
    out = tmp_path / "runs" / "nb-pipeline"
    assert "results from runs/nb-pipeline" in outputs
    for stage in ("base", "sft", "dpo", "rm", "rl"):
        assert (out / stage / "summary.json").is_file(), stage
    card = (out / "report.md").read_text()
    for stage in ("| pretrain |", "| sft |", "| dpo |", "| rm |", "| rl |"):
        assert stage in card
    results = json.loads((out / "results.json").read_text())
    # The same held-out problems for every stage: the paired gain of RL over SFT is exactly
    # the difference of their accuracies.
    acc = results["accuracy"]
    assert results["rl"]["gain_over_sft"]["diff"] == pytest.approx(
        acc["rl"]["accuracy"] - acc["sft"]["accuracy"])
    assert "RL gain over SFT" in outputs and "reward_model:" in outputs
    assert plotted
