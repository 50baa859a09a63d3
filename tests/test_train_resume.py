"""Runs of the CLI in subprocesses: a run killed with SIGKILL, or stopped with Ctrl-C, and rerun
ends bitwise identical to one never interrupted; two processes with one CPU device each match one
process with two."""

import json
import os
import re
import signal
import socket
import subprocess
import time

import jax
import numpy as np
import pytest

from tests.train_helpers import (REPO, cli_env, config_dict, losses, prepare_small_demo,
                                 pretrain_cmd, run_cli, write_config)
from infer.formats import run_checkpoint


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data_dir = prepare_small_demo(root / "data")
    config = write_config(root / "tiny.json", config_dict(data_dir))
    return root, config


@pytest.fixture(scope="module")
def reference(setup):
    """The uninterrupted run: one process, two devices."""
    root, config = setup
    out = root / "reference"
    run_cli(config, out, devices=2)
    return out


def _wait_for_step(out, step: int, proc, timeout: float = 240) -> int:
    """Polls metrics.jsonl until a training line at or past `step` appears; returns it."""
    deadline = time.time() + timeout
    path = out / "metrics.jsonl"
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {step}: {proc.stderr.read()[-3000:]}")
        if path.exists():
            steps = [json.loads(line)["step"] for line in path.read_text().splitlines()
                     if line.endswith("}")]
            if steps and max(steps) >= step:
                return max(steps)
        time.sleep(0.02)
    raise AssertionError(f"no step {step} within {timeout}s")


def _kill_at(config, out, step: int) -> int:
    proc = subprocess.Popen(pretrain_cmd(config, out), env=cli_env(2), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen = _wait_for_step(out, step, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return seen


def test_resume_after_sigkill_is_bitwise_identical(setup, reference):
    root, config = setup
    out = root / "killed"
    # Killed twice: right as the step-30 checkpoint starts writing (asynchronously), then between
    # checkpoints; each rerun of the same command resumes from the latest complete checkpoint.
    killed_at = [_kill_at(config, out, 30),
                 _kill_at(config, out, 36)]
    assert all(k < 40 for k in killed_at), killed_at
    assert not (out / "summary.json").exists()
    run_cli(config, out, devices=2)

    _, params_ref, _, _ = run_checkpoint.load_params(reference)
    _, params_res, _, _ = run_checkpoint.load_params(out)
    leaves_ref, leaves_res = jax.tree.leaves(params_ref), jax.tree.leaves(params_res)
    assert len(leaves_ref) == len(leaves_res)
    for a, b in zip(leaves_ref, leaves_res):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # The resumed metrics read as one run: every step once, with the reference's losses.
    assert losses(out) == losses(reference)
    assert json.loads((out / "summary.json").read_text())["val_loss"] == json.loads(
        (reference / "summary.json").read_text())["val_loss"]


def _assert_same_params(a, b) -> None:
    _, params_a, _, _ = run_checkpoint.load_params(a)
    _, params_b, _, _ = run_checkpoint.load_params(b)
    leaves_a, leaves_b = jax.tree.leaves(params_a), jax.tree.leaves(params_b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_ctrl_c_stops_cleanly_saves_and_rerun_resumes_bitwise(setup, reference):
    root, config = setup
    out = root / "ctrl-c"
    proc = subprocess.Popen(pretrain_cmd(config, out), env=cli_env(2), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen = _wait_for_step(out, 23, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted at step (\d+); rerun the same command to resume from "
                         r"step (\d+)", last)
    assert match, err[-3000:]
    stopped, resume = int(match.group(1)), int(match.group(2))
    # The step it stopped at was saved (not only the last checkpoint_every=10 one): no work lost.
    assert seen <= stopped == resume < 40
    from train import checkpoint
    assert checkpoint.manager(out, read_only=True).latest_step() == resume

    rerun = run_cli(config, out, devices=2)
    assert f"resuming {out} from step {resume}" in rerun.stdout
    _assert_same_params(reference, out)
    assert losses(out) == losses(reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_with_two_devices(setup, reference):
    root, config = setup
    out = root / "two-processes"
    port = _free_port()
    procs = [subprocess.Popen(
        pretrain_cmd(config, out, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                     "--process-id", str(i)),
        env=cli_env(1), cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-4000:]
    ref, two = losses(reference), losses(out)
    assert sorted(two) == sorted(ref) == list(range(1, 41))
    np.testing.assert_allclose([two[s] for s in sorted(two)], [ref[s] for s in sorted(ref)],
                               rtol=1e-5, atol=1e-5)
    val = [json.loads((d / "summary.json").read_text())["val_loss"] for d in (reference, out)]
    assert val[0] == pytest.approx(val[1], rel=1e-5)
