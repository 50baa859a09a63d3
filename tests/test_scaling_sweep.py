"""The sweep planner lays out real model shapes at the planned compute; the sweep records each
finished run and, rerun, trains only what is not finished. The training loop is replaced here by
a stand-in that keeps its contract (summary.json with step, tokens, val_loss, params, flops);
the real loop's own resume is tested in tests/test_train_resume.py."""
import json

import pytest

import model
from scaling import records, sweep
from scaling.law import Law
from scaling.plan import family, plan
from train import config as train_config

LAW = Law(E=2.0, A=50.0, B=300.0, alpha=0.3, beta=0.3)


def test_plan_spends_each_budget_on_distinct_real_shapes():
    base = train_config.load("tiny")
    runs = plan(base.model, [1e11, 1e12], batch_size=32, seq_len=64, runs_per_budget=4)
    assert len(runs) == 8
    for c in (1e11, 1e12):
        group = [r for r in runs if r.budget == c]
        sizes = [r.params for r in group]
        assert sizes == sorted(set(sizes)) and len(sizes) == 4
        for r in group:
            cfg = train_config.apply_overrides(base, list(r.overrides))
            assert model.count_params(cfg.model)["params"] == r.params
            fpt = model.flops_per_token(cfg.model, seq_len=64, training=True)
            assert cfg.steps * 32 * 64 == r.tokens
            assert fpt * r.tokens == pytest.approx(c, rel=0.03)  # steps are whole numbers
    # Every shape keeps the preset's vocabulary, head size and grouped-query ratio.
    for cfg in family(base.model):
        assert (cfg.vocab_size, cfg.head_dim) == (base.model.vocab_size, base.model.head_dim)
        assert cfg.n_heads // cfg.n_kv_heads == base.model.n_heads // base.model.n_kv_heads
    with pytest.raises(ValueError, match="affords only"):
        plan(base.model, [1e6], batch_size=32, seq_len=64)


def test_width_lr_rule_reaches_each_runs_config():
    """With lr_width, a run's config trains at base_lr * lr_width / d_model when wider than
    lr_width, at base_lr otherwise; the shape the plan names is the shape the config builds."""
    base, runs = sweep.make_plan("tiny", [1e11, 1e12], runs_per_budget=3, lr_width=64)
    assert {r.d_model for r in runs} & {d for d in range(65, 1024)}, "no run wider than 64"
    for r in runs:
        cfg = sweep.run_config(base, r)
        assert (cfg.model.d_model, cfg.model.n_layers) == (r.d_model, r.n_layers)
        expected = base.optim.lr * min(1.0, 64 / r.d_model)
        assert cfg.optim.lr == pytest.approx(expected, rel=1e-5)


@pytest.fixture
def fake_loop(monkeypatch):
    """A stand-in for train.pretrain.run with the contract's outputs; loss from LAW."""
    calls = []

    def run(cfg, out_dir, *, force=False, progress=True):
        calls.append(str(out_dir))
        counts = model.count_params(cfg.model)
        tokens = cfg.steps * cfg.data.batch_size * cfg.seq_len
        summary = {"step": cfg.steps, "tokens": tokens, "params": counts["params"],
                   "non_embedding_params": counts["non_embedding_params"],
                   "flops": model.flops_per_token(cfg.model, seq_len=cfg.seq_len) * tokens,
                   "val_loss": float(LAW.loss(counts["params"], tokens)), "wall_s": 0.1}
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "summary.json").write_text(json.dumps(summary))
        return summary

    from train import pretrain
    monkeypatch.setattr(pretrain, "run", run)
    return calls


def test_sweep_records_runs_and_resumes(tmp_path, fake_loop):
    out = tmp_path / "sweep"
    kw = dict(config="tiny", runs_per_budget=3, overrides=["data.batch_size=32"], log=lambda *a: None)
    done = sweep.run_sweep(out, [1e11, 3e11], **kw)
    assert len(done) == len(fake_loop) == 6
    back = records.read_csv(str(out / "records.csv"))
    assert [r.name for r in back] == [r.name for r in done]
    assert {r.budget for r in back} == {1e11, 3e11}
    for r in back:
        assert r.loss == pytest.approx(float(LAW.loss(r.params, r.tokens)))
        assert r.flops == pytest.approx(r.budget, rel=0.03)
    # A rerun trains nothing; a run whose summary is missing (interrupted) is trained again.
    assert len(sweep.run_sweep(out, [1e11, 3e11], **kw)) == 6 and len(fake_loop) == 6
    victim = out / "runs" / done[2].name / "summary.json"
    victim.unlink()
    sweep.run_sweep(out, [1e11, 3e11], **kw)
    assert fake_loop[6:] == [str(victim.parent)]
    # The directory belongs to its plan: other budgets go elsewhere.
    with pytest.raises(sweep.SweepError, match="different plan"):
        sweep.run_sweep(out, [1e12], **kw)


def test_scaling_imports_model_and_train_but_never_infer():
    import subprocess
    import sys
    code = ("import sys, scaling.__main__, scaling.analysis, scaling.sweep, scaling.plots\n"
            "scaling.sweep.make_plan('tiny', [1e11])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'infer', 'model', 'train'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['model', 'train']"
