"""Aggregate decode speed of continuous batching (infer.runtime.slots) on SmolLM2-135M.

    python benchmarks/continuous.py                       # 1, 4 and 16 requests, float32 and int8
    python benchmarks/continuous.py --requests 16 --weights int8 --new-tokens 32   # quick

N greedy requests with different prompts (lengths spread around --prompt-tokens) are submitted
at once to a SlotEngine of --slots slots (default: the most requests asked for, as the server
sizes its batch, so one request runs in an engine of 16 rows); they are prefilled in chunks
between decode steps and decode together. Reported: decode tokens/s over all rows (every token
after a row's first, over the time from the last first token to the end), the whole run's
tokens/s, and the mean time to each request's first token. Compilation is excluded: the same
run goes once untimed first (compiling the buckets it needs).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

TEXT = ("The history of the printing press begins with movable type in East Asia and continues "
        "with Gutenberg's press in Mainz around 1440. Printing spread quickly across Europe. ")


def run(m, weights: str, n: int, prompt_tokens: int, new: int, chunk: int, n_slots: int
        ) -> dict:
    from infer.runtime import engine, slots

    base = m.tokenizer.encode_ordinary(TEXT * (1 + prompt_tokens // 20))
    eng = slots.SlotEngine(engine.decode_params(m, weights), m.config, slots=n_slots,
                           max_len=2 * prompt_tokens + new, chunk=chunk)
    prompts = [base[i:i + prompt_tokens // 2 + (i * 37) % prompt_tokens] for i in range(n)]
    slots.generate(eng, prompts, max_new_tokens=new)  # compiles the buckets this run uses
    first: dict[int, float] = {}
    t0 = time.perf_counter()
    reqs = [eng.submit(slots.Request(p, max_new_tokens=new, row=i, on_token=lambda e: first
                                     .setdefault(e.row, time.perf_counter())))
            for i, p in enumerate(prompts)]
    eng.run_until_idle()
    end = time.perf_counter()
    last_first = max(first.values())
    tokens = sum(len(r.result.token_ids) for r in reqs)
    return {"decode": n * (new - 1) / max(end - last_first, 1e-9) if new > 1 else 0.0,
            "total": tokens / (end - t0), "ttft": sum(first.values()) / n - t0,
            "prompt": sum(map(len, prompts)) / n}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--requests", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--slots", type=int, default=None,
                   help="the engine's rows (default: the most --requests)")
    p.add_argument("--weights", nargs="+", default=["float32", "int8"],
                   choices=["float32", "int8"])
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--chunk", type=int, default=64)
    args = p.parse_args(argv)

    import infer

    m = infer.load(args.model)
    n_slots = args.slots or max(args.requests)
    if n_slots < max(args.requests):
        raise SystemExit(f"--slots {n_slots} is fewer than --requests {max(args.requests)}")
    print(f"{args.model}: {n_slots} slots, prompts ~{args.prompt_tokens} tokens, "
          f"{args.new_tokens} new, chunk {args.chunk}, load avg {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores", flush=True)
    head = f"{'weights':<9}{'requests':>9}{'prompt':>8}{'decode tok/s':>14}{'all tok/s':>11}{'ttft s':>8}"
    rows = []
    for weights in args.weights:
        for n in args.requests:
            r = run(m, weights, n, args.prompt_tokens, args.new_tokens, args.chunk, n_slots)
            rows.append(f"{weights:<9}{n:>9}{r['prompt']:>8.0f}{r['decode']:>14.1f}"
                        f"{r['total']:>11.1f}{r['ttft']:>8.2f}")
            print(rows[-1], flush=True)
    print("\n" + head + "\n" + "-" * len(head) + "\n" + "\n".join(rows))
    print(f"load avg {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
