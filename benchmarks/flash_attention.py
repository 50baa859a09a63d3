"""The training attention kernels alone, at the bench step's shape: forward, and forward + backward.

    python benchmarks/flash_attention.py [--batch 16] [--seq 256] [--heads 6] [--kv-heads 6]
                                         [--head-dim 64] [--rounds 10] [--layers 6]

One layer's causal attention (infer/kernels/flash_attention.py) as jitted functions of q, k, v:
the float32 kernel, the bf16 one (AMX tiles or vdpbf16ps, as the CPU has), and model.forward's
own XLA attention in float32 and bf16. The variants are timed interleaved round-robin in one
process (a burst of load from elsewhere hits all alike); the table gives the best and median
ms of a call and, for `--layers` layers, the whole step's share. The FLOPs counted are the
causal half's products: 2 per tile pair forward, 5 more backward (what both kernels do; XLA's
einsums compute the whole square).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def variants(cfg32, cfg16):
    """{name: attention(q, k, v) -> out} of the kernels and model.forward's XLA attention."""
    from infer.kernels import flash_attention as fa
    from model import transformer
    from model.ops import AttentionContext

    def xla(cfg):
        def f(q, k, v):
            T = q.shape[1]
            ctx = AttentionContext(jnp.tril(jnp.ones((T, T), bool))[None], 0)
            return transformer._attention(q, k, v, None, ctx, cfg)[0].astype(jnp.float32)
        return f

    out = {"flash fp32": lambda q, k, v: fa.attention(q, k, v),
           "flash bf16": lambda q, k, v: fa.attention(q, k, v, dtype="bfloat16"),
           "xla fp32": xla(cfg32), "xla bf16": xla(cfg16)}
    if fa.bf16_engine() is None:
        out["flash bf16"] = None  # the float32 kernel again: nothing to compare
    return {n: f for n, f in out.items() if f is not None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=6)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--layers", type=int, default=6, help="layers per step, for the step's share")
    args = p.parse_args(argv)
    import model

    B, T, H, G, K = args.batch, args.seq, args.heads, args.kv_heads, args.head_dim
    cfg32 = model.ModelConfig(n_heads=H, n_kv_heads=G, d_model=H * K, compute_dtype="float32")
    cfg16 = model.ModelConfig(n_heads=H, n_kv_heads=G, d_model=H * K, compute_dtype="bfloat16")
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(B, T, n, K)), jnp.float32) for n in (H, G, G))
    w = jnp.asarray(rng.normal(size=(B, T, H, K)), jnp.float32)
    calls = {}
    for name, f in variants(cfg32, cfg16).items():
        calls[name, "fwd"] = jax.jit(f)
        calls[name, "fwd+bwd"] = jax.jit(jax.grad(lambda q, k, v, f=f: jnp.sum(f(q, k, v) * w),
                                                  argnums=(0, 1, 2)))
    times = {key: [] for key in calls}
    for fn in calls.values():  # compile and warm every variant first
        jax.block_until_ready(fn(q, k, v))
    load0 = os.getloadavg()[0]
    for _ in range(args.rounds):
        for key, fn in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(q, k, v))
            times[key].append(time.perf_counter() - t)
    pairs = B * H * (T // 64) * (T // 64 + 1) / 2
    tile_flops = 2 * 64 * 64 * K
    print(f"B={B} T={T} H={H} G={G} K={K}, {args.rounds} rounds; load average "
          f"{load0:.2f} -> {os.getloadavg()[0]:.2f}; jax {jax.__version__}")
    print(f"| {'variant':<11} | {'pass':<7} | best ms | median ms | GFLOP/s | x{args.layers} layers ms |")
    print("|---|---|---:|---:|---:|---:|")
    for (name, kind), ts in times.items():
        best, med = min(ts) * 1e3, statistics.median(ts) * 1e3
        flops = pairs * tile_flops * (2 if kind == "fwd" else 7)
        print(f"| {name:<11} | {kind:<7} | {best:7.2f} | {med:9.2f} | {flops / best / 1e6:7.0f} "
              f"| {best * args.layers:14.1f} |")


if __name__ == "__main__":
    main()
