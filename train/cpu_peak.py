"""The peak FLOP/s of this host's CPU, derived from what it reports, for an MFU that is true.

peak = cores x clock x FMA units x lanes x 2 (a fused multiply-add is two flops), where
  - lanes: float32 values in the FMA datapath: 16 for 512-bit (AVX-512), 8 for 256-bit (AVX2),
    4 for SSE. AMD's Zen 4 (family 0x19) runs AVX-512 through 256-bit units, so it counts 8;
    Zen 5 (family 0x1a) and Intel's AVX-512 server cores have full 512-bit units.
  - FMA units: two per core, as on every x86 server core since Haswell and Zen (some low-end
    Intel parts have one 512-bit unit: set `peak_flops` there).
  - bfloat16: with AVX512_BF16 a dot instruction does two bf16 products per float32 lane
    (twice float32); with AMX (amx_bf16) a core's tile unit does 512 bf16 multiply-adds a
    cycle (one 16 x 16 x 32 tdpbf16ps every 16 cycles; a register-only loop of them ran 3370
    GFLOP/s on one core of a Xeon, 94% of it at 3.5 GHz).
  - clock: measured (infer/kernels/cpu_clock.cc: a chain of dependent multiplies; the
    fastest of several short runs, since preemption only slows one). Under a hypervisor
    /proc/cpuinfo's "cpu MHz" is the nominal clock: a 2-core Zen 5 guest said 2.60 GHz and
    measured 3.64-4.02 across runs, and its single float32 and bf16 matmuls ran 23% and 30%
    above the peak the nominal clock gives. /proc/cpuinfo's figure is the fallback where no compiler is found.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os


@dataclasses.dataclass(frozen=True)
class CpuPeak:
    flops_per_core: float
    note: str


def _cpuinfo(text: str) -> dict:
    """The first processor's fields of /proc/cpuinfo."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def measured_clock_ghz(tries: int = 20) -> float | None:
    """The core clock now, in GHz (None where the helper cannot be built)."""
    from infer.kernels import cpu_kernels

    lib = cpu_kernels.plain_library("cpu_clock.cc")
    if lib is None:
        return None
    clock = lib.twofiles_clock_ghz
    clock.restype, clock.argtypes = ctypes.c_double, [ctypes.c_int64]
    return max(clock(10_000) for _ in range(tries))  # ~0.2 ms each


def derive(cpuinfo: str, dtype: str = "float32", ghz: float | None = None) -> CpuPeak:
    """The per-core peak for `dtype` matmuls from the text of /proc/cpuinfo, at clock `ghz`
    (measured) or else the clock /proc/cpuinfo states."""
    info = _cpuinfo(cpuinfo)
    flags = set(info.get("flags", "").split())
    stated = float(info.get("cpu MHz", "0") or 0) / 1e3
    clock = (f"{ghz:.2f} GHz (measured; /proc/cpuinfo says {stated:.2f})" if ghz
             else f"{stated:.2f} GHz")
    ghz = ghz or stated
    amd_family = int(info.get("cpu family", "0")) if info.get("vendor_id") == "AuthenticAMD" else 0
    if "avx512f" in flags and amd_family != 0x19:
        lanes, isa = 16, "AVX-512"
    elif "avx512f" in flags or ("avx2" in flags and "fma" in flags):
        lanes, isa = 8, "AVX-512 on 256-bit units" if "avx512f" in flags else "AVX2"
    else:
        lanes, isa = 4, "SSE"
    per_cycle = 2 * lanes * 2  # 2 FMA units x lanes x 2 flops
    how = f"2 FMA x {lanes} float32 lanes ({isa})"
    if dtype == "bfloat16" and "amx_bf16" in flags:
        per_cycle, how = 512 * 2, "AMX: 512 bf16 multiply-adds"
    elif dtype == "bfloat16" and "avx512_bf16" in flags:
        per_cycle, how = per_cycle * 2, f"{how} x 2 (AVX512_BF16 dot)"
    return CpuPeak(per_cycle * ghz * 1e9, f"{per_cycle} {dtype} flop/cycle ({how}) x {clock}")


def host_peak(dtype: str = "float32") -> tuple[float, str]:
    """(peak FLOP/s of all this host's cores, how it was derived)."""
    cores = os.cpu_count() or 1
    try:
        with open("/proc/cpuinfo") as f:
            peak = derive(f.read(), dtype, _clock_ghz())
    except OSError:
        return float("nan"), "cpu: no /proc/cpuinfo (set peak_flops)"
    if not peak.flops_per_core:
        return float("nan"), "cpu: no clock in /proc/cpuinfo (set peak_flops)"
    return peak.flops_per_core * cores, (f"cpu: {cores} cores x {peak.flops_per_core / 1e9:.1f} "
                                         f"GFLOP/s = {peak.note}")


@functools.cache
def _clock_ghz() -> float | None:
    return measured_clock_ghz()  # once a process: every MFU of a run against the same peak
