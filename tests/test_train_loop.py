"""The training loop in-process: the loss falls, divergence stops cleanly, bad configs and foreign
output directories are refused before anything is written, accumulation equals a full batch."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, Mesh

from model.config import ConfigError
from tests.train_helpers import config_dict, prepare_small_demo
from infer.formats import run_checkpoint
from train import checkpoint, metrics, pretrain, run_dir
from train import config as train_config
from train import state as state_lib
from train.optim import decay_mask, schedule
from train.losses import next_token_loss
from train.step import make_step


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepare_small_demo(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    """One tiny run (8 simulated devices): its directory, config and summary."""
    cfg = train_config.from_dict(config_dict(data_dir, log_every=5))
    out = tmp_path_factory.mktemp("run") / "out"
    summary = pretrain.run(cfg, out, progress=False)
    return out, cfg, summary


def test_loss_falls_on_demo_corpus(run):
    out, cfg, summary = run
    evals = [r for r in metrics.read(out) if "val_loss" in r]
    assert [r["step"] for r in evals] == [20, 40]
    # A uniform guess over the vocabulary costs ln(V) nats; training must beat it clearly and
    # keep improving between evaluations.
    assert evals[-1]["val_loss"] < math.log(cfg.model.vocab_size) - 0.75
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert summary["val_loss"] == pytest.approx(evals[-1]["val_loss"])
    # bits per byte = nats per token / ln 2 * tokens per byte of the validation split
    meta = json.loads((cfg_data(cfg) / "meta.json").read_text())
    expected_bpb = summary["val_loss"] / math.log(2) * meta["val"]["tokens"] / meta["val"]["bytes"]
    assert summary["val_bpb"] == pytest.approx(expected_bpb)


def cfg_data(cfg):
    from pathlib import Path
    return Path(cfg.data.source)


def test_run_directory_has_metrics_config_tokenizer_and_checkpoints(run):
    out, cfg, summary = run
    train_lines = [r for r in metrics.read(out) if "loss" in r]
    assert [r["step"] for r in train_lines] == list(range(5, 41, 5))
    for key in ("step", "loss", "lr", "tokens", "tokens_per_sec", "mfu"):
        assert all(key in r for r in train_lines), key
    assert train_lines[-1]["tokens"] == 40 * cfg.data.batch_size * cfg.seq_len
    assert train_config.from_dict(json.loads((out / "config.json").read_text())) == cfg
    assert (out / "tokenizer.json").is_file()
    assert list((out / "tb").glob("events.out.tfevents.*"))
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [20, 30, 40]  # every 10 steps, the last keep_checkpoints=3 kept
    for key in ("step", "tokens", "val_loss", "val_bpb", "params", "non_embedding_params",
                "flops"):
        assert key in summary
    model_cfg, params, tok_doc, _ = run_checkpoint.load_params(out)
    assert model_cfg == cfg.model
    assert tok_doc == json.loads((out / "tokenizer.json").read_text())
    _, params_20, _, _ = run_checkpoint.load_params(out / "checkpoints" / "20")
    assert not np.array_equal(params["embed"], params_20["embed"])


def test_checkpoint_copied_alone_still_loads_with_its_tokenizer(run, tmp_path):
    import shutil
    from train import tokenizer
    out, cfg, _ = run
    alone = tmp_path / "copy" / "checkpoints" / "40"
    shutil.copytree(out / "checkpoints" / "40", alone)
    model_cfg, params, tok, _ = run_checkpoint.load_params(alone)
    _, params_run, tok_run, _ = run_checkpoint.load_params(out)
    assert model_cfg == cfg.model
    assert np.array_equal(params["embed"], params_run["embed"])
    assert tok["fingerprint"] == tok_run["fingerprint"] == tokenizer.fingerprint(
        out / "tokenizer.json")


def test_rerun_of_finished_run_resumes_without_training(run):
    out, cfg, summary = run
    again = pretrain.run(cfg, out, progress=False)
    assert again["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-6)
    assert [r["step"] for r in metrics.read(out) if "loss" in r] == list(range(5, 41, 5))


def snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_different_config_is_refused_and_nothing_written(run):
    out, cfg, _ = run
    before = snapshot(out)
    changed = train_config.apply_overrides(cfg, ["optim.lr=0.02"])
    with pytest.raises(ConfigError, match=r"different config.*optim\.lr.*--force"):
        pretrain.run(changed, out, progress=False)
    assert snapshot(out) == before
    assert run_dir.plan(out, changed, force=True).clear is True


@pytest.mark.parametrize("override, message", [
    (["data.batch_size=10", "data.grad_accum=4"], "divisible"),
    (["data.seq_len=4096"], "exceeds the model's context"),
    (["optim.schedule=linear"], "optim.schedule"),
    (["steps=0"], "steps"),
    (["model.d_model=8192", "model.n_layers=64", "model.n_heads=64", "model.n_kv_heads=64",
      "model.d_ff=32768"], "GiB"),
])
def test_nonsensical_config_refused_before_writing(data_dir, tmp_path, override, message):
    cfg = train_config.apply_overrides(train_config.from_dict(config_dict(data_dir)), override)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=message):
        pretrain.run(cfg, out, progress=False)
    assert not out.exists()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path):
    # A learning rate of 1e30 blows the parameters up on the first update with a non-zero rate
    # (the warmup starts at 0, so step 1 is harmless and checkpointed).
    cfg = train_config.from_dict(config_dict(
        data_dir, steps=12, checkpoint_every=1, eval_every=0, optim__lr=1e30,
        optim__warmup_steps=2))
    out = tmp_path / "out"
    with pytest.raises(pretrain.NonFiniteLossError, match=r"loss is (nan|inf) at step \d+.*last good"):
        pretrain.run(cfg, out, progress=False)
    last = checkpoint.manager(out, read_only=True).latest_step()
    bad = [r["step"] for r in metrics.read(out) if "loss" in r and not math.isfinite(r["loss"])]
    assert last is not None and bad and last < bad[0]
    _, params, _, _ = run_checkpoint.load_params(out)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_grad_accumulation_4x4_equals_batch_16(data_dir):
    full = train_config.from_dict(config_dict(data_dir, data__batch_size=16))
    accum = train_config.apply_overrides(full, ["data.grad_accum=4"])
    mesh = Mesh(np.array(jax.devices()[:2]).reshape(2, 1, 1), ("data", "fsdp", "tensor"),
                axis_types=(AxisType.Auto,) * 3)
    rng = np.random.default_rng(0)
    batches = [{"inputs": jnp.asarray(rng.integers(0, 512, (16, 32)), jnp.int32),
                "targets": jnp.asarray(rng.integers(0, 512, (16, 32)), jnp.int32)}
               for _ in range(2)]
    results = []
    for cfg in (full, accum):
        optimizer = optax.adamw(1e-3)
        abstract = state_lib.abstract_params(cfg.model, mesh)
        state = state_lib.fresh(state_lib.random_params(cfg.model, mesh, jax.random.key(0)),
                                optimizer, abstract, mesh)
        step = make_step(next_token_loss(cfg.model), optimizer,
                         state_lib.state_shardings(abstract, optimizer, mesh), mesh,
                         grad_accum=cfg.data.grad_accum, donate=False)
        losses = []
        for batch in batches:
            state, m = step(state, batch)
            losses.append(float(m["loss"]))
        results.append((losses, jax.device_get(state["params"])))
    (l_full, p_full), (l_acc, p_acc) = results
    np.testing.assert_allclose(l_acc, l_full, rtol=1e-5)
    # Adam divides by the gradient's scale, so float summation-order noise in a near-zero
    # gradient can move a parameter by a small fraction of the learning rate (1e-3).
    for a, b in zip(jax.tree.leaves(p_acc), jax.tree.leaves(p_full)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)


def test_schedules_warm_up_then_decay():
    o = train_config.OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    cosine = schedule(o, 100)
    assert float(cosine(0)) == 0.0 and float(cosine(10)) == pytest.approx(1.0)
    assert float(cosine(55)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5)  # half-way down
    assert float(cosine(100)) == pytest.approx(0.1)
    wsd = schedule(train_config.OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.0,
                                            schedule="wsd", decay_fraction=0.2), 100)
    assert float(wsd(5)) == pytest.approx(0.5)
    assert float(wsd(50)) == float(wsd(79)) == 1.0
    assert float(wsd(90)) == pytest.approx(0.5)
    assert float(wsd(100)) == pytest.approx(0.0)


def test_weight_decay_skips_norms_and_embedding_unless_asked():
    import model
    params = jax.eval_shape(lambda: model.init(model.preset("tiny"), jax.random.key(0)))
    mask = decay_mask(params, train_config.OptimConfig())
    assert not mask["embed"] and not mask["final_norm"] and not mask["layers"]["attn_norm"]
    assert mask["layers"]["wq"] and mask["layers"]["w_down"]
    everything = decay_mask(params, train_config.OptimConfig(decay_norms_and_embeddings=True))
    assert all(jax.tree.leaves(everything))


def test_overrides_reach_every_section():
    cfg = train_config.apply_overrides(train_config.load("demo"), [
        "steps=7", "model.n_layers=3", "data.batch_size=4", "optim.lr=1e-4", "mesh.fsdp=2"])
    assert (cfg.steps, cfg.model.n_layers, cfg.data.batch_size, cfg.optim.lr, cfg.mesh.fsdp) == (
        7, 3, 4, 1e-4, 2)
    with pytest.raises(ConfigError, match="no field"):
        train_config.apply_overrides(cfg, ["optim.learning_rate=1"])
    bench = train_config.load("bench").model
    assert (bench.n_layers, bench.d_model, bench.n_heads, bench.max_seq_len,
            bench.vocab_size) == (6, 384, 6, 256, 8192)
    assert train_config.load("bench").data.batch_size == 16
