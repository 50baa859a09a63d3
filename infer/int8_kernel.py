"""int8-weight matrix products: small C++ kernels on x86 CPUs, XLA elsewhere.

    y_MO = matmul(x_MI, w_OI, scale_O)          # (x @ w.T) * scale, float32, w int8 [out, in]
    y_MO = matmul_dynamic(x_MI, w_OI, scale_O)  # the same with x quantised per row to int8

XLA:CPU converts an int8 dot operand to float32 in a separate pass before the dot, which makes
int8 decoding slower than float32 (measured: 30 [3072, 576] matrix-vector products take 10.7 ms
in float32 and ~100 ms with int8 weights). `kernels/int8_matmul.cc` converts each weight in
registers (AVX2 + FMA) and splits rows over XLA's intra-op threads. It is compiled with the
system C++ compiler on first use, cached by the hash of its source and flags, and registered
as an XLA FFI target for the CPU platform; on other platforms, on CPUs without AVX2/FMA, with
no compiler, or with TWOFILES_INT8_KERNEL=0, `matmul` lowers to the plain XLA expression
(`matmul_xla`), which computes the same thing.

`matmul_dynamic` is for prefill, which is bound by arithmetic rather than memory: it quantises
each row of x to int8 (symmetric, scale max|x[m, :]| / 127, "W8A8 dynamic" as in llama.cpp's
Q8 activations and torch's dynamic quantisation) and multiplies in integers, exact in int32,
through `kernels/int8_gemm.cc` (AVX2 vpmaddwd: twice float32's multiply-adds per instruction).
`matmul_dynamic_xla` computes the same integers in plain XLA; it is the fallback and the
reference. Each kernel is its own library, so one failing to build never disables the other.
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
import jax.numpy as jnp

SOURCE = Path(__file__).parent / "kernels" / "int8_matmul.cc"
TARGET = "twofiles_int8_matmul"
GEMM_SOURCE = Path(__file__).parent / "kernels" / "int8_gemm.cc"
GEMM_TARGET = "twofiles_int8_gemm_dynamic"
FLAGS = ["-O3", "-mavx2", "-mfma", "-std=c++17", "-shared", "-fPIC", "-w"]


def matmul_xla(x_MI: jax.Array, w_OI: jax.Array, scale_O: jax.Array) -> jax.Array:
    """(x @ w.T) * scale in plain XLA (the reference and the fallback)."""
    y_MO = jnp.einsum("mi,oi->mo", x_MI, w_OI.astype(jnp.float32),
                      preferred_element_type=jnp.float32)
    return y_MO * scale_O


def matmul(x_MI: jax.Array, w_OI: jax.Array, scale_O: jax.Array) -> jax.Array:
    """(x @ w.T) * scale for float32 x [M, I], int8 w [O, I], float32 scale [O]."""
    if not kernel_available():
        return matmul_xla(x_MI, w_OI, scale_O)
    x_MI = x_MI.astype(jnp.float32)
    return jax.lax.platform_dependent(x_MI, w_OI, scale_O, cpu=_matmul_ffi, default=matmul_xla)


def _matmul_ffi(x_MI, w_OI, scale_O):
    out = jax.ShapeDtypeStruct((x_MI.shape[0], w_OI.shape[0]), jnp.float32)
    return jax.ffi.ffi_call(TARGET, out)(x_MI, w_OI, scale_O)


def quantize_rows_dynamic(x_MI: jax.Array) -> tuple[jax.Array, jax.Array]:
    """int8 rows and their float32 scales (max|x[m, :]| / 127; 0 for an all-zero row).

    Multiplies by 127 / max and rounds half to even: the very float operations of the C++
    kernel, so both give the same integers.
    """
    amax_M1 = jnp.max(jnp.abs(x_MI), axis=1, keepdims=True)
    inv_M1 = jnp.where(amax_M1 > 0, 127.0 / jnp.where(amax_M1 > 0, amax_M1, 1.0), 0.0)
    q_MI = jnp.clip(jnp.round(x_MI * inv_M1), -127, 127).astype(jnp.int8)
    return q_MI, (amax_M1 / 127.0)[:, 0]


def matmul_dynamic_xla(x_MI: jax.Array, w_OI: jax.Array, scale_O: jax.Array) -> jax.Array:
    """`matmul_dynamic` in plain XLA (the reference and the fallback): int32 dot, then scales."""
    q_MI, scale_M = quantize_rows_dynamic(x_MI.astype(jnp.float32))
    acc_MO = jnp.einsum("mi,oi->mo", q_MI, w_OI, preferred_element_type=jnp.int32)
    return acc_MO.astype(jnp.float32) * scale_M[:, None] * scale_O


def matmul_dynamic(x_MI: jax.Array, w_OI: jax.Array, scale_O: jax.Array) -> jax.Array:
    """x @ (w * scale).T with x quantised per row to int8: float32 x [M, I], int8 w [O, I]."""
    if not gemm_kernel_available():
        return matmul_dynamic_xla(x_MI, w_OI, scale_O)
    x_MI = x_MI.astype(jnp.float32)
    return jax.lax.platform_dependent(x_MI, w_OI, scale_O, cpu=_matmul_dynamic_ffi,
                                      default=matmul_dynamic_xla)


def _matmul_dynamic_ffi(x_MI, w_OI, scale_O):
    out = jax.ShapeDtypeStruct((x_MI.shape[0], w_OI.shape[0]), jnp.float32)
    return jax.ffi.ffi_call(GEMM_TARGET, out)(x_MI, w_OI, scale_O)


def kernel_available() -> bool:
    """Whether the C++ kernel of `matmul` is built and registered (building it on first call)."""
    return _load() is not None


def gemm_kernel_available() -> bool:
    """Whether the C++ kernel of `matmul_dynamic` is built and registered."""
    return _load_gemm() is not None


def _cpu_supported() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


@functools.cache
def _load():
    """Builds (or finds in the cache), loads and registers `matmul`'s kernel; None if not."""
    return _load_kernel(SOURCE, TARGET, "TwofilesInt8Matmul", "int8 decoding")


