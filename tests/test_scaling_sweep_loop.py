"""`scaling sweep` through the real training loop: every planned run is trained by
train.pretrain on a prepared corpus, recorded as it ends, and a rerun skips finished runs and
resumes an interrupted one from its checkpoint to the same result."""
import json
import shutil

import pytest

import model
from scaling import records, sweep
from tests.train_helpers import config_dict, prepare_small_demo, write_config

pytestmark = pytest.mark.slow  # end to end: four real training runs, about 45 s

BUDGETS = [4e8, 8e8]  # tiny-preset shapes at seq 32, batch 8: about 6 to 25 steps per run


@pytest.fixture(scope="module")
def base_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep_loop")
    data = prepare_small_demo(root, max_docs=3)
    return str(write_config(root / "base.json", config_dict(data)))


def _sweep(out, config, log):
    return sweep.run_sweep(out, BUDGETS, config=config, runs_per_budget=2, spread=4.0,
                           min_steps=4, lr_width=16, progress=False, log=log)


def test_sweep_trains_records_and_resumes_through_the_loop(tmp_path, base_config, capsys):
    out = tmp_path / "sweep"
    done = _sweep(out, base_config, log=lambda *a: None)
    plan = json.loads((out / "plan.json").read_text())["runs"]
    assert [r.name for r in done] == [p["name"] for p in plan] and len(done) == 4
    back = records.read_csv(str(out / "records.csv"))
    assert [(r.name, r.params, r.tokens, r.loss) for r in back] == \
        [(r.name, r.params, r.tokens, r.loss) for r in done]
    for r, p in zip(back, plan):
        summary = json.loads((out / "runs" / r.name / "summary.json").read_text())
        assert summary["step"] == p["steps"] and r.loss == summary["val_loss"]
        cfg = json.loads((out / "runs" / r.name / "config.json").read_text())
        n = model.count_params(model.ModelConfig(**cfg["model"]))
        assert (r.params, r.non_embedding_params) == (n["params"], n["non_embedding_params"])
        # lr_width=16: a 32-wide model trains at half the base config's peak LR (1e-2).
        assert cfg["model"]["d_model"] == 32 and cfg["optim"]["lr"] == pytest.approx(5e-3)
        assert r.flops == pytest.approx(r.budget, rel=0.1)  # whole steps
        assert 0 < r.loss < 7.0  # ln(512) = 6.24 is a uniform guess; the loop really trained
    assert {r.budget for r in back} == set(BUDGETS)

    # Interrupt the last run between its last two checkpoints: no summary, no final checkpoint.
    victim = out / "runs" / done[-1].name
    (victim / "summary.json").unlink()
    steps = sorted(int(p.name) for p in (victim / "checkpoints").iterdir() if p.name.isdigit())
    shutil.rmtree(victim / "checkpoints" / str(steps[-1]))
    capsys.readouterr()
    lines = []
    again = _sweep(out, base_config, log=lines.append)
    trained = [line for line in lines if "training" in line]
    assert trained == [f"[4/4] training {done[-1].name}"]
    assert sum("already finished" in line for line in lines) == 3
    assert f"resuming {victim} from step {steps[-2]}" in capsys.readouterr().out
    # The loop's resume is exact, so the interrupted run ends where it ended before.
    assert [r.loss for r in again] == [r.loss for r in done]
    assert len(records.read_csv(str(out / "records.csv"))) == 4
