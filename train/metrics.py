"""What a run reports: metrics.jsonl, TensorBoard events, and the MFU against a stated peak.

Only process 0 writes. On resume, lines past the restored step are dropped so the file reads as
one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import jax

# Peak FLOP/s per device, dense matmuls. MFU is reported against these (or
# TrainConfig.peak_flops when set).
#  - CPU: the whole host is one JAX device; its peak is derived from /proc/cpuinfo and a
#    measured clock (train/cpu_peak.py: vector width, FMA units, bf16 dot support, clock).
#  - GPU/TPU: vendor bfloat16 dense peaks.
ACCELERATOR_PEAKS = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12,
}


def peak_flops_per_device(override: float = 0.0, dtype: str = "float32") -> tuple[float, str]:
    """(peak FLOP/s of one device for `dtype` matmuls, how it was obtained)."""
    if override > 0:
        return override, "config peak_flops"
    device = jax.devices()[0]
    if device.platform == "cpu":
        from train.cpu_peak import host_peak

        peak, note = host_peak(dtype)
        # Simulated devices (xla_force_host_platform_device_count) share the same cores.
        return peak / jax.local_device_count(), note
    kind = device.device_kind
    for name, peak in ACCELERATOR_PEAKS.items():
        if name.lower() in kind.lower():
            return peak, f"{kind}: {peak / 1e12:.0f} TFLOP/s bf16 dense"
    return math.nan, f"{kind}: no stated peak (set peak_flops)"


class MetricsWriter:
    """Appends JSON lines to OUT/metrics.jsonl and the same scalars to TensorBoard (OUT/tb)."""

    def __init__(self, out_dir: str | os.PathLike, resume_step: int | None = None):
        self.enabled = jax.process_index() == 0
        self.path = Path(out_dir) / "metrics.jsonl"
        self._tb = None
        if not self.enabled:
            return
        truncate_after(self.path, resume_step or 0)
        self._file = open(self.path, "a")
        self._tb = _tensorboard_writer(Path(out_dir) / "tb")

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _tensorboard_writer(folder: Path):
    """A tensorboardX SummaryWriter, or None when tensorboardX is missing (metrics.jsonl is the
    record). tensorboardX imports torch only to accept torch tensors, which costs seconds at
    every start; it is kept out unless something else already loaded it."""
    import sys
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError, which it handles
    try:
        from tensorboardX import SummaryWriter
        return SummaryWriter(str(folder))
    except ImportError:
        return None
    finally:
        if blocked:
            del sys.modules["torch"]


def truncate_after(path: Path, step: int) -> None:
    """Drops lines with step > `step` (a resumed run rewrites them), atomically."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):
            continue  # a line cut by a kill mid-write
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)


def read(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl (or of OUT/metrics.jsonl given the run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
