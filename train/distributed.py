"""Joining a multi-process run: JAX's own runtime (`jax.distributed.initialize`).

On TPU pods and under Slurm JAX finds the coordinator itself; elsewhere (several processes on one
host, a hand-made cluster) pass --coordinator HOST:PORT --num-processes N --process-id I. Must run
before anything touches a JAX device.
"""

from __future__ import annotations

import os

import jax


def _auto_detectable() -> bool:
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    tpu_pod = bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))
    return slurm or tpu_pod


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Starts the multi-process runtime when asked or detected; returns whether it did."""
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError("multi-process needs all of --coordinator HOST:PORT, --num-processes N "
                         "and --process-id I (or none of them, for auto-detection on TPU/Slurm)")
    if all(given):
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process-id {process_id} must be in [0, {num_processes})")
        if num_processes == 1:
            return False
        if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
            # CPU devices of different processes talk through gloo collectives.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
        return True
    if _auto_detectable():
        jax.distributed.initialize()
        return True
    return False
