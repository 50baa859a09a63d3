"""Shared helpers for the training tests: a small prepared corpus and CLI runs in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The tiny model the training tests train (about 130k parameters); seq 32, batch 8.
TINY = {
    "model": {"preset": "tiny", "vocab_size": 512, "max_seq_len": 32},
    "data": {"batch_size": 8, "eval_batches": 2},
    "optim": {"lr": 1e-2, "warmup_steps": 4},
    "steps": 40, "eval_every": 20, "checkpoint_every": 10, "log_every": 1, "seed": 0,
}


def prepare_small_demo(folder: Path, vocab_size: int = 512, max_docs: int = 6) -> Path:
    """Shakespeare demo corpus, first few plays, tokenized with a tokenizer trained on them."""
    from train import corpus, prepare, tokenizer

    docs = list(corpus.limited(corpus.open_source("demo").documents(), max_docs))
    ranks, pattern = tokenizer.train_tokenizer(docs, vocab_size)
    tok = folder / "tokenizer.json"
    tokenizer.save(tok, ranks, pattern)
    out = folder / "tokens"
    prepare.prepare("demo", tok, out, max_docs=max_docs, val_fraction=0.2, progress=False)
    return out


def config_dict(data_dir: Path, **changes) -> dict:
    d = json.loads(json.dumps(TINY))
    d["data"]["source"] = str(data_dir)
    for key, value in changes.items():
        head, _, rest = key.partition("__")
        if rest:
            d.setdefault(head, {})[rest] = value
        else:
            d[key] = value
    return d


def write_config(path: Path, d: dict) -> Path:
    path.write_text(json.dumps(d))
    return path


def cli_env(devices: int, cache_dir: Path | None = None) -> dict:
    """Environment of a CLI run on `devices` simulated CPU devices. The persistent compilation
    cache (the suite's, from conftest, unless `cache_dir` is given) saves recompiling the same
    step programs in every run."""
    env = dict(os.environ)
    if cache_dir is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pretrain_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "train", "pretrain", "--config", str(config), "--out", str(out),
            "--no-progress", *extra]


def run_cli(config: Path, out: Path, *extra: str, devices: int = 2, check: bool = True,
            cache_dir: Path | None = None):
    proc = subprocess.run(pretrain_cmd(config, out, *extra), env=cli_env(devices, cache_dir),
                          cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"pretrain failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def losses(run_dir: Path) -> dict[int, float]:
    from train import metrics
    return {r["step"]: r["loss"] for r in metrics.read(run_dir) if "loss" in r}


def one_device_mesh():
    """A (data, fsdp, tensor) mesh of the first device alone: in-process step tests."""
    import jax
    import numpy as np
    from jax.sharding import AxisType, Mesh

    return Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"),
                axis_types=(AxisType.Auto,) * 3)


def kill_after_checkpoint_then_rerun(cmd: list[str], out: Path, step: int, devices: int = 8,
                                     timeout: float = 240):
    """Runs `cmd` until its run directory `out` holds a checkpoint at or past `step`, SIGKILLs
    it, checks it left no summary, reruns `cmd` to the end and returns the finished rerun (its
    stdout says it resumed)."""
    import signal
    import time

    proc = subprocess.Popen(cmd, env=cli_env(devices), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            done = [int(p.name) for p in (out / "checkpoints").glob("[0-9]*")
                    if p.name.isdigit()] if (out / "checkpoints").exists() else []
            if any(s >= step for s in done):
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "summary.json").exists()
    rerun = subprocess.run(cmd, env=cli_env(devices), cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming" in rerun.stdout
    return rerun


def export_tiny_base(folder: Path, texts: list[str], vocab_size: int = 400) -> Path:
    """A `tiny` twofiles model with random weights (key 0), its tokenizer trained on `texts`,
    exported as the two files into folder/base: the base the stage tests fine-tune."""
    import jax

    import model
    from infer.formats.export import export
    from infer.load_model import Model, twofiles_fields
    from train import tokenizer

    enc = tokenizer.encoding(*tokenizer.train_tokenizer(texts, vocab_size))
    cfg = model.apply_overrides(model.preset("tiny"), [f"vocab_size={enc.n_vocab}",
                                                       "max_seq_len=64"])
    base = Model(source="tiny", kind="twofiles",
                 **twofiles_fields(cfg, model.init(cfg, jax.random.key(0)), enc))
    export(base, "twofiles", folder / "base")
    return folder / "base"
