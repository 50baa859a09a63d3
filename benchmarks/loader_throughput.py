"""How fast train.loader hands out batches (default 16 x 256 on the demo corpus).

    python benchmarks/loader_throughput.py [--data DIR] [--batch 16] [--seq-len 256] [--mesh]

Without --data it trains the demo tokenizer (vocab 8192) and prepares the demo corpus under
.cache/bench-data (reused on later runs). Prints one JSON line: batches/s and tokens/s for the
host side alone (reading and shuffling windows) and for whole global jax.Arrays (with --mesh:
sharded over every device), so it can be set against the step time of the training benchmark;
then how long a (simulated, --step-ms) training step waits for its next batch with prefetching.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout


def demo_data(root: Path) -> Path:
    from train import corpus, prepare, tokenizer

    tok = root / "tokenizer.json"
    if not tok.exists():
        tokenizer.save(tok, tokenizer.train_tokenizer(corpus.open_source("demo").documents(),
                                                      8192)[0])
    prepare.prepare("demo", tok, root / "demo", progress=False)
    return root / "demo"


def rate(fn, steps: int) -> float:
    fn(0)  # warm up (first device transfer, page cache)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        fn(step)
    return steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="prepared data folder (default: the demo corpus)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--mesh", action="store_true", help="shard batches over all devices")
    p.add_argument("--step-ms", type=float, default=20.0,
                   help="simulated training step (GIL released, like a JAX step) to measure "
                        "how long the step then waits for the next batch")
    args = p.parse_args()

    import jax

    from train import loader

    data = Path(args.data) if args.data else demo_data(Path(".cache/bench-data"))
    mesh = None
    if args.mesh:
        from model import sharding
        mesh = sharding.make_mesh(data=-1)
    ld = loader.Loader(data, "train", seq_len=args.seq_len, global_batch=args.batch, mesh=mesh)

    host = rate(ld.local_batch_at, args.steps)

    def device(_):
        jax.block_until_ready(next(ld))

    full = rate(device, args.steps)

    # With prefetching, batches are built while the step runs; what is left is the wait.
    waited, n_wait = 0.0, max(20, min(args.steps, int(5000 / max(args.step_ms, 1))))
    for _ in range(n_wait):
        time.sleep(args.step_ms / 1000)
        start = time.perf_counter()
        jax.block_until_ready(next(ld))
        waited += time.perf_counter() - start
    tokens = args.batch * args.seq_len
    print(json.dumps({
        "batch": args.batch, "seq_len": args.seq_len, "devices": jax.device_count() if mesh else 1,
        "windows_per_epoch": ld.windows_per_epoch,
        "host_batches_per_s": round(host, 1), "host_tokens_per_s": round(host * tokens),
        "batches_per_s": round(full, 1), "tokens_per_s": round(full * tokens),
        "ms_per_batch": round(1000 / full, 3), "simulated_step_ms": args.step_ms,
        "wait_ms_per_step": round(1000 * waited / n_wait, 3)}))


if __name__ == "__main__":
    main()
