"""Building and registering the project's C++ CPU kernels (infer/kernels/*.cc) as XLA FFI targets.

Each kernel is one source file compiled with the system C++ compiler on first use into its own
shared library, cached in ~/.cache/twofiles by the hash of its source, the shared headers
(kernels/*.h), the flags and the jax version (so an edit or a jax upgrade rebuilds it), and
registered for the CPU platform. A kernel is unavailable (and its caller uses its XLA
expression instead) on non-x86 machines, on CPUs without AVX2, FMA and F16C, without a
compiler, if its build fails (with a warning), or with TWOFILES_CPU_KERNELS=0.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax

KERNELS = Path(__file__).parent
FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-std=c++17", "-shared", "-fPIC", "-w"]


def available(source: str, target: str, symbol: str) -> bool:
    """Whether kernels/`source`'s handler `symbol` is built and registered as FFI `target`
    (building it on the first call for that source)."""
    return _load(source, target, symbol) is not None


def library(source: str, target: str, symbol: str):
    """The ctypes handle of kernels/`source`'s library once `symbol` is registered as FFI
    `target` (None where unavailable), for a kernel's own plain-C queries."""
    return _load(source, target, symbol)


def plain_library(source: str):
    """The ctypes handle of kernels/`source`, a library of plain C functions (no FFI handler),
    built on first use like the kernels; None where it cannot be built or loaded."""
    return _load_plain(source)


def enabled() -> bool:
    """Whether this machine may use the kernels: an x86 CPU with AVX2, FMA and F16C, and
    TWOFILES_CPU_KERNELS not 0 (a compiler is still needed to build them)."""
    return os.environ.get("TWOFILES_CPU_KERNELS", "1") != "0" and _cpu_supported()


@functools.cache
def _cpu_supported() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return all(f" {flag}" in flags for flag in ("avx2", "fma", "f16c"))


@functools.cache
def _load(source: str, target: str, symbol: str):
    try:
        lib = _open(source)
        if lib is not None:
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                        platform="cpu")
    except (OSError, AttributeError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        warnings.warn(f"CPU kernel {source} unavailable ({e}; {detail.decode()[-500:]}); its "
                      "caller falls back to XLA (slower). TWOFILES_CPU_KERNELS=0 silences this.")
        return None
    return lib


@functools.cache
def _load_plain(source: str):
    try:
        return _open(source)
    except (OSError, subprocess.CalledProcessError):
        return None


def _open(source: str):
    """kernels/`source` built (once) and loaded; None where kernels are off or no compiler is
    found. Raises what a failed build or load raised."""
    if not enabled():
        return None
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        return None
    return ctypes.cdll.LoadLibrary(str(_build(compiler, KERNELS / source)))


def _build(compiler: str, source: Path) -> Path:
    """The kernel's shared library, compiled once per source, flags and jax version."""
    include = jax.ffi.include_dir()
    headers = b"".join(h.read_bytes() for h in sorted(KERNELS.glob("*.h")))  # shared code
    digest = hashlib.sha256(source.read_bytes() + headers + " ".join(FLAGS).encode()
                            + jax.__version__.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "twofiles"
    lib_path = cache / f"{source.stem}-{digest}.so"
    if lib_path.exists():
        return lib_path
    cache.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: concurrent processes never load a partial file.
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        tmp_lib = Path(tmp) / lib_path.name
        command = [compiler, *FLAGS, "-I", include, "-I", str(KERNELS), str(source)]
        subprocess.run([*command, "-o", str(tmp_lib)], check=True, capture_output=True)
        os.replace(tmp_lib, lib_path)
    # Builds of older sources or jax versions are never loaded again (a process that has one
    # loaded keeps its mapping on Linux).
    for old in cache.glob(f"{source.stem}-*.so"):
        if old != lib_path:
            old.unlink(missing_ok=True)
    return lib_path
