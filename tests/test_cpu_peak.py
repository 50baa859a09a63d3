"""The CPU's peak FLOP/s from /proc/cpuinfo, against the vendors' published per-cycle figures."""

import pytest

from train.cpu_peak import derive


def cpuinfo(vendor, family, mhz, flags):
    return (f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\n"
            f"cpu MHz\t\t: {mhz}\nflags\t\t: {flags}\n\nprocessor\t: 1\n")


AVX2 = "fpu sse sse2 avx fma avx2"
AVX512 = AVX2 + " avx512f avx512bw avx512vl"

# (cpuinfo, dtype, flop/cycle/core): AVX2 2 x 256-bit FMA = 32 float32 flop/cycle (Zen 2/3,
# Haswell on); Zen 4 runs AVX-512 on 256-bit units (32); Zen 5 and Intel's AVX-512 server cores
# 2 x 512-bit (64); AVX512_BF16 doubles it for bf16; AMX: 512 bf16 multiply-adds a cycle.
CASES = [
    (cpuinfo("AuthenticAMD", 23, "2450.000", AVX2), "float32", 32),
    (cpuinfo("AuthenticAMD", 25, "2450.000", AVX512 + " avx512_bf16"), "float32", 32),
    (cpuinfo("AuthenticAMD", 25, "2450.000", AVX512 + " avx512_bf16"), "bfloat16", 64),
    (cpuinfo("AuthenticAMD", 26, "2450.000", AVX512 + " avx512_bf16"), "float32", 64),
    (cpuinfo("AuthenticAMD", 26, "2450.000", AVX512 + " avx512_bf16"), "bfloat16", 128),
    (cpuinfo("GenuineIntel", 6, "2450.000", AVX512 + " avx512_bf16 amx_bf16"), "float32", 64),
    (cpuinfo("GenuineIntel", 6, "2450.000", AVX512 + " avx512_bf16 amx_bf16"), "bfloat16", 1024),
    (cpuinfo("GenuineIntel", 6, "2450.000", AVX2), "bfloat16", 32),  # no bf16 instructions
]


@pytest.mark.parametrize("text,dtype,per_cycle", CASES)
def test_peak_is_cores_clock_and_width(text, dtype, per_cycle):
    peak = derive(text, dtype)
    assert peak.flops_per_core == pytest.approx(per_cycle * 2.45e9)
    assert f"{per_cycle} {dtype} flop/cycle" in peak.note and "2.45 GHz" in peak.note


def test_the_old_amd_figure_is_reproduced():
    """The fixed figure the project used before (2.45 GHz AVX2 AMD EPYC: 78.4 GFLOP/s)."""
    assert derive(CASES[0][0]).flops_per_core / 1e9 == pytest.approx(78.4)


def test_a_measured_clock_replaces_the_stated_one():
    text = cpuinfo("AuthenticAMD", 26, "2600.000", AVX512 + " avx512_bf16")
    peak = derive(text, "bfloat16", ghz=3.9)
    assert peak.flops_per_core == pytest.approx(128 * 3.9e9)
    assert "3.90 GHz (measured; /proc/cpuinfo says 2.60)" in peak.note


def test_the_peak_bounds_a_measured_matmul():
    """The clock is measured (a hypervisor's /proc/cpuinfo states the nominal one, below the
    boost): no float32 matmul on this machine may beat the peak derived from it."""
    import time

    import jax
    import jax.numpy as jnp

    from train.cpu_peak import host_peak, measured_clock_ghz

    ghz = measured_clock_ghz()
    assert ghz is not None and 0.8 < ghz < 7.0
    a = jax.random.normal(jax.random.key(0), (2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    peak, note = host_peak("float32")
    assert 2 * 2048**3 / best <= peak, note
