"""Building the C++ CPU kernels (infer/kernels/cpu_kernels.py): one cached library per source version."""

import shutil

import pytest

from infer.kernels import cpu_kernels


@pytest.mark.skipif(not (cpu_kernels.enabled() and shutil.which("g++")),
                    reason="no AVX2/FMA/F16C x86 CPU, no g++ or kernels switched off")
def test_build_is_cached_and_replaces_older_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = tmp_path / "twofiles"
    cache.mkdir()
    stale = cache / "attend_cache-0123456789abcdef.so"  # an older source's build
    stale.write_bytes(b"old")
    other = cache / "int8_gemm-0123456789abcdef.so"  # another kernel's: not this build's
    other.write_bytes(b"old")
    source = cpu_kernels.KERNELS / "attend_cache.cc"
    lib = cpu_kernels._build(shutil.which("g++"), source)
    assert lib.exists() and lib.parent == cache and lib.name.startswith("attend_cache-")
    assert not stale.exists() and other.exists()
    mtime = lib.stat().st_mtime_ns
    assert cpu_kernels._build(shutil.which("g++"), source) == lib  # cached: not rebuilt
    assert lib.stat().st_mtime_ns == mtime
