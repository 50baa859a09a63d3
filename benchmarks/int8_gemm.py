"""Throughput of the prefill matrix products of SmolLM2-135M: float32 vs int8 routes, one run.

    python benchmarks/int8_gemm.py                 # M = 512 and 8, all four shapes
    python benchmarks/int8_gemm.py --rows 512 --repeats 20 --torch

Rows (each [M, I] x [I, O], GOP/s counts 2*M*I*O operations; best of --repeats calls after a
warm-up, every call jitted, XLA's intra-op threads as in prefill):
  f32 dot          XLA's float32 jnp.dot (the prefill today; the 1.0x of the ratio column)
  s8xs8->s32 dot   XLA's integer dot of int8 operands (what matmul_dynamic_xla lowers to)
  matmul           int8_kernel.matmul: float32 x times int8 weights, converted in registers
  dynamic b32      int8_kernel.matmul_dynamic (the default): x quantised to int8 in blocks of 32
                   inputs, int32 products per block, added in float32
  dynamic b64      the same with blocks of 64 (fewer float folds)
  torch fbgemm     torch's dynamically quantised Linear (--torch; the peer on this CPU)
"""

from __future__ import annotations

import argparse
import functools
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from infer.kernels import int8_kernel  # noqa: E402

# SmolLM2-135M per layer: (name, I, O) of x [M, I] @ W [I, O].
SHAPES = [("qkv", 576, 960), ("wo", 576, 576), ("gate_up", 576, 3072), ("down", 1536, 576)]


def best_seconds(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def routes(M: int, I: int, O: int, use_torch: bool):
    """(name, function, arguments) per route, on the same random operands."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((M, I)).astype(np.float32)
    w_f = rng.standard_normal((I, O)).astype(np.float32)
    w_q = rng.integers(-127, 128, (O, I)).astype(np.int8)
    scale = (rng.random(O) * 0.01).astype(np.float32)
    x_q = rng.integers(-127, 128, (M, I)).astype(np.int8)
    s8_dot = jax.jit(lambda a, b: jnp.einsum("mi,oi->mo", a, b,
                                             preferred_element_type=jnp.int32))
    out = [("f32 dot", jax.jit(jnp.dot), (x, w_f)),
           ("s8xs8->s32 dot", s8_dot, (x_q, w_q)),
           ("matmul", jax.jit(int8_kernel.matmul), (x, w_q, scale)),
           ("dynamic b32", jax.jit(int8_kernel.matmul_dynamic), (x, w_q, scale)),
           ("dynamic b64", jax.jit(functools.partial(int8_kernel.matmul_dynamic, block=64)),
            (x, w_q, scale))]
    if use_torch:
        out.append(("torch fbgemm", *torch_dynamic_linear(x, w_f)))
    return out


def torch_dynamic_linear(x: np.ndarray, w_IO: np.ndarray):
    import torch

    torch.set_num_threads(os.cpu_count())
    lin = torch.nn.Linear(*w_IO.shape, bias=False)
    lin.weight.data = torch.from_numpy(w_IO.T.copy())
    qlin = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear},
                                                  dtype=torch.qint8)

    def run(t):
        with torch.no_grad():
            return qlin(t)
    return run, (torch.from_numpy(x),)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[512, 8])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--torch", action="store_true", help="add torch's fbgemm dynamic int8 Linear")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; kernels: matmul_dynamic "
          f"{int8_kernel.gemm_kernel_available()}, matmul {int8_kernel.kernel_available()}")
    print(f"{'shape':<22} {'route':<16} {'ms':>8} {'GOP/s':>7} {'x f32':>6}")
    for M in args.rows:
        for name, I, O in SHAPES:
            base = None
            for route, fn, fn_args in routes(M, I, O, args.torch):
                t = best_seconds(fn, fn_args, args.repeats)
                base = base or t
                shape = f"{name} {M}x{I}x{O}"
                print(f"{shape:<22} {route:<16} {t * 1e3:8.3f} {2 * M * I * O / t / 1e9:7.1f} "
                      f"{base / t:6.2f}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
