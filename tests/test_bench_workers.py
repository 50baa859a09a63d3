"""The training race's worker processes (benchmarks/train_throughput.py): each framework steps
in a process of its own, under its own malloc settings, and the race's numbers are the same
steps as in one process."""

import pytest

from benchmarks import train_throughput as tt
from train import host_malloc

ARGS = ["--config", "tiny", "--rounds", "2", "--warmup", "1",
        "--variants", "torch-eager,twofiles-fp32"]


@pytest.mark.slow
def test_workers_step_the_same_training_as_one_process():
    """Same weights and tokens: each variant's losses, step after step, match between the two
    modes, and the two frameworks agree at step 0 (the steps are real and comparable)."""
    by_mode = {}
    for extra in ([], ["--one-process"]):
        report = tt.main(ARGS + extra)
        by_mode[bool(extra)] = {r["variant"]: r["losses"] for r in report["rows"]}
    for name, losses in by_mode[False].items():
        assert len(losses) == 3  # warmup + rounds
        assert losses == pytest.approx(by_mode[True][name], rel=1e-5), name
    assert by_mode[False]["torch-eager"][0] == pytest.approx(
        by_mode[False]["twofiles-fp32"][0], abs=1e-4)


@pytest.mark.skipif(not host_malloc.wanted(), reason="glibc's tunables: Linux with glibc only")
def test_each_framework_steps_under_its_own_malloc_tunables():
    """The twofiles worker runs as `python -m train` does (one arena), torch's with two, as
    each worker reports its own environment. (Not /proc/PID/environ: glibc cuts the variable
    short there while parsing it.)"""
    args = tt.parse_args(ARGS)
    workers, variants = tt.start_workers(args)
    tt.stop_workers(workers)
    assert len({v.worker.pid for v in variants}) == 2
    seen = {v.name: v.tunables for v in variants}
    assert seen["twofiles-fp32"] == ":".join(host_malloc.TUNABLES)
    assert seen["torch-eager"] == ":".join(host_malloc.SHARED_TUNABLES)