@functools.cache
def _load_gemm():
    """The same for `matmul_dynamic`'s kernel."""
    return _load_kernel(GEMM_SOURCE, GEMM_TARGET, "TwofilesInt8GemmDynamic", "int8 prefill")


def _load_kernel(source: Path, target: str, symbol: str, used_by: str):
    if os.environ.get("TWOFILES_INT8_KERNEL", "1") == "0" or not _cpu_supported():
        return None
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        return None
    try:
        lib_path = _build(compiler, source)
        lib = ctypes.cdll.LoadLibrary(str(lib_path))
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                    platform="cpu")
    except (OSError, AttributeError, subprocess.CalledProcessError) as e:
        compiler_said = (getattr(e, "stderr", None) or b"").decode(errors="replace")[-2000:]
        warnings.warn(f"int8 kernel {source.name} unavailable ({e} {compiler_said}); {used_by} "
                      "falls back to XLA (slower). Set TWOFILES_INT8_KERNEL=0 to silence this.")
        return None
    return lib


def _build(compiler: str, source: Path = SOURCE) -> Path:
    """A kernel's shared library, compiled once per source, flags and jax version."""
    include = jax.ffi.include_dir()
    digest = hashlib.sha256(source.read_bytes() + " ".join(FLAGS).encode()
                            + jax.__version__.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "twofiles"
    lib_path = cache / f"{source.stem}-{digest}.so"
    if lib_path.exists():
        return lib_path
    cache.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: concurrent processes never load a partial file.
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        tmp_lib = Path(tmp) / lib_path.name
        subprocess.run([compiler, *FLAGS, "-I", include, str(source), "-o", str(tmp_lib)],
                       check=True, capture_output=True)
        os.replace(tmp_lib, lib_path)
    return lib_path
